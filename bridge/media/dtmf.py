"""DTMF: RFC 4733 telephone-events, their detection as digits, and SIP INFO digit bodies.

Theory of operation. A key press reaches us as a run of RTP event packets that all carry the
RTP timestamp of the moment the tone began (RFC 4733 §2.5.1): the first with the marker bit,
updates with a growing duration, then the final packet with the E bit, sent three times
because it is the one that must not be lost (§2.5.1.4). Packets can also be repeated inside
RFC 2198 redundancy blocks, and a tone longer than the 16-bit duration field continues in a new
segment with a new timestamp and no marker (§2.5.1.3). So a digit is identified by
(SSRC, start timestamp, event code): the detector reports it at the first packet that shows it,
whichever that is, and remembers recent identities so that every later copy is silent. A new
timestamp for the same still-sounding event without a marker is a long-tone continuation, not a
second press.

SIP INFO carries digits as ``application/dtmf-relay`` (``Signal=5`` / ``Duration=160``) or
``application/dtmf`` (the bare digit); both are parsed here so the engine feeds one digit stream
to the dial plan whatever way a phone signals.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any

from bridge.media.portable import rebuilt
from bridge.sip.errors import RemoteProtocolError

EVENT_DIGITS = "0123456789*#ABCD"
"""Event codes 0-15 (RFC 4733 §3.2)."""
DIGIT_EVENTS = {digit: code for code, digit in enumerate(EVENT_DIGITS)}
_EVENT = struct.Struct("!BBH")
_REMEMBERED_EVENTS = 64
_LONG_EVENT_SEGMENT = 0xFFFF - 8000


@dataclass(frozen=True, slots=True, kw_only=True)
class TelephoneEvent:
    event: int
    end: bool = False
    volume: int = 10
    """Power level in -dBm0, 0-63 (§2.3.4)."""
    duration: int = 0
    """Duration so far, in timestamp units (§2.3.5)."""

    def to_bytes(self) -> bytes:
        if not 0 <= self.event <= 255 or not 0 <= self.volume <= 63:
            raise ValueError("event or volume out of range")
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


def parse_events(payload: bytes) -> list[tuple[int, TelephoneEvent]]:
    """Parse a telephone-event payload into ``(timestamp offset, event)`` pairs.

    Several consecutive events may share one packet (§2.5.1.5); each one's start is the packet
    timestamp plus the durations of the events before it. Raises ``ValueError`` when the
    payload is not a whole number of 4-octet events.
    """
    if not payload or len(payload) % 4:
        raise ValueError("telephone-event payload must be a non-empty multiple of 4 octets")
    events = []
    offset = 0
    for start in range(0, len(payload), 4):
        code, flags, duration = _EVENT.unpack_from(payload, start)
        event = TelephoneEvent(
            event=code, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration
        )
        events.append((offset, event))
        offset += duration
    return events


@dataclass(frozen=True, slots=True, kw_only=True)
class RedundantBlock:
    """One block of an RFC 2198 redundant payload; the primary block has offset 0."""

    payload_type: int
    timestamp_offset: int
    data: bytes


def parse_red(payload: bytes) -> list[RedundantBlock]:
    """Split an RFC 2198 payload (§3) into its blocks, oldest first, primary last."""
    headers: list[tuple[int, int, int]] = []
    at = 0
    while True:
        if at >= len(payload):
            raise ValueError("RED header list runs past the payload")
        first = payload[at]
        if not first & 0x80:
            headers.append((first & 0x7F, 0, -1))
            at += 1
            break
        if at + 4 > len(payload):
            raise ValueError("RED block header truncated")
        word = struct.unpack_from("!I", payload, at)[0]
        headers.append(((word >> 24) & 0x7F, (word >> 10) & 0x3FFF, word & 0x3FF))
        at += 4
    blocks = []
    for payload_type, offset, length in headers:
        end = len(payload) if length < 0 else at + length
        if end > len(payload):
            raise ValueError("RED block runs past the payload")
        blocks.append(
            RedundantBlock(payload_type=payload_type, timestamp_offset=offset, data=payload[at:end])
        )
        at = end
    return blocks


def serialize_red(blocks: list[RedundantBlock]) -> bytes:
    if not blocks or blocks[-1].timestamp_offset != 0:
        raise ValueError("the last RED block is the primary and has offset 0")
    header = b"".join(
        struct.pack(
            "!I",
            0x80000000 | (b.payload_type << 24) | (b.timestamp_offset << 10) | len(b.data),
        )
        for b in blocks[:-1]
    )
    return header + bytes((blocks[-1].payload_type,)) + b"".join(b.data for b in blocks)


@dataclass(frozen=True, slots=True, kw_only=True)
class DtmfDigit:
    digit: str
    ssrc: int
    rtp_timestamp: int
    """RTP timestamp at which the tone began: the identity shared by every copy of it."""
    detected_at: float
    """``now`` of the packet that first showed the digit."""

    def __reduce__(self) -> tuple[Any, ...]:
        """Reported by a media worker to the bridge (:mod:`bridge.media.portable`)."""
        arguments = {field.name: getattr(self, field.name) for field in fields(self)}
        return (rebuilt, (DtmfDigit, arguments, {}))


class DtmfDetector:
    """Turns telephone-event packets into each key press exactly once."""

    def __init__(self) -> None:
        self._seen: OrderedDict[tuple[int, int, int], None] = OrderedDict()
        # Per SSRC: (event code, start timestamp, longest duration seen, ended) of the latest.
        self._latest: dict[int, tuple[int, int, int, bool]] = {}

    def on_event_payload(
        self, *, ssrc: int, timestamp: int, payload: bytes, marker: bool, now: float
    ) -> list[DtmfDigit]:
        """Feed one telephone-event packet; return the digits it starts (often none)."""
        digits = []
        for offset, event in parse_events(payload):
            start = (timestamp + offset) & 0xFFFFFFFF
            digit = self._on_event(ssrc, start, event, marker and offset == 0, now)
            if digit is not None:
                digits.append(digit)
        return digits

    def on_red_payload(
        self, *, ssrc: int, timestamp: int, payload: bytes, event_type: int, now: float
    ) -> list[DtmfDigit]:
        """Feed an RFC 2198 packet whose blocks may hold telephone-events of type ``event_type``."""
        digits = []
        for block in parse_red(payload):
            if block.payload_type != event_type:
                continue
            digits += self.on_event_payload(
                ssrc=ssrc,
                timestamp=(timestamp - block.timestamp_offset) & 0xFFFFFFFF,
                payload=block.data,
                marker=False,
                now=now,
            )
        return digits

    def _on_event(
        self, ssrc: int, start: int, event: TelephoneEvent, marker: bool, now: float
    ) -> DtmfDigit | None:
        key = (ssrc, start, event.event)
        latest = self._latest.get(ssrc)
        if key in self._seen:
            if latest is not None and latest[:2] == (event.event, start):
                duration = max(latest[2], event.duration)
                self._latest[ssrc] = (event.event, start, duration, latest[3] or event.end)
            return None
        # A segment of a long tone follows one whose duration field ran up to its limit.
        continuation = (
            latest is not None
            and not marker
            and latest[0] == event.event
            and not latest[3]
            and latest[2] >= _LONG_EVENT_SEGMENT
            and 0 < (start - latest[1]) & 0xFFFFFFFF <= 0x10000
        )
        self._seen[key] = None
        if len(self._seen) > _REMEMBERED_EVENTS:
            self._seen.popitem(last=False)
        self._latest[ssrc] = (event.event, start, event.duration, event.end)
        if continuation or event.event >= len(EVENT_DIGITS):
            return None
        return DtmfDigit(
            digit=EVENT_DIGITS[event.event], ssrc=ssrc, rtp_timestamp=start, detected_at=now
        )


def event_packets(digit: str, *, duration: int = 800, step: int = 160) -> list[TelephoneEvent]:
    """The event payloads a sender emits for one key press (§2.5.1): updates, then 3 ends.

    ``duration`` and ``step`` are in timestamp units (800 = 100 ms at 8 kHz, one per 20 ms).
    """
    code = DIGIT_EVENTS[digit.upper()]
    updates = [
        TelephoneEvent(event=code, duration=min(d, duration)) for d in range(step, duration, step)
    ]
    end = TelephoneEvent(event=code, end=True, duration=duration)
    return [*updates, end, end, end]


@dataclass(frozen=True, slots=True, kw_only=True)
class InfoDigit:
    digit: str
    duration_ms: int | None = None


def _digit_from_signal(signal: str) -> str:
    signal = signal.strip().upper()
    if signal in DIGIT_EVENTS:
        return signal
    if signal.isdigit() and int(signal) < len(EVENT_DIGITS):
        # Some phones send the RFC 4733 event code (10 for *, 11 for #) instead of the key.
        return EVENT_DIGITS[int(signal)]
    raise RemoteProtocolError(f"not a DTMF signal: {signal!r}")


def parse_info_dtmf(content_type: str, body: str) -> InfoDigit:
    """Parse the body of a SIP INFO carrying one DTMF digit.

    Raises :class:`RemoteProtocolError` with 415 for another content type and 400 for a body
    that does not name a digit, so the engine can answer the INFO with it.
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/dtmf":
        return InfoDigit(digit=_digit_from_signal(body))
    if media_type != "application/dtmf-relay":
        raise RemoteProtocolError(
            f"unsupported INFO body {media_type!r}", status=415, reason="Unsupported Media Type"
        )
    fields: dict[str, str] = {}
    for line in body.replace("\r\n", "\n").split("\n"):
        if "=" in line:
            name, _, value = line.partition("=")
            fields[name.strip().lower()] = value.strip()
    if "signal" not in fields:
        raise RemoteProtocolError("dtmf-relay body has no Signal line")
    duration = fields.get("duration")
    duration_ms = None
    if duration is not None:
        if not duration.isdigit():
            raise RemoteProtocolError(f"bad dtmf-relay Duration {duration!r}")
        duration_ms = int(duration)
    return InfoDigit(digit=_digit_from_signal(fields["signal"]), duration_ms=duration_ms)


def format_info_dtmf(digit: str, duration_ms: int = 160) -> tuple[str, str]:
    """``(content type, body)`` of an ``application/dtmf-relay`` INFO for one digit."""
    if digit.upper() not in DIGIT_EVENTS:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return "application/dtmf-relay", f"Signal={digit.upper()}\r\nDuration={duration_ms}\r\n"
