"""The media relay: RTP/RTCP sockets, anchoring, transcoding, conferences and hold.

Theory of operation. Every leg of a call gets a :class:`MediaEndpoint`: an even RTP port and
the odd RTCP port above it, bound on the bridge's media address and written into the SDP the
bridge sends that leg. What an endpoint *hears* is exactly one feed at a time:

    feed          set by                        what the phone receives
    nothing       allocate, disconnect          nothing
    peer          connect(a, b)                 b's packets, rewritten (both ways)
    conference    conference(...), add          the N-1 mix on the 20 ms tick
    hold          play_hold                     tone or music on the 20 ms tick

Changing the feed never touches the outgoing stream identity: every packet toward a phone goes
through that endpoint's :class:`StreamContinuity`, so the phone sees one SSRC with continuous
sequence numbers and timestamps across transfers, and the marker bit at each switch. A leg
swap is just ``connect(caller, new_leg)``: the old peer is detached and the caller hears the new
leg from its very next packet.

What an endpoint *sends* is checked (version, payload type), counted into its
:class:`StreamStats`, fed to its DTMF detector when it is a telephone-event, then delivered to
whoever hears it: the peer (transcoded A-law↔μ-law by table when their codecs differ, event
payload type renumbered) or the conference mixer (decoded to linear).

Symmetric RTP (RFC 4961; the latching practice of RFC 7362 §4): the first good packet after
:meth:`MediaEndpoint.set_remote` fixes where we send, whatever the SDP said, because phones
behind NAT send from an address they cannot know. Later a new source address is adopted only
if it carries the SSRC we latched (a NAT rebinding) or the latched source has gone quiet for
``relatch_after`` seconds; anything else is counted as foreign and dropped, so a stray sender
cannot steal a call's audio.

RTCP is terminated, not forwarded: SSRCs and sequence numbers differ on each side of the bridge,
so a report from one leg would be nonsense on the other. Reports are parsed for the figures the
far end saw of our stream.

Ports go back to the pool only in :meth:`MediaRelay.release`, which always completes (it is the
engine's ``finally``); released ports go to the back of the pool, so a late packet of an ended
call does not land in the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields

import numpy as np

from bridge.media import g711
from bridge.media.continuity import StreamContinuity
from bridge.media.dtmf import DtmfDetector, DtmfDigit, TelephoneEvent, event_packets
from bridge.media.mixer import FRAME_SAMPLES, FRAME_SECONDS, Mixer, MixMode, mix_batch
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
from bridge.media.tone import AudioSource, LoopSource, Samples

log = logging.getLogger(__name__)

Address = tuple[str, int]
DigitCallback = Callable[["MediaEndpoint", DtmfDigit], None]

COMFORT_NOISE = 13
"""RFC 3389 comfort noise: law-independent, relayed as is."""
_FIXED_HEADER = struct.Struct("!BBHII")
_monotonic = time.monotonic
# Generated streams get source keys outside the 32-bit SSRC space of real senders.
_MIX_SOURCE = 1 << 32
_HOLD_SOURCE = (1 << 32) + 1
_MAX_TICK_BACKLOG = 5 * FRAME_SECONDS
_NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900 (NTP) to 1970 (Unix)
_LATENESS_SAMPLES = 20000


class PortPoolExhaustedError(RuntimeError):
    """No free RTP port pair: the engine answers the INVITE 503 rather than 200 without media."""


class PortPool:
    """Even RTP ports of a range, each with the odd RTCP port above it (RFC 3550 §11)."""

    def __init__(self, port_min: int, port_max: int) -> None:
        first = port_min + (port_min % 2)
        if not 0 < first < port_max <= 65535:
            raise ValueError(f"RTP port range {port_min}-{port_max} holds no even/odd pair")
        self._free: deque[int] = deque(range(first, port_max, 2))
        self._in_use: set[int] = set()

    @property
    def free(self) -> int:
        return len(self._free)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def take(self) -> int:
        if not self._free:
            raise PortPoolExhaustedError("no free RTP port pair")
        port = self._free.popleft()
        self._in_use.add(port)
        return port

    def give_back(self, port: int) -> None:
        if port in self._in_use:
            self._in_use.remove(port)
            self._free.append(port)


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
    send_errors: int = 0
    ticks: int = 0
    ticks_skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _EndpointProtocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        self._on_datagram = on_datagram
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a phone that hung up: nothing to do, the call ends anyway.
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class MediaEndpoint:
    """One leg's media port pair. Create with :meth:`MediaRelay.allocate`."""

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
        self._conference: Conference | None = None
        self._hold: AudioSource | None = None
        self._generated_sequence = 0
        self._generated_timestamp = 0
        self._sockets: tuple[socket.socket, socket.socket] | None = None
        self._registered: asyncio.Task[None] | None = None
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._rtp_protocol: _EndpointProtocol | None = None
        self._rtcp_protocol: _EndpointProtocol | None = None

    def __repr__(self) -> str:
        return f"<MediaEndpoint {self.host}:{self.port} pt={self.codec}>"

    @property
    def peer(self) -> MediaEndpoint | None:
        return self._peer

    @property
    def conference(self) -> Conference | None:
        return self._conference

    @property
    def on_hold(self) -> bool:
        return self._hold is not None

    def set_remote(self, addr: str, port: int, rtcp_port: int | None = None) -> None:
        """Point at the address from the leg's SDP; the next packet received may re-latch it."""
        self.remote = (addr, port)
        self.remote_rtcp = (addr, port + 1 if rtcp_port is None else rtcp_port)
        self._latched = False
        self._latched_ssrc = None
        self._rtcp_latched = False

    # -- receive path -------------------------------------------------------------------

    def _on_rtp(self, data: bytes, addr: Address) -> None:
        relay = self.relay
        if len(data) < 12 or data[0] >> 6 != 2:
            relay.counters.malformed += 1
            return
        second = data[1]
        if 192 <= second <= 223:
            self._on_rtcp(data, addr)  # RTCP multiplexed on the RTP port (RFC 5761)
            return
        _, _, sequence, timestamp, ssrc = _FIXED_HEADER.unpack_from(data)
        now = _monotonic()
        if addr != self.remote and not self._latch(addr, ssrc, now):
            return
        self.last_received_at = now
        payload_type = second & 0x7F
        is_event = payload_type == self.telephone_event_pt
        if (
            not is_event
            and payload_type != self.codec
            and payload_type not in (g711.PCMA, g711.PCMU, COMFORT_NOISE)
        ):
            relay.counters.unknown_payload_type += 1
            return
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
        elif self._conference is not None and not is_event and g711.is_g711(payload_type):
            try:
                start, end = payload_bounds(data)
            except MalformedPacketError:
                relay.counters.malformed += 1
                return
            self._conference.mixer.push(self, g711.decode(payload_type, data[start:end]))

    def _latch(self, addr: Address, ssrc: int, now: float) -> bool:
        relay = self.relay
        if self._latched:
            quiet = self.last_received_at is None or now - self.last_received_at > (
                relay.relatch_after
            )
            if ssrc != self._latched_ssrc and not quiet:
                relay.counters.foreign_source += 1
                return False
            relay.counters.relatched += 1
        self.remote = addr
        if not self._rtcp_latched:
            self.remote_rtcp = (addr[0], addr[1] + 1)
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
        if not self._rtcp_latched and (self.remote is None or addr[0] == self.remote[0]):
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
        if remote is None or self._rtp is None:
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
                try:
                    table = g711.transcode_table(payload_type, out_type)
                except ValueError:
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
        self._rtp.sendto(packet, remote)
        stats = self.stats
        stats.packets_sent += 1
        stats.bytes_sent += len(packet)

    def _send_generated(self, payload: bytes, payload_type: int, source: int, now: float) -> None:
        """Send a frame the bridge made itself (mix, hold) under this leg's continuity."""
        remote, transport = self.remote, self._rtp
        if remote is None or transport is None:
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
        transport.sendto(packet, remote)
        stats = self.stats
        stats.packets_sent += 1
        stats.bytes_sent += len(packet)


class Conference:
    """A set of endpoints hearing the N-1 mix of each other, per their :class:`MixMode`."""

    def __init__(self, relay: MediaRelay) -> None:
        self.relay = relay
        self.mixer = Mixer()

    @property
    def members(self) -> tuple[MediaEndpoint, ...]:
        return tuple(k for k in self.mixer.keys if isinstance(k, MediaEndpoint))

    def add(
        self,
        endpoint: MediaEndpoint,
        mode: MixMode = MixMode.FULL,
        *,
        whisper_to: MediaEndpoint | None = None,
    ) -> None:
        relay = self.relay
        relay._check_own(endpoint)
        if endpoint in self.mixer:
            self.mixer.set_mode(endpoint, mode, whisper_to=whisper_to)
            return
        relay._detach(endpoint)
        self.mixer.add(endpoint, mode, whisper_to=whisper_to)
        endpoint._conference = self
        endpoint.out.switch()
        relay._conferences.add(self)
        relay._ensure_ticker()

    def set_mode(
        self,
        endpoint: MediaEndpoint,
        mode: MixMode,
        *,
        whisper_to: MediaEndpoint | None = None,
    ) -> None:
        self.mixer.set_mode(endpoint, mode, whisper_to=whisper_to)

    def remove(self, endpoint: MediaEndpoint) -> None:
        if endpoint in self.mixer:
            self.mixer.remove(endpoint)
            endpoint._conference = None
        if not len(self.mixer):
            self.relay._conferences.discard(self)

    def close(self) -> None:
        for endpoint in self.members:
            self.remove(endpoint)
        self.relay._conferences.discard(self)


class MediaRelay:
    """All media endpoints of one bridge process, on one event loop (asyncio or uvloop)."""

    def __init__(
        self,
        host: str,
        port_min: int,
        port_max: int,
        *,
        on_digit: DigitCallback | None = None,
        relatch_after: float = 1.0,
        rtcp_interval: float = 5.0,
    ) -> None:
        self.host = host
        self.rtcp_interval = rtcp_interval
        """Mean seconds between our RTCP reports to each active leg (§6.2); 0 sends none."""
        self.pool = PortPool(port_min, port_max)
        self.on_digit = on_digit
        self.relatch_after = relatch_after
        self.counters = RelayCounters()
        self.tick_lateness: deque[float] = deque(maxlen=_LATENESS_SAMPLES)
        """Seconds each recent 20 ms tick ran after its due time (for metrics and benchmarks)."""
        self._endpoints: set[MediaEndpoint] = set()
        self._conferences: set[Conference] = set()
        self._holds: set[MediaEndpoint] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._reporter: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def endpoints(self) -> frozenset[MediaEndpoint]:
        return frozenset(self._endpoints)

    # -- endpoints ----------------------------------------------------------------------

    async def allocate(
        self, *, codec: int = g711.PCMU, telephone_event_pt: int | None = 101
    ) -> MediaEndpoint:
        """Bind a fresh RTP/RTCP port pair; raise :class:`PortPoolExhaustedError` if none."""
        endpoint = self.allocate_nowait(codec=codec, telephone_event_pt=telephone_event_pt)
        assert endpoint._registered is not None
        await asyncio.shield(endpoint._registered)
        return endpoint

    def allocate_nowait(
        self, *, codec: int = g711.PCMU, telephone_event_pt: int | None = 101
    ) -> MediaEndpoint:
        """:meth:`allocate` for callers that cannot await (the sans-IO call core).

        Both sockets are bound here, synchronously, so the ports are ours before the SDP
        naming them leaves; registering them with the loop finishes in a task, and packets
        that arrive meanwhile wait in the kernel's socket buffer.
        """
        if self._closed:
            raise RuntimeError("media relay is closed")
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(self.pool.free):
            port = self.pool.take()
            socks: list[socket.socket] = []
            try:
                for p in (port, port + 1):
                    sock = socket.socket(family, socket.SOCK_DGRAM)
                    socks.append(sock)
                    sock.setblocking(False)
                    sock.bind((self.host, p))
            except OSError:
                for sock in socks:
                    sock.close()
                self.pool.give_back(port)  # taken by another program: try the next pair
                continue
            endpoint = MediaEndpoint(
                self, host=self.host, port=port, codec=codec, telephone_event_pt=telephone_event_pt
            )
            endpoint._sockets = (socks[0], socks[1])
            self._endpoints.add(endpoint)
            endpoint._registered = loop.create_task(self._register(endpoint))
            if self.rtcp_interval > 0 and (self._reporter is None or self._reporter.done()):
                self._reporter = loop.create_task(self._report_loop())
            return endpoint
        raise PortPoolExhaustedError(f"no free RTP port pair ({self.pool.in_use} pairs in use)")

    async def _register(self, endpoint: MediaEndpoint) -> None:
        loop = asyncio.get_running_loop()
        assert endpoint._sockets is not None
        rtp_sock, rtcp_sock = endpoint._sockets
        try:
            rtp, rtp_protocol = await loop.create_datagram_endpoint(
                functools.partial(_EndpointProtocol, endpoint._on_rtp), sock=rtp_sock
            )
            endpoint._rtp, endpoint._rtp_protocol = rtp, rtp_protocol
            rtcp, rtcp_protocol = await loop.create_datagram_endpoint(
                functools.partial(_EndpointProtocol, endpoint._on_rtcp), sock=rtcp_sock
            )
            endpoint._rtcp, endpoint._rtcp_protocol = rtcp, rtcp_protocol
        except BaseException:
            _close_endpoint_sockets(endpoint)
            raise
        if endpoint.closed:  # released while registering
            _close_endpoint_sockets(endpoint)

    async def release(self, endpoint: MediaEndpoint) -> None:
        """Detach, close both sockets and return the ports; safe to call more than once."""
        if endpoint.closed:
            return
        endpoint.closed = True
        self._detach(endpoint)
        self._endpoints.discard(endpoint)
        try:
            registered = endpoint._registered
            if registered is not None and not registered.done():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(registered), timeout=1.0)
            waits = _close_endpoint_sockets(endpoint)
            if waits:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*waits), timeout=1.0)
        finally:
            self.pool.give_back(endpoint.port)

    def close(self) -> None:
        """Close every endpoint at once (shutdown); ports return when the sockets are gone."""
        self._closed = True
        for task in (self._ticker, self._reporter):
            if task is not None:
                task.cancel()
        self._ticker = self._reporter = None
        for endpoint in list(self._endpoints):
            endpoint.closed = True
            self._detach(endpoint)
            if endpoint._registered is not None:
                endpoint._registered.cancel()
            _close_endpoint_sockets(endpoint)
            self.pool.give_back(endpoint.port)
        self._endpoints.clear()

    # -- feeds ----------------------------------------------------------------------------

    def connect(self, a: MediaEndpoint, b: MediaEndpoint) -> None:
        """Relay a↔b. Whatever either heard before (another peer, a mix, hold) stops."""
        if a is b:
            raise ValueError("cannot connect an endpoint to itself")
        self._check_own(a)
        self._check_own(b)
        if a._peer is b:
            return
        self._detach(a)
        self._detach(b)
        a._peer, b._peer = b, a
        a.out.switch()
        b.out.switch()

    def disconnect(self, endpoint: MediaEndpoint) -> None:
        """The endpoint (and its peer, if any) hears nothing from now on."""
        self._detach(endpoint)

    def conference(
        self,
        endpoints: Iterable[MediaEndpoint],
        modes: Mapping[MediaEndpoint, MixMode] | None = None,
        *,
        whisper_to: Mapping[MediaEndpoint, MediaEndpoint] | None = None,
    ) -> Conference:
        """Put endpoints in a new conference; ``modes`` default to ``full``."""
        conference = Conference(self)
        members = list(endpoints)
        modes = modes or {}
        whisper_to = whisper_to or {}
        for endpoint in members:
            conference.add(endpoint, MixMode.FULL)
        for endpoint in members:
            mode = modes.get(endpoint, MixMode.FULL)
            if mode is not MixMode.FULL:
                conference.set_mode(endpoint, mode, whisper_to=whisper_to.get(endpoint))
        return conference

    def play_hold(self, endpoint: MediaEndpoint, source: AudioSource | Samples) -> None:
        """The endpoint hears ``source`` (a tone, a looped WAV) instead of anyone.

        A source keeps its own position, so each held endpoint needs its own; samples (e.g.
        from :func:`~bridge.media.tone.load_wav`) can be shared and get a fresh loop each.
        """
        self._check_own(endpoint)
        if any(e._hold is source for e in self._holds if e is not endpoint):
            raise ValueError("this audio source already plays to another endpoint")
        self._detach(endpoint)
        endpoint._hold = source if not isinstance(source, np.ndarray) else LoopSource(source)
        endpoint.out.switch()
        self._holds.add(endpoint)
        self._ensure_ticker()

    def stop_hold(self, endpoint: MediaEndpoint) -> None:
        endpoint._hold = None
        self._holds.discard(endpoint)

    async def send_dtmf(
        self, endpoint: MediaEndpoint, digits: str, *, duration_ms: int = 100, gap_ms: int = 60
    ) -> None:
        """Play digits to a leg as RFC 4733 events, inside its current outgoing stream.

        For digits the engine held back (a possible feature code that turned out not to be one).
        The events borrow the stream's timeline, so the audio around them stays continuous.
        """
        if endpoint.telephone_event_pt is None:
            raise ValueError("the leg did not negotiate telephone-event")
        duration = duration_ms * 8
        for digit in digits:
            start = endpoint.out.timestamp_at(time.monotonic())
            for index, event in enumerate(event_packets(digit, duration=duration)):
                self._send_event(endpoint, event, start, marker=index == 0)
                await asyncio.sleep(FRAME_SECONDS)
            await asyncio.sleep(gap_ms / 1000)

    def _send_event(
        self, endpoint: MediaEndpoint, event: TelephoneEvent, start: int, *, marker: bool
    ) -> None:
        pt = endpoint.telephone_event_pt
        if endpoint.closed or endpoint._rtp is None or endpoint.remote is None or pt is None:
            return
        sequence = endpoint.out.insert()
        header = _FIXED_HEADER.pack(
            0x80, pt | (0x80 if marker else 0), sequence, start, endpoint.out.ssrc
        )
        packet = header + event.to_bytes()
        endpoint._rtp.sendto(packet, endpoint.remote)
        endpoint.stats.on_sent(len(packet))

    async def _report_loop(self) -> None:
        """Send each leg that has media our RTCP report, at randomised intervals (§6.3.1).

        Each leg has its own due time, so a thousand legs cost a few reports per wake-up
        rather than one burst that would delay the 20 ms tick.
        """
        interval = self.rtcp_interval
        while self._endpoints:
            await asyncio.sleep(min(0.1, interval / 2))
            wall, now = time.time(), _monotonic()
            for endpoint in list(self._endpoints):
                due = endpoint._next_report_at
                if due is None:
                    endpoint._next_report_at = now + interval * random.uniform(0.5, 1.5)
                    continue
                if due > now:
                    continue
                endpoint._next_report_at = now + interval * random.uniform(0.5, 1.5)
                transport, remote = endpoint._rtcp, endpoint.remote_rtcp
                active = endpoint.last_received_at is not None or endpoint.stats.packets_sent
                if transport is not None and remote is not None and active:
                    transport.sendto(endpoint.rtcp_report(wall, now), remote)

    # -- the 20 ms tick -------------------------------------------------------------------

    def _ensure_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick_loop())

    async def _tick_loop(self) -> None:
        due = time.monotonic()
        while self._conferences or self._holds:
            due += FRAME_SECONDS
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            lateness = now - due
            self.tick_lateness.append(max(0.0, lateness))
            if lateness > _MAX_TICK_BACKLOG:
                # The loop was blocked: skip the missed ticks rather than burst them out.
                skipped = int(lateness / FRAME_SECONDS)
                self.counters.ticks_skipped += skipped
                due += skipped * FRAME_SECONDS
            try:
                self.tick(now)
            except Exception:
                log.exception("media tick failed")

    def tick(self, now: float) -> None:
        """Mix every conference and play every hold source for one 20 ms frame."""
        self.counters.ticks += 1
        frames: list[tuple[MediaEndpoint, Samples, int]] = []
        for result in mix_batch([c.mixer for c in self._conferences]):
            for key, samples in result.items():
                if isinstance(key, MediaEndpoint):
                    frames.append((key, samples, _MIX_SOURCE))
        for endpoint in self._holds:
            source = endpoint._hold
            if source is not None:
                frames.append((endpoint, source.next_frame(), _HOLD_SOURCE))
        self._send_frames(frames, now)

    def _send_frames(self, frames: list[tuple[MediaEndpoint, Samples, int]], now: float) -> None:
        """Encode all of a tick's frames with one table lookup per codec, then send them."""
        by_codec: dict[int, list[int]] = {}
        for index, (endpoint, _, _) in enumerate(frames):
            by_codec.setdefault(endpoint.codec, []).append(index)
        for codec, indexes in by_codec.items():
            if not g711.is_g711(codec):
                self.counters.untranscodable += len(indexes)
                continue
            encoded = g711.encode(codec, np.stack([frames[i][1] for i in indexes]))
            for row, index in enumerate(indexes):
                endpoint, _, source = frames[index]
                payload = encoded[row * FRAME_SAMPLES : (row + 1) * FRAME_SAMPLES]
                endpoint._send_generated(payload, codec, source, now)

    # -- helpers --------------------------------------------------------------------------

    def _check_own(self, endpoint: MediaEndpoint) -> None:
        if endpoint.relay is not self or endpoint.closed:
            raise ValueError(f"{endpoint!r} is released or belongs to another relay")

    def _detach(self, endpoint: MediaEndpoint) -> None:
        peer = endpoint._peer
        if peer is not None:
            peer._peer = None
            endpoint._peer = None
        if endpoint._conference is not None:
            endpoint._conference.remove(endpoint)
        if endpoint._hold is not None:
            self.stop_hold(endpoint)


def _close_endpoint_sockets(endpoint: MediaEndpoint) -> list[asyncio.Future[None]]:
    """Close the endpoint's transports, or its bare sockets not yet registered; return waits.

    A socket handed to a transport belongs to it (uvloop may close the descriptor itself), so
    only sockets that never got a transport are closed directly.
    """
    waits = []
    sockets = endpoint._sockets or (None, None)
    for transport, protocol, sock in (
        (endpoint._rtp, endpoint._rtp_protocol, sockets[0]),
        (endpoint._rtcp, endpoint._rtcp_protocol, sockets[1]),
    ):
        if transport is not None and protocol is not None:
            transport.close()
            waits.append(protocol.closed)
        elif sock is not None:
            sock.close()
    endpoint._rtp = endpoint._rtcp = None
    endpoint._sockets = None
    return waits
