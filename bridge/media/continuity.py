"""One continuous outgoing RTP stream toward a phone, whoever is really talking.

Theory of operation. The bridge re-points legs: a caller hears the agent, then hold music, then
the 110 desk. Each of those sources has its own SSRC, sequence space and timestamp clock; a phone
that sees them switch abruptly may treat the new packets as stale or as a different stream and
go silent. So everything sent to one phone goes out under one SSRC, and each packet's sequence
number and timestamp are the source's own shifted by offsets fixed when that source started
(RFC 3550 §5.1, §8.2 discussion of SSRC changes; RFC 7667 §3.2.1.2 on media switching):

- within a source, gaps and reordering are kept as they came, so the phone's loss and jitter
  figures stay truthful;
- at a switch (a new source key, an explicit :meth:`StreamContinuity.switch`, or the same source
  jumping by more than ``MAX_DROPOUT``) the next sequence number follows the last one sent and
  the timestamp advances by the wall-clock time since the last packet (at least one frame), and
  the marker bit is set so the phone's jitter buffer resynchronises at once.

The relay routes only the current feed's packets here, so a source that comes back is simply
another switch.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from bridge.media.portable import rebuilt

MAX_DROPOUT = 3000
MAX_MISORDER = 100
_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32
_SEQ_HALF = 1 << 15


_CONTINUITY_STATE = (
    "_clock_rate",
    "_current",
    "_explicit_switch",
    "_frame",
    "_last_in_sequence",
    "_last_out_sequence",
    "_last_out_timestamp",
    "_last_sent_at",
    "_sequence_offset",
    "_timestamp_offset",
    "switches",
)
"""What a :class:`StreamContinuity` carries besides its SSRC."""


class StreamContinuity:
    """Rewrites (source, sequence, timestamp) into the phone's single outgoing stream."""

    __slots__ = ("ssrc", *_CONTINUITY_STATE)

    def __init__(
        self,
        *,
        ssrc: int,
        sequence: int,
        timestamp: int,
        clock_rate: int = 8000,
        frame_samples: int = 160,
    ) -> None:
        self.ssrc = ssrc
        self.switches = 0
        self._clock_rate = clock_rate
        self._frame = frame_samples
        self._current: Hashable | None = None
        self._explicit_switch = False
        # The "last" values are those of the packet one before the first one we send.
        self._last_out_sequence = (sequence - 1) % _SEQ_MOD
        self._last_out_timestamp = (timestamp - frame_samples) % _TS_MOD
        self._last_sent_at: float | None = None
        self._last_in_sequence = 0
        self._sequence_offset = 0
        self._timestamp_offset = 0

    def __reduce__(self) -> tuple[Any, ...]:
        """Moves with its leg to another media worker (:mod:`bridge.media.portable`): the phone
        keeps seeing one SSRC with continuous sequence numbers."""
        arguments = {"ssrc": self.ssrc, "sequence": 0, "timestamp": 0}
        state = {name: getattr(self, name) for name in _CONTINUITY_STATE}
        return (rebuilt, (StreamContinuity, arguments, state))

    def switch(self) -> None:
        """The feed toward the phone changed: the next packet starts a new source."""
        self._explicit_switch = True

    def rewrite(
        self, source: Hashable, sequence: int, timestamp: int, now: float
    ) -> tuple[int, int, bool]:
        """Return ``(sequence, timestamp, switched)`` to send.

        ``switched`` means this packet starts a new source: send it with the marker bit.
        """
        switched = False
        if self._explicit_switch or source != self._current:
            self._start(source, sequence, timestamp, now)
            switched = True
        else:
            delta = (sequence - self._last_in_sequence) % _SEQ_MOD
            if MAX_DROPOUT <= delta <= _SEQ_MOD - MAX_MISORDER:
                self._start(source, sequence, timestamp, now)
                switched = True
        out_sequence = (sequence + self._sequence_offset) % _SEQ_MOD
        out_timestamp = (timestamp + self._timestamp_offset) % _TS_MOD
        if switched or (out_sequence - self._last_out_sequence) % _SEQ_MOD < _SEQ_HALF:
            self._last_in_sequence = sequence
            self._last_out_sequence = out_sequence
            self._last_out_timestamp = out_timestamp
            self._last_sent_at = now
        return out_sequence, out_timestamp, switched

    def insert(self) -> int:
        """Take the next sequence number for a packet the bridge adds to the stream itself.

        Used for RFC 4733 events played into a leg while its source keeps talking: the
        source's later packets shift up by one, so the sequence stays gapless.
        """
        self._last_out_sequence = (self._last_out_sequence + 1) % _SEQ_MOD
        self._sequence_offset = (self._sequence_offset + 1) % _SEQ_MOD
        return self._last_out_sequence

    def timestamp_at(self, now: float) -> int:
        """The outgoing timestamp that corresponds to ``now`` on the current timeline."""
        if self._last_sent_at is None:
            return (self._last_out_timestamp + self._frame) % _TS_MOD
        elapsed = round((now - self._last_sent_at) * self._clock_rate)
        return (self._last_out_timestamp + max(0, elapsed)) % _TS_MOD

    def _start(self, source: Hashable, sequence: int, timestamp: int, now: float) -> None:
        advance = self._frame
        if self._last_sent_at is not None:
            advance = max(advance, round((now - self._last_sent_at) * self._clock_rate))
        out_sequence = (self._last_out_sequence + 1) % _SEQ_MOD
        out_timestamp = (self._last_out_timestamp + advance) % _TS_MOD
        self._sequence_offset = (out_sequence - sequence) % _SEQ_MOD
        self._timestamp_offset = (out_timestamp - timestamp) % _TS_MOD
        if source != self._current or self._explicit_switch:
            self._current = source
            self.switches += 1
        self._explicit_switch = False
