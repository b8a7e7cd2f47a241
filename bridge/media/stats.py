"""Per-stream reception statistics: packets, octets, loss and interarrival jitter (RFC 3550 A).

Loss follows A.1/A.3: the extended highest sequence number (with wrap-around cycles) against
the count actually received, so duplicates and reordering do not read as loss. A jump larger
than ``MAX_DROPOUT`` is believed only when the next packet confirms it (the sender restarted);
otherwise it is a stray packet and is ignored. Jitter is A.8's running estimate, in timestamp
units, of the variation of transit time, smoothed by 1/16.

A new SSRC (the far leg was re-pointed) starts a fresh sequence space; what was counted for the
old source is kept in the totals, so a call's figures cover every source it heard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.media.portable import rebuilt
from bridge.media.rtp import ReportBlock

MAX_DROPOUT = 3000
MAX_MISORDER = 100
SEQ_MOD = 1 << 16
_TS_MOD = float(1 << 32)
_TS_HALF = float(1 << 31)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamStatsSnapshot:
    packets_received: int
    bytes_received: int
    packets_expected: int
    packets_lost: int
    jitter_ms: float
    packets_sent: int
    bytes_sent: int

    @property
    def loss_fraction(self) -> float:
        return self.packets_lost / self.packets_expected if self.packets_expected else 0.0


_STREAM_STATE = (
    "_bad_sequence",
    "_base_sequence",
    "_cycles",
    "_done_expected",
    "_done_received",
    "_expected_prior",
    "_max_sequence",
    "_received",
    "_received_prior",
    "_ssrc",
    "_transit",
    "bytes_received",
    "bytes_sent",
    "jitter",
    "packets_received",
    "packets_sent",
)
"""What a :class:`StreamStats` carries besides its clock rate."""


class StreamStats:
    """Reception state of one stream; ``now`` is seconds on any monotonic clock."""

    __slots__ = ("clock_rate", *_STREAM_STATE)

    def __init__(self, clock_rate: int = 8000) -> None:
        self.clock_rate = clock_rate
        self.packets_received = 0
        self.bytes_received = 0
        self.packets_sent = 0
        self.bytes_sent = 0
        self.jitter = 0.0
        """A.8 interarrival jitter in timestamp units."""
        self._ssrc: int | None = None
        self._base_sequence = 0
        self._max_sequence = 0
        self._cycles = 0
        self._bad_sequence = SEQ_MOD + 1
        self._received = 0
        self._transit: float | None = None
        self._done_expected = 0
        self._done_received = 0
        self._expected_prior = 0
        self._received_prior = 0

    def __reduce__(self) -> tuple[Any, ...]:
        """Moves with its leg to another media worker (:mod:`bridge.media.portable`)."""
        state = {name: getattr(self, name) for name in _STREAM_STATE}
        return (rebuilt, (StreamStats, {"clock_rate": self.clock_rate}, state))

    def on_packet(
        self,
        ssrc: int,
        sequence: int,
        timestamp: int,
        size: int,
        now: float,
        timed: bool = True,
    ) -> bool:
        """Account one received packet; return ``False`` if it was judged a stray.

        ``timed`` is false for packets whose timestamp is not a sampling instant of the media
        clock (RFC 4733 events carry the event's start time), so they stay out of the jitter.
        """
        self.packets_received += 1
        self.bytes_received += size
        if ssrc != self._ssrc:
            self._start_source(ssrc, sequence)
        else:
            delta = (sequence - self._max_sequence) & 0xFFFF
            if 0 < delta < MAX_DROPOUT:  # the common case, in order: A.1's first branch
                if sequence < self._max_sequence:
                    self._cycles += SEQ_MOD
                self._max_sequence = sequence
            elif not self._update_sequence(sequence):
                return False
        self._received += 1
        if timed:
            # A.8, inline: this runs for every packet the relay receives.
            transit = now * self.clock_rate - timestamp
            previous = self._transit
            self._transit = transit
            if previous is not None:
                d = abs(transit - previous)
                if d >= _TS_HALF:
                    # Timestamps wrap at 2**32: fold the difference into a signed 32-bit range.
                    d = abs((transit - previous + _TS_HALF) % _TS_MOD - _TS_HALF)
                self.jitter += (d - self.jitter) * 0.0625
        return True

    def on_sent(self, size: int) -> None:
        self.packets_sent += 1
        self.bytes_sent += size

    @property
    def expected(self) -> int:
        return self._done_expected + self._expected_current()

    @property
    def lost(self) -> int:
        return max(0, self.expected - self._done_received - self._received)

    def snapshot(self) -> StreamStatsSnapshot:
        return StreamStatsSnapshot(
            packets_received=self.packets_received,
            bytes_received=self.bytes_received,
            packets_expected=self.expected,
            packets_lost=self.lost,
            jitter_ms=self.jitter * 1000.0 / self.clock_rate,
            packets_sent=self.packets_sent,
            bytes_sent=self.bytes_sent,
        )

    def reception_report(
        self, *, last_sr: int = 0, delay_since_last_sr: int = 0
    ) -> ReportBlock | None:
        """The RTCP report block about the current source (§6.4.1, A.3); None before any packet.

        Each call closes a reporting interval: ``fraction_lost`` covers the packets since the
        previous call, which is what the sender of the stream wants to know.
        """
        if self._ssrc is None:
            return None
        expected = self._expected_current()
        expected_interval = expected - self._expected_prior
        lost_interval = expected_interval - (self._received - self._received_prior)
        self._expected_prior = expected
        self._received_prior = self._received
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        return ReportBlock(
            ssrc=self._ssrc,
            fraction_lost=fraction,
            cumulative_lost=max(-0x800000, min(0x7FFFFF, expected - self._received)),
            highest_sequence=(self._cycles + self._max_sequence) & 0xFFFFFFFF,
            jitter=int(self.jitter),
            last_sr=last_sr,
            delay_since_last_sr=delay_since_last_sr,
        )

    def _expected_current(self) -> int:
        if self._ssrc is None:
            return 0
        return self._cycles + self._max_sequence - self._base_sequence + 1

    def _start_source(self, ssrc: int, sequence: int) -> None:
        self._done_expected += self._expected_current()
        self._done_received += self._received
        self._ssrc = ssrc
        self._init_sequence(sequence)
        self._transit = None

    def _init_sequence(self, sequence: int) -> None:
        self._base_sequence = sequence
        self._max_sequence = sequence
        self._bad_sequence = SEQ_MOD + 1
        self._cycles = 0
        self._received = 0
        self._expected_prior = 0
        self._received_prior = 0

    def _update_sequence(self, sequence: int) -> bool:
        delta = (sequence - self._max_sequence) % SEQ_MOD
        if delta < MAX_DROPOUT:
            if sequence < self._max_sequence:
                self._cycles += SEQ_MOD
            self._max_sequence = sequence
        elif delta <= SEQ_MOD - MAX_MISORDER:
            if sequence != self._bad_sequence:
                self._bad_sequence = (sequence + 1) % SEQ_MOD
                return False
            # Two sequential packets after a big jump: the source restarted (A.1).
            self._done_expected += self._expected_current()
            self._done_received += self._received
            self._init_sequence(sequence)
            self._transit = None
        return True
