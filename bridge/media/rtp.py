"""RTP and RTCP packets: parse and serialise (RFC 3550 §5, §6.4).

Two layers. :class:`RtpPacket` is the full model (CSRC list, header extension, padding) used
where a packet is built or inspected at leisure. The relay's hot path instead reads the fixed
12-byte header with one ``struct`` call (:func:`peek_rtp`) and finds the payload with
:func:`payload_bounds`, because building a dataclass per packet at 50,000 packets/s costs more
than the whole forward does.

RTCP is parsed only as far as statistics need it: sender and receiver reports with their report
blocks (§6.4); every other packet type of a compound packet is kept as opaque bytes so that a
compound packet still round-trips.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_VERSION = 2
RTP_HEADER_SIZE = 12
MAX_SEQUENCE = 0x10000
MAX_TIMESTAMP = 0x100000000

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204

_FIXED_HEADER = struct.Struct("!BBHII")
_EXTENSION_HEADER = struct.Struct("!HH")
_RTCP_HEADER = struct.Struct("!BBH")
_SENDER_INFO = struct.Struct("!IIIII")
_REPORT_BLOCK = struct.Struct("!IIIIII")


class MalformedPacketError(ValueError):
    """The bytes are not a well-formed RTP/RTCP packet; the relay drops and counts them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpExtension:
    """A header extension (§5.3.1): a profile-defined 16-bit tag and whole 32-bit words."""

    profile: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    payload: bytes = b""
    padding: int = 0
    """Padding octets after the payload, the count octet included (§5.1, P bit); 0 = none."""

    def to_bytes(self) -> bytes:
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} out of range")
        if len(self.csrc) > 15:
            raise ValueError("at most 15 CSRC identifiers fit the CC field")
        if not 0 <= self.padding <= 255:
            raise ValueError("padding must fit one octet")
        first = (
            (RTP_VERSION << 6)
            | (0x20 if self.padding else 0)
            | (0x10 if self.extension is not None else 0)
            | len(self.csrc)
        )
        second = (0x80 if self.marker else 0) | self.payload_type
        parts = [
            _FIXED_HEADER.pack(
                first,
                second,
                self.sequence % MAX_SEQUENCE,
                self.timestamp % MAX_TIMESTAMP,
                self.ssrc,
            )
        ]
        parts.extend(struct.pack("!I", c) for c in self.csrc)
        if self.extension is not None:
            data = self.extension.data
            if len(data) % 4:
                raise ValueError("header extension data must be whole 32-bit words")
            parts.append(_EXTENSION_HEADER.pack(self.extension.profile, len(data) // 4))
            parts.append(data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)


def parse_rtp(data: bytes) -> RtpPacket:
    start, end = payload_bounds(data)
    first, second, sequence, timestamp, ssrc = _FIXED_HEADER.unpack_from(data)
    csrc_count = first & 0x0F
    csrc = struct.unpack_from(f"!{csrc_count}I", data, RTP_HEADER_SIZE)
    extension = None
    if first & 0x10:
        offset = RTP_HEADER_SIZE + 4 * csrc_count
        profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
        extension = RtpExtension(
            profile=profile, data=bytes(data[offset + 4 : offset + 4 + 4 * words])
        )
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        marker=bool(second & 0x80),
        csrc=csrc,
        extension=extension,
        payload=bytes(data[start:end]),
        padding=len(data) - end,
    )


def peek_rtp(data: bytes) -> tuple[int, bool, int, int, int]:
    """Return ``(payload_type, marker, sequence, timestamp, ssrc)`` of a plausible RTP packet.

    Checks only what the fixed header can tell (size and version); the relay calls
    :func:`payload_bounds` afterwards only when it needs the payload.
    """
    if len(data) < RTP_HEADER_SIZE:
        raise MalformedPacketError("shorter than the RTP fixed header")
    first, second, sequence, timestamp, ssrc = _FIXED_HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise MalformedPacketError("not RTP version 2")
    return second & 0x7F, bool(second & 0x80), sequence, timestamp, ssrc


def payload_bounds(data: bytes) -> tuple[int, int]:
    """Return ``(start, end)`` of the payload, after CSRCs and extension, before padding."""
    size = len(data)
    if size < RTP_HEADER_SIZE:
        raise MalformedPacketError("shorter than the RTP fixed header")
    first = data[0]
    if first >> 6 != RTP_VERSION:
        raise MalformedPacketError("not RTP version 2")
    start = RTP_HEADER_SIZE + 4 * (first & 0x0F)
    if first & 0x10:
        if start + 4 > size:
            raise MalformedPacketError("header extension truncated")
        start += 4 + 4 * ((data[start + 2] << 8) | data[start + 3])
    end = size
    if first & 0x20:
        if size == 0 or data[-1] == 0:
            raise MalformedPacketError("padding count of zero")
        end -= data[-1]
    if start > end:
        raise MalformedPacketError("header, extension and padding overrun the packet")
    return start, end


def is_rtcp(data: bytes) -> bool:
    """Tell RTCP from RTP on a shared port by the second octet (RFC 5761 §4)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportBlock:
    """One reception report (§6.4.1): what a receiver saw of the source ``ssrc``."""

    ssrc: int
    fraction_lost: int
    """Lost fraction since the previous report, in 1/256 units."""
    cumulative_lost: int
    highest_sequence: int
    jitter: int
    """Interarrival jitter in timestamp units (§6.4.1, computed as in §A.8)."""
    last_sr: int
    delay_since_last_sr: int

    def to_bytes(self) -> bytes:
        lost = self.cumulative_lost & 0xFFFFFF
        return _REPORT_BLOCK.pack(
            self.ssrc,
            (self.fraction_lost << 24) | lost,
            self.highest_sequence,
            self.jitter,
            self.last_sr,
            self.delay_since_last_sr,
        )

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, lost_word, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        cumulative = lost_word & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 0x1000000
        return cls(
            ssrc=ssrc,
            fraction_lost=lost_word >> 24,
            cumulative_lost=cumulative,
            highest_sequence=highest,
            jitter=jitter,
            last_sr=lsr,
            delay_since_last_sr=dlsr,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int
    """64-bit NTP time: seconds since 1900 in the high word, fraction in the low word."""
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class OtherRtcp:
    """SDES, BYE, APP or an unknown type: kept whole so a compound packet round-trips."""

    packet_type: int
    count: int
    body: bytes


RtcpPacket = SenderReport | ReceiverReport | OtherRtcp


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Parse a compound RTCP packet (§6.1) into its parts."""
    packets: list[RtcpPacket] = []
    offset = 0
    if len(data) < 4:
        raise MalformedPacketError("shorter than an RTCP header")
    while offset < len(data):
        if offset + 4 > len(data):
            raise MalformedPacketError("trailing bytes after the last RTCP packet")
        first, packet_type, words = _RTCP_HEADER.unpack_from(data, offset)
        if first >> 6 != RTP_VERSION:
            raise MalformedPacketError("not RTCP version 2")
        end = offset + 4 * (words + 1)
        if end > len(data):
            raise MalformedPacketError("RTCP length field overruns the datagram")
        count = first & 0x1F
        body_end = end
        if first & 0x20:
            pad = data[end - 1]
            if pad == 0 or pad > end - offset - 4:
                raise MalformedPacketError("bad RTCP padding")
            body_end -= pad
        packets.append(_parse_one_rtcp(data, offset + 4, body_end, packet_type, count))
        offset = end
    return packets


def _parse_one_rtcp(data: bytes, start: int, end: int, packet_type: int, count: int) -> RtcpPacket:
    if packet_type == RTCP_SR:
        fixed = 4 + _SENDER_INFO.size
        if start + fixed + count * _REPORT_BLOCK.size > end:
            raise MalformedPacketError("sender report shorter than its report count")
        ssrc = struct.unpack_from("!I", data, start)[0]
        ntp_hi, ntp_lo, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(data, start + 4)
        blocks_at = start + fixed
        reports = _parse_blocks(data, blocks_at, count)
        return SenderReport(
            ssrc=ssrc,
            ntp_timestamp=(ntp_hi << 32) | ntp_lo,
            rtp_timestamp=rtp_ts,
            packet_count=packets,
            octet_count=octets,
            reports=reports,
            extension=bytes(data[blocks_at + count * _REPORT_BLOCK.size : end]),
        )
    if packet_type == RTCP_RR:
        if start + 4 + count * _REPORT_BLOCK.size > end:
            raise MalformedPacketError("receiver report shorter than its report count")
        ssrc = struct.unpack_from("!I", data, start)[0]
        reports = _parse_blocks(data, start + 4, count)
        return ReceiverReport(
            ssrc=ssrc,
            reports=reports,
            extension=bytes(data[start + 4 + count * _REPORT_BLOCK.size : end]),
        )
    return OtherRtcp(packet_type=packet_type, count=count, body=bytes(data[start:end]))


def _parse_blocks(data: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    return tuple(ReportBlock.parse(data, offset + i * _REPORT_BLOCK.size) for i in range(count))


def serialize_rtcp(packets: list[RtcpPacket]) -> bytes:
    """Serialise a compound RTCP packet; bodies are padded to 32-bit words with the P bit."""
    out = []
    for packet in packets:
        if isinstance(packet, SenderReport):
            packet_type, count = RTCP_SR, len(packet.reports)
            body = (
                struct.pack(
                    "!IIIIII",
                    packet.ssrc,
                    packet.ntp_timestamp >> 32,
                    packet.ntp_timestamp & 0xFFFFFFFF,
                    packet.rtp_timestamp,
                    packet.packet_count,
                    packet.octet_count,
                )
                + b"".join(r.to_bytes() for r in packet.reports)
                + packet.extension
            )
        elif isinstance(packet, ReceiverReport):
            packet_type, count = RTCP_RR, len(packet.reports)
            body = (
                struct.pack("!I", packet.ssrc)
                + b"".join(r.to_bytes() for r in packet.reports)
                + packet.extension
            )
        else:
            packet_type, count, body = packet.packet_type, packet.count, packet.body
        if count > 31:
            raise ValueError("at most 31 report blocks fit the RC field")
        pad = -len(body) % 4
        if pad:
            body += bytes(pad - 1) + bytes((pad,))
        first = (RTP_VERSION << 6) | (0x20 if pad else 0) | count
        out.append(_RTCP_HEADER.pack(first, packet_type, len(body) // 4) + body)
    return b"".join(out)
