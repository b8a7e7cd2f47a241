"""One leg's media endpoint: its RTP/RTCP sockets, receive checks and rewritten sending.

Theory of operation. What an endpoint *receives* from its phone is checked (version, payload
type), counted into its :class:`StreamStats`, fed to its DTMF detector when it is a
telephone-event, then handed to whoever hears it: the peer endpoint, which rewrites it for its
own phone (:meth:`MediaEndpoint._relay_from`: continuity, A-law↔μ-law by table, event payload
type renumbered), or the conference mixer (decoded to linear). Frames the bridge makes itself
(mix, hold) go out through the same continuity, so the phone sees a single stream.

Symmetric RTP (RFC 4961; the latching practice of RFC 7362 §4): the first good packet after
:meth:`MediaEndpoint.set_remote` fixes where we send, whatever the SDP said, because phones
behind NAT send from an address they cannot know. Later a new source address is adopted only
if it carries the SSRC we latched (a NAT rebinding) or the latched source has gone quiet for
``relatch_after`` seconds; anything else is counted as foreign and dropped, so a stray sender
cannot steal a call's audio.

Once latched, the RTP socket is *locked*: connected to the phone's address (:meth:`_lock`).
The kernel then drops every other sender before we see it and we read without a source
address and send without a route lookup, about a tenth of a relayed packet's CPU. The price is
"delayed learning", as in other media relays: a NAT rebinding is seen only once the old source
has been quiet for ``relatch_after`` and the relay's sweep has unlocked the leg.

RTCP is terminated, not forwarded: SSRCs and sequence numbers differ on each side of the bridge,
so a report from one leg would be nonsense on the other. The phone's reports are parsed for what
it saw of our stream, and we send our own (:meth:`MediaEndpoint.rtcp_report`).
"""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import logging
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from bridge.media import g711
from bridge.media.continuity import StreamContinuity
from bridge.media.dtmf import DtmfDetector, DtmfDigit, TelephoneEvent
from bridge.media.mixer import FRAME_SAMPLES, FRAME_SECONDS, Samples
from bridge.media.rtp import (
    RTCP_SDES,
    MalformedPacketError,
    OtherRtcp,
    ReceiverReport,
    ReportBlock,
    SenderReport,
    parse_rtcp,
    payload_bounds,
    serialize_rtcp,
)
from bridge.media.stats import StreamStats
from bridge.media.tone import AudioSource

if TYPE_CHECKING:
    from bridge.media.relay import Conference, MediaRelay, ResumeTo

log = logging.getLogger(__name__)

Address = tuple[str, int]
DigitCallback = Callable[["MediaEndpoint", DtmfDigit], None]
TimeoutCallback = Callable[["MediaEndpoint"], None]

COMFORT_NOISE = 13
"""RFC 3389 comfort noise: law-independent, relayed as is."""
_FIXED_HEADER = struct.Struct("!BBHII")
_monotonic = time.monotonic
_NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900 (NTP) to 1970 (Unix)
MAX_DATAGRAM = 2048
_UNSPEC_ADDRESS = struct.pack("=H26x", socket.AF_UNSPEC)  # as long as a sockaddr_in6
_libc = ctypes.CDLL(None, use_errno=True)
_TRANSCODE = g711.TRANSCODE_TABLES
_LEAD_IN_FRESH = 2 * FRAME_SECONDS
"""A relayed packet older than this is not repeated: the phone paused (silence suppression)."""


@dataclass(slots=True)
class RelayCounters:
    """Packets the relay refused or could not deliver, by reason; and work it did."""

    malformed: int = 0
    unknown_payload_type: int = 0
    foreign_source: int = 0
    no_remote: int = 0
    untranscodable: int = 0
    events_dropped: int = 0
    relatched: int = 0
    rtcp_received: int = 0
    rtcp_malformed: int = 0
    digits: int = 0
    ticks: int = 0
    ticks_skipped: int = 0
    late_after_release: int = 0
    send_failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class MediaEndpoint:
    """One leg's media port pair. Create with :meth:`MediaRelay.allocate`."""

    __slots__ = (
        "_conference",
        "_generated_sequence",
        "_generated_timestamp",
        "_hold",
        "_last_relayed",
        "_last_sender_report",
        "_latched",
        "_latched_ssrc",
        "_lock_scheduled",
        "_locked",
        "_next_report_at",
        "_peer",
        "_quiet_reported",
        "_quiet_since",
        "_resume_to",
        "_rtcp_latched",
        "_rtcp_sock",
        "_rtp_sock",
        "closed",
        "codec",
        "dtmf",
        "host",
        "last_received_at",
        "last_rtcp_at",
        "out",
        "port",
        "relay",
        "remote",
        "remote_report",
        "remote_rtcp",
        "rtcp_port",
        "stats",
        "swallow_dtmf",
        "telephone_event_pt",
    )

    def __init__(
        self,
        relay: MediaRelay,
        *,
        host: str,
        port: int,
        codec: int,
        telephone_event_pt: int | None,
    ) -> None:
        self.relay = relay
        self.host = host
        self.port = port
        self.rtcp_port = port + 1
        self.codec = codec
        """RTP payload type we send to this leg (from its SDP answer/offer)."""
        self.telephone_event_pt = telephone_event_pt
        """Payload type of RFC 4733 events on this leg, ``None`` if it did not negotiate them."""
        self.remote: Address | None = None
        self.remote_rtcp: Address | None = None
        self.swallow_dtmf = False
        """Detect this leg's digits but do not pass them on (feature codes stay private)."""
        self.stats = StreamStats()
        self.remote_report: ReportBlock | None = None
        """The latest RTCP reception report the phone sent about our stream."""
        self.last_received_at: float | None = None
        """Monotonic time of the latest packet accepted from the phone."""
        self.last_rtcp_at: float | None = None
        """Monotonic time of the latest well-formed RTCP packet from the phone."""
        self._quiet_since: float | None = None
        self._quiet_reported: float | None = None
        self._last_sender_report: tuple[int, float] | None = None
        self._next_report_at: float | None = None
        self.dtmf = DtmfDetector()
        self.out = StreamContinuity(
            ssrc=random.getrandbits(32),
            sequence=random.getrandbits(16),
            timestamp=random.getrandbits(32),
        )
        self.closed = False
        self._latched = False
        self._latched_ssrc: int | None = None
        self._rtcp_latched = False
        self._peer: MediaEndpoint | None = None
        self._last_relayed: bytes | None = None
        self._conference: Conference | None = None
        self._hold: AudioSource | None = None
        self._resume_to: ResumeTo = None
        self._generated_sequence = 0
        self._generated_timestamp = 0
        self._rtp_sock: socket.socket | None = None
        self._rtcp_sock: socket.socket | None = None
        self._locked = False
        self._lock_scheduled = False

    def __repr__(self) -> str:
        return f"<MediaEndpoint {self.host}:{self.port} pt={self.codec}>"

    @property
    def peer(self) -> MediaEndpoint | None:
        return self._peer

    @property
    def conference(self) -> Conference | None:
        return self._conference

    def set_remote(self, addr: str, port: int, rtcp_port: int | None = None) -> None:
        """Point at the address from the leg's SDP; the next packet received may re-latch it.

        A host name (RFC 4566 allows one in c=) is not looked up: a resolver call would block
        the loop that carries every call's audio, and one per packet at that. The leg then
        waits for the phone's first packet and latches to where it comes from.
        """
        self.unlock()
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            self.remote = self.remote_rtcp = None
        else:
            self.remote = (addr, port)
            self.remote_rtcp = (addr, port + 1 if rtcp_port is None else rtcp_port)
        self._latched = False
        self._latched_ssrc = None
        self._rtcp_latched = False
        self._quiet_since = None

    # -- sockets ------------------------------------------------------------------------

    @property
    def locked(self) -> bool:
        """The RTP socket hears only the latched source (see the module docstring)."""
        return self._locked

    def _lock(self) -> None:
        self._lock_scheduled = False
        sock, remote = self._rtp_sock, self.remote
        if sock is None or remote is None or self._locked or not self._latched:
            return
        try:
            sock.connect(remote)
        except OSError:
            return
        self._locked = True
        # connect() filters only what arrives from now on: what is already queued may come
        # from anyone, so it is read with its source and judged by the latching rules.
        while self._locked:
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except OSError:
                return
            self._on_rtp(data, addr)

    def unlock(self) -> None:
        """Hear every sender again: the SDP changed, the source went quiet, or the call ended."""
        if self._locked:
            self._locked = False
            if self._rtp_sock is not None:
                disconnect(self._rtp_sock)

    def _read_rtcp(self) -> None:
        sock = self._rtcp_sock
        if sock is None:
            return
        try:
            data, addr = sock.recvfrom(MAX_DATAGRAM)
        except OSError:
            return
        self._on_rtcp(data, addr)

    # -- receive path -------------------------------------------------------------------

    def _read_rtp(self) -> None:
        sock = self._rtp_sock
        if sock is None:
            return
        try:
            if self._locked:
                data = sock.recv(MAX_DATAGRAM)
                addr = self.remote
            else:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
        except OSError:  # read already, or the ICMP error of a phone that has hung up
            return
        if addr is not None:
            self._on_rtp(data, addr)

    def _on_rtp(self, data: bytes, addr: Address) -> None:
        """The hot path: at 50,000 packets/s every Python call and attribute lookup here is a
        percent of a core, hence the inlining."""
        relay = self.relay
        if len(data) < 12 or data[0] >> 6 != 2:
            relay.counters.malformed += 1
            return
        second = data[1]
        if 192 <= second <= 223:
            self._on_rtcp(data, addr)  # RTCP multiplexed on the RTP port (RFC 5761)
            return
        payload_type = second & 0x7F
        is_event = payload_type == self.telephone_event_pt
        if (
            not is_event
            and payload_type != self.codec
            and payload_type not in (g711.PCMA, g711.PCMU, COMFORT_NOISE)
        ):
            relay.counters.unknown_payload_type += 1
            return
        _, _, sequence, timestamp, ssrc = _FIXED_HEADER.unpack_from(data)
        now = _monotonic()
        if addr != self.remote or not self._latched:
            if not self._latch(addr, ssrc, now):
                return
            if not self._lock_scheduled:
                self._lock_scheduled = True
                asyncio.get_running_loop().call_soon(self._lock)
        self.last_received_at = now
        self._latched_ssrc = ssrc  # a phone may change SSRC (re-INVITE) and later move (NAT)
        if not self.stats.on_packet(ssrc, sequence, timestamp, len(data), now, not is_event):
            return
        if is_event:
            if not self._on_event(data, ssrc, timestamp, bool(second & 0x80), now):
                return
            if self.swallow_dtmf:
                return
        peer = self._peer
        if peer is not None:
            peer._relay_from(data, payload_type, is_event, ssrc, sequence, timestamp, now)
            if not is_event:
                self._last_relayed = data
        elif self._conference is not None and not is_event and g711.is_g711(payload_type):
            try:
                start, end = payload_bounds(data)
            except MalformedPacketError:
                relay.counters.malformed += 1
                return
            self._conference.mixer.push(self, g711.decode(payload_type, data[start:end]))

    def lead_in(self, now: float) -> Samples | None:
        """The audio this leg's peer heard last, when the leg is relayed and still talking.

        A leg moving from a relay into a conference starts its playout buffer with it, so its
        listeners hear those 20 ms again rather than the silence of a buffer filling up."""
        data, last = self._last_relayed, self.last_received_at
        if self._peer is None or data is None or last is None or now - last > _LEAD_IN_FRESH:
            return None
        payload_type = data[1] & 0x7F
        if not g711.is_g711(payload_type):
            return None
        try:
            start, end = payload_bounds(data)
        except MalformedPacketError:
            return None
        return g711.decode(payload_type, data[start:end])

    def _latch(self, addr: Address, ssrc: int, now: float) -> bool:
        relay = self.relay
        if self._latched:
            quiet = self.last_received_at is None or now - self.last_received_at > (
                relay.relatch_after
            )
            if ssrc != self._latched_ssrc and not quiet:
                relay.counters.foreign_source += 1
                return False
            if addr != self.remote:
                relay.counters.relatched += 1
        if addr != self.remote and not self._rtcp_latched:
            # Moved (NAT): RTCP most likely comes from the port above, until it shows itself.
            self.remote_rtcp = (addr[0], addr[1] + 1)
        if addr != self.remote:
            self.unlock()
        self.remote = addr
        self._latched = True
        self._latched_ssrc = ssrc
        return True

    def _on_event(self, data: bytes, ssrc: int, timestamp: int, marker: bool, now: float) -> bool:
        relay = self.relay
        try:
            start, end = payload_bounds(data)
            digits = self.dtmf.on_event_payload(
                ssrc=ssrc, timestamp=timestamp, payload=data[start:end], marker=marker, now=now
            )
        except ValueError:
            relay.counters.malformed += 1
            return False
        for digit in digits:
            relay.counters.digits += 1
            if relay.on_digit is not None:
                try:
                    relay.on_digit(self, digit)
                except Exception:
                    log.exception("DTMF callback failed for media port %d", self.port)
        return True

    def _on_rtcp(self, data: bytes, addr: Address) -> None:
        relay = self.relay
        try:
            packets = parse_rtcp(data)
        except MalformedPacketError:
            relay.counters.rtcp_malformed += 1
            return
        relay.counters.rtcp_received += 1
        from_phone = self.remote is None or addr[0] == self.remote[0]
        if from_phone:
            # A sign of life for the media timeout only from the phone's own host: a stray
            # sender must not keep a dead call open.
            self.last_rtcp_at = _monotonic()
        if not self._rtcp_latched and from_phone:
            self.remote_rtcp = addr
            self._rtcp_latched = True
        for packet in packets:
            if isinstance(packet, SenderReport):
                # §6.4.1 LSR: the middle 32 bits of the NTP timestamp, echoed with the delay.
                self._last_sender_report = ((packet.ntp_timestamp >> 16) & 0xFFFFFFFF, _monotonic())
            if isinstance(packet, SenderReport | ReceiverReport):
                for block in packet.reports:
                    if block.ssrc == self.out.ssrc:
                        self.remote_report = block

    def rtcp_report(self, wall: float, now: float) -> bytes:
        """Our compound RTCP packet for this leg: SR (or RR) plus the SDES CNAME (§6.1).

        ``wall`` is Unix time for the NTP field, ``now`` the monotonic clock of the packets.
        """
        last_sr = delay = 0
        if self._last_sender_report is not None:
            last_sr = self._last_sender_report[0]
            delay = int((now - self._last_sender_report[1]) * 65536) & 0xFFFFFFFF
        block = self.stats.reception_report(last_sr=last_sr, delay_since_last_sr=delay)
        blocks = (block,) if block is not None else ()
        stats, ssrc = self.stats, self.out.ssrc
        report: SenderReport | ReceiverReport
        if stats.packets_sent:
            report = SenderReport(
                ssrc=ssrc,
                ntp_timestamp=int((wall + _NTP_EPOCH_OFFSET) * (1 << 32)) & ((1 << 64) - 1),
                rtp_timestamp=self.out.timestamp_at(now),
                packet_count=stats.packets_sent & 0xFFFFFFFF,
                octet_count=(stats.bytes_sent - 12 * stats.packets_sent) & 0xFFFFFFFF,
                reports=blocks,
            )
        else:
            report = ReceiverReport(ssrc=ssrc, reports=blocks)
        cname = f"bridge@{self.host}".encode()
        chunk = struct.pack("!IBB", ssrc, 1, len(cname)) + cname
        chunk += bytes(4 - len(chunk) % 4)  # the null item ending the list, then word padding
        sdes = OtherRtcp(packet_type=RTCP_SDES, count=1, body=chunk)
        return serialize_rtcp([report, sdes])

    # -- send path ----------------------------------------------------------------------

    def _relay_from(
        self,
        data: bytes,
        payload_type: int,
        is_event: bool,
        ssrc: int,
        sequence: int,
        timestamp: int,
        now: float,
    ) -> None:
        """Send a packet received from our peer to our phone, rewritten for this leg."""
        relay = self.relay
        remote = self.remote
        if remote is None or self.closed:
            relay.counters.no_remote += 1
            return
        table = None
        if is_event:
            if self.telephone_event_pt is None:
                relay.counters.events_dropped += 1
                return
            out_type = self.telephone_event_pt
        elif payload_type == COMFORT_NOISE:
            out_type = COMFORT_NOISE
        else:
            out_type = self.codec
            if payload_type != out_type:
                table = _TRANSCODE.get((payload_type, out_type))
                if table is None:
                    relay.counters.untranscodable += 1
                    return
        out = self.out
        out_sequence, out_timestamp, switched = out.rewrite(ssrc, sequence, timestamp, now)
        first = data[0]
        header = _FIXED_HEADER.pack(
            0x80 | (first & 0x3F),
            out_type | (0x80 if switched else data[1] & 0x80),
            out_sequence,
            out_timestamp,
            out.ssrc,
        )
        if table is None:
            packet = header + data[12:]
        elif first == 0x80:  # no CSRC, extension or padding: the payload follows the header
            packet = header + data[12:].translate(table)
        else:
            try:
                start, end = payload_bounds(data)
            except MalformedPacketError:
                relay.counters.malformed += 1
                return
            packet = header + data[12:start] + data[start:end].translate(table) + data[end:]
        self._transmit(packet, remote)

    def _transmit(self, packet: bytes, remote: Address) -> None:
        sock = self._rtp_sock
        if sock is None:
            return
        try:
            if self._locked:
                sock.send(packet)
            else:
                sock.sendto(packet, remote)
        except OSError:
            # A full socket buffer (media is not queued: a late frame is a useless frame) or
            # the ICMP error of a phone that hung up.
            self.relay.counters.send_failed += 1
            return
        self.stats.on_sent(len(packet))

    def send_rtcp(self, packet: bytes) -> None:
        sock, remote = self._rtcp_sock, self.remote_rtcp
        if sock is not None and remote is not None:
            try:
                sock.sendto(packet, remote)
            except OSError:
                self.relay.counters.send_failed += 1

    def send_event(self, event: TelephoneEvent, start: int, *, marker: bool) -> None:
        """Send one RFC 4733 event packet inside this leg's outgoing stream (see send_dtmf)."""
        pt = self.telephone_event_pt
        if self.closed or self.remote is None or pt is None:
            return
        sequence = self.out.insert()
        header = _FIXED_HEADER.pack(
            0x80, pt | (0x80 if marker else 0), sequence, start, self.out.ssrc
        )
        packet = header + event.to_bytes()
        self._transmit(packet, self.remote)

    def _send_generated(self, payload: bytes, payload_type: int, source: int, now: float) -> None:
        """Send a frame the bridge made itself (mix, hold) under this leg's continuity."""
        remote = self.remote
        if remote is None or self.closed:
            self.relay.counters.no_remote += 1
            return
        sequence = self._generated_sequence = (self._generated_sequence + 1) & 0xFFFF
        timestamp = self._generated_timestamp = (
            self._generated_timestamp + FRAME_SAMPLES
        ) & 0xFFFFFFFF
        out = self.out
        out_sequence, out_timestamp, switched = out.rewrite(source, sequence, timestamp, now)
        packet = (
            _FIXED_HEADER.pack(
                0x80,
                payload_type | 0x80 if switched else payload_type,
                out_sequence,
                out_timestamp,
                out.ssrc,
            )
            + payload
        )
        self._transmit(packet, remote)


def disconnect(sock: socket.socket) -> None:
    """Dissolve a UDP socket's association and keep its port: connect(2) with AF_UNSPEC.

    Python's ``connect`` cannot express AF_UNSPEC, hence the C call. The port stays bound
    because the relay binds explicit ports, which the kernel keeps over a disconnect.
    """
    if _libc.connect(sock.fileno(), _UNSPEC_ADDRESS, len(_UNSPEC_ADDRESS)) != 0:
        log.warning("could not disconnect media socket %s", sock.getsockname())
