"""The media relay: all endpoints of the process, how they are fed, and the 20 ms tick.

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

One task ticks every 20 ms for all conferences and held legs together, mixing every conference
in one batch (:func:`mix_batch`) and encoding each codec's frames in one table lookup.

The sockets are plain non-blocking sockets read by the loop's reader callbacks (one datagram
per call), not datagram transports: a transport's protocol call, context switch and write
buffer cost several microseconds per packet, and a relay has no use for buffering (a late
frame is a useless frame), so a send that would block is dropped and counted. A sweep every
``sweep_interval`` unlocks legs whose source went quiet (see :mod:`bridge.media.endpoint`),
sends RTCP reports and reports legs that have been silent for ``timeout_after`` (see
:mod:`bridge.media.silence`: a held leg only once its phone has shown that it sends RTCP).

Ports go back to the pool in :meth:`MediaRelay.release`. Creating, binding and closing two
sockets are six system calls per leg, so a relay made with ``reuse_after`` *parks* a released
pair instead of closing it: the parked pair drops whatever still arrives (a phone that keeps sending
after its BYE), and only once it has been parked for ``reuse_after`` seconds does a new endpoint
take it over, oldest first. That quarantine is what the back-of-the-queue order of the port
pool gives fresh binds. Parked pairs hold descriptors, so their number is capped, and they are
closed at once when a bind runs out of descriptors.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
import time
from collections import deque
from collections.abc import Iterable, Mapping

import numpy as np

from bridge.media import g711
from bridge.media.dtmf import event_packets
from bridge.media.endpoint import (
    MAX_DATAGRAM,
    DigitCallback,
    MediaEndpoint,
    RelayCounters,
    TimeoutCallback,
)
from bridge.media.mixer import FRAME_SAMPLES, FRAME_SECONDS, Mixer, MixMode, mix_batch
from bridge.media.ports import PortPool, PortPoolExhaustedError
from bridge.media.silence import media_silence
from bridge.media.tone import AudioSource, LoopSource, Samples

__all__ = [
    "Conference",
    "MediaEndpoint",
    "MediaRelay",
    "PortPoolExhaustedError",
    "RelayCounters",
]

log = logging.getLogger(__name__)

# Generated streams get source keys outside the 32-bit SSRC space of real senders.
_MIX_SOURCE = 1 << 32
_HOLD_SOURCE = (1 << 32) + 1
_MAX_TICK_BACKLOG = 5 * FRAME_SECONDS
_LATENESS_SAMPLES = 20000
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _ParkedPair:
    """A released endpoint's RTP/RTCP sockets, still bound and read, waiting to be reused."""

    __slots__ = ("parked_at", "port", "rtcp", "rtp")

    def __init__(
        self, port: int, rtp: socket.socket, rtcp: socket.socket, parked_at: float
    ) -> None:
        self.port = port
        self.rtp, self.rtcp = rtp, rtcp
        self.parked_at = parked_at


ResumeTo = MediaEndpoint | tuple["Conference", MixMode, MediaEndpoint | None] | None
"""What a held endpoint heard before the hold: a peer, a conference seat, or nothing."""


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
        lead_in: Samples | None = None,
    ) -> None:
        """``lead_in``: see :meth:`MediaEndpoint.lead_in`, taken before anyone was detached."""
        relay = self.relay
        relay._check_own(endpoint)
        if endpoint in self.mixer:
            self.mixer.set_mode(endpoint, mode, whisper_to=whisper_to)
            return
        relay._detach(endpoint)
        self.mixer.add(endpoint, mode, whisper_to=whisper_to, lead_in=lead_in)
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
        reuse_after: float | None = None,
        max_parked: int = 2048,
        timeout_after: float = 0.0,
        on_timeout: TimeoutCallback | None = None,
    ) -> None:
        self.host = host
        self.reuse_after = reuse_after
        """Seconds a released socket pair stays parked before reuse; None closes it instead."""
        self.max_parked = max_parked
        self.rtcp_interval = rtcp_interval
        """Mean seconds between our RTCP reports to each active leg (§6.2); 0 sends none."""
        self.pool = PortPool(port_min, port_max)
        self.on_digit = on_digit
        self.relatch_after = relatch_after
        self.timeout_after = timeout_after
        """Seconds without RTP or RTCP before a relayed leg, or a held leg whose phone sends
        RTCP, goes to ``on_timeout`` (see :func:`media_silence`); 0: never."""
        self.on_timeout = on_timeout
        self.counters = RelayCounters()
        self.tick_lateness: deque[float] = deque(maxlen=_LATENESS_SAMPLES)
        """Seconds each recent 20 ms tick ran after its due time (for metrics and benchmarks)."""
        self._endpoints: set[MediaEndpoint] = set()
        self._conferences: set[Conference] = set()
        self._holds: set[MediaEndpoint] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._parked: deque[_ParkedPair] = deque()
        self._closed = False

    @property
    def endpoints(self) -> frozenset[MediaEndpoint]:
        return frozenset(self._endpoints)

    @property
    def parked(self) -> int:
        """Released port pairs kept bound for reuse (see ``reuse_after``)."""
        return len(self._parked)

    # -- endpoints ----------------------------------------------------------------------

    def allocate(
        self, *, codec: int = g711.PCMU, telephone_event_pt: int | None = 101
    ) -> MediaEndpoint:
        """Bind an RTP/RTCP port pair and start reading it; raise
        :class:`PortPoolExhaustedError` if none is free.

        Synchronous, so the sans-IO call core can write the port into an SDP while handling
        one message: the ports are ours before the SDP naming them leaves.
        """
        if self._closed:
            raise RuntimeError("media relay is closed")
        loop = asyncio.get_running_loop()
        parked = self._parked
        quiet = parked and time.monotonic() - parked[0].parked_at >= (self.reuse_after or 0.0)
        # With no free pair left, the oldest parked pair is reused early: a call beats
        # the quarantine against a late packet of an ended call.
        if parked and (quiet or self.pool.free == 0):
            pair = parked.popleft()
            self.pool.unpark(pair.port)
            return self._adopt(pair.port, pair.rtp, pair.rtcp, codec, telephone_event_pt, loop)
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
            except OSError as exc:
                for sock in socks:
                    sock.close()
                self.pool.give_back(port)  # taken by another program: try the next pair
                if exc.errno in _OUT_OF_DESCRIPTORS and parked:
                    self._close_parked()  # their descriptors are freed at once
                continue
            return self._adopt(port, socks[0], socks[1], codec, telephone_event_pt, loop)
        raise PortPoolExhaustedError(f"no free RTP port pair ({self.pool.in_use} pairs in use)")

    def _adopt(
        self,
        port: int,
        rtp: socket.socket,
        rtcp: socket.socket,
        codec: int,
        telephone_event_pt: int | None,
        loop: asyncio.AbstractEventLoop,
    ) -> MediaEndpoint:
        endpoint = MediaEndpoint(
            self, host=self.host, port=port, codec=codec, telephone_event_pt=telephone_event_pt
        )
        endpoint._rtp_sock, endpoint._rtcp_sock = rtp, rtcp
        loop.add_reader(rtp.fileno(), endpoint._read_rtp)
        loop.add_reader(rtcp.fileno(), endpoint._read_rtcp)
        self._endpoints.add(endpoint)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = loop.create_task(self._sweep_loop())
        return endpoint

    def release(self, endpoint: MediaEndpoint) -> None:
        """Detach the endpoint and park its port pair for reuse (with ``reuse_after``) or close
        it; the ports go back to the pool. Safe to call more than once."""
        socks = self._retire(endpoint)
        if socks is None:
            return
        loop = asyncio.get_running_loop()
        if self.reuse_after is not None and len(self._parked) < self.max_parked:
            for sock in socks:
                loop.add_reader(sock.fileno(), self._drop_late, sock)
            self._parked.append(_ParkedPair(endpoint.port, *socks, time.monotonic()))
            self.pool.park(endpoint.port)
            return
        _close(loop, *socks)
        self.pool.give_back(endpoint.port)

    def export(self, endpoint: MediaEndpoint) -> tuple[socket.socket, socket.socket] | None:
        """Take an endpoint's sockets out of this relay, still bound, for another relay to
        :meth:`adopt` (media split over worker processes). Its port stays taken in this
        relay's pool until :meth:`reclaim`: the sockets live on elsewhere."""
        socks = self._retire(endpoint)
        if socks is not None:
            loop = asyncio.get_running_loop()
            for sock in socks:
                loop.remove_reader(sock.fileno())
        return socks

    def adopt(
        self,
        port: int,
        rtp: socket.socket,
        rtcp: socket.socket,
        *,
        codec: int,
        telephone_event_pt: int | None,
    ) -> MediaEndpoint:
        """A new endpoint on a bound socket pair another relay exported."""
        if self._closed:
            raise RuntimeError("media relay is closed")
        rtp.setblocking(False)
        rtcp.setblocking(False)
        loop = asyncio.get_running_loop()
        return self._adopt(port, rtp, rtcp, codec, telephone_event_pt, loop)

    def reclaim(self, port: int) -> None:
        """A port this relay exported has been closed wherever it went: it is free again."""
        self.pool.give_back(port)

    def _retire(self, endpoint: MediaEndpoint) -> tuple[socket.socket, socket.socket] | None:
        """Take the sockets away from an endpoint that is done; None if it was already."""
        if endpoint.closed:
            return None
        endpoint.closed = True
        self._detach(endpoint)
        self._endpoints.discard(endpoint)
        endpoint.unlock()  # parked, it must hear the hung-up phone's late packets to drop them
        rtp, rtcp = endpoint._rtp_sock, endpoint._rtcp_sock
        endpoint._rtp_sock = endpoint._rtcp_sock = None
        return None if rtp is None or rtcp is None else (rtp, rtcp)

    def _drop_late(self, sock: socket.socket) -> None:
        """A parked pair got a packet: the ended call's phone is still sending."""
        try:
            sock.recv(MAX_DATAGRAM)
        except OSError:
            return
        self.counters.late_after_release += 1

    def _close_parked(self) -> None:
        """Close every parked pair; each port returns to the pool at once."""
        loop = asyncio.get_running_loop()
        while self._parked:
            pair = self._parked.popleft()
            _close(loop, pair.rtp, pair.rtcp)
            self.pool.give_back(pair.port)

    def close(self) -> None:
        """Close every endpoint at once (shutdown) and return every port."""
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._ticker = self._sweeper = None
        self._close_parked()
        loop = asyncio.get_running_loop()
        for endpoint in list(self._endpoints):
            socks = self._retire(endpoint)
            if socks is not None:
                _close(loop, *socks)
                self.pool.give_back(endpoint.port)

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
        """Put endpoints in one conference; ``modes`` default to ``full``.

        When some of them already share a conference and it holds no one else, it grows
        instead: those already talking keep their playout buffers (and their modes, unless
        ``modes`` names them), so a supervisor or a third party joining costs them no gap,
        where a new conference would start every buffer empty again (two frames of silence).
        """
        members = list(endpoints)
        modes = modes or {}
        whisper_to = whisper_to or {}
        conference = self._growing(members)
        now = time.monotonic()
        lead_ins = {endpoint: endpoint.lead_in(now) for endpoint in members}
        for endpoint in members:
            if endpoint not in conference.mixer:
                conference.add(endpoint, MixMode.FULL, lead_in=lead_ins[endpoint])
        for endpoint, mode in modes.items():
            if endpoint in conference.mixer:
                conference.set_mode(endpoint, mode, whisper_to=whisper_to.get(endpoint))
        return conference

    def _growing(self, members: list[MediaEndpoint]) -> Conference:
        """The conference ``members`` already share, if it holds only members; else a new one."""
        for endpoint in members:
            self._check_own(endpoint)
        current = {e._conference for e in members if e._conference is not None}
        if len(current) == 1:
            (conference,) = current
            if set(conference.members) <= set(members):
                return conference
        return Conference(self)

    def play_hold(self, endpoint: MediaEndpoint, source: AudioSource | Samples) -> None:
        """The endpoint hears ``source`` (a tone, a looped WAV) instead of anyone.

        A source keeps its own position, so each held endpoint needs its own; samples (e.g.
        from :func:`~bridge.media.tone.load_wav`) can be shared and get a fresh loop each.
        """
        self._check_own(endpoint)
        if any(e._hold is source for e in self._holds if e is not endpoint):
            raise ValueError("this audio source already plays to another endpoint")
        if endpoint._hold is None:
            endpoint._quiet_since = None  # the media timeout's clock restarts with the hold
        resume_to = endpoint._resume_to if endpoint._hold is not None else self._feed_of(endpoint)
        self._detach(endpoint)
        endpoint._hold = source if not isinstance(source, np.ndarray) else LoopSource(source)
        endpoint._resume_to = resume_to
        endpoint.out.switch()
        self._holds.add(endpoint)
        self._ensure_ticker()

    def stop_hold(self, endpoint: MediaEndpoint) -> None:
        """End the hold: the endpoint hears again what it heard before :meth:`play_hold`.

        A hold is an interruption (a re-INVITE with ``sendonly``, an attended transfer's
        consultation), so the resume restores the peer or the conference seat, if it is still
        there: a peer that meanwhile got another feed, or a closed conference, is left alone
        and the endpoint hears nothing until it is connected again.
        """
        if endpoint._hold is None:
            return
        resume_to = endpoint._resume_to
        self._end_hold(endpoint)
        if endpoint.closed or resume_to is None:
            return
        if isinstance(resume_to, MediaEndpoint):
            peer = resume_to
            busy = peer._peer is not None or peer._conference is not None or peer._hold is not None
            if not (peer.closed or busy):
                self.connect(endpoint, peer)
            return
        conference, mode, whisper_to = resume_to
        if conference in self._conferences and endpoint not in conference.mixer:
            if mode is MixMode.WHISPER and whisper_to not in conference.mixer:
                mode, whisper_to = MixMode.LISTEN, None  # whom it whispered to has left
            conference.add(endpoint, mode, whisper_to=whisper_to)

    def _feed_of(self, endpoint: MediaEndpoint) -> ResumeTo:
        if endpoint._peer is not None:
            return endpoint._peer
        conference = endpoint._conference
        if conference is not None:
            mode, whisper_to = conference.mixer.mode_of(endpoint)
            return conference, mode, whisper_to if isinstance(whisper_to, MediaEndpoint) else None
        return None

    def _end_hold(self, endpoint: MediaEndpoint) -> None:
        endpoint._hold = None
        endpoint._resume_to = None
        endpoint._quiet_since = None  # ... and with its end
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
                endpoint.send_event(event, start, marker=index == 0)
                await asyncio.sleep(FRAME_SECONDS)
            await asyncio.sleep(gap_ms / 1000)

    async def _sweep_loop(self) -> None:
        while self._endpoints:
            await asyncio.sleep(self.sweep_interval)
            self.sweep(time.monotonic(), time.time())

    @property
    def sweep_interval(self) -> float:
        """Seconds between sweeps: fine enough for ``relatch_after`` and the RTCP schedule."""
        interval = min(0.5, max(0.05, self.relatch_after / 2))
        if self.rtcp_interval > 0:
            interval = min(interval, self.rtcp_interval / 4)
        return interval

    def sweep(self, now: float, wall: float) -> None:
        """Unlock legs whose source went quiet; send the RTCP reports that are due; report
        legs silent for ``timeout_after`` to ``on_timeout`` (see :func:`media_silence`).

        A locked leg hears only its latched source, so once that has been quiet for
        ``relatch_after`` it is unlocked and a phone that moved (NAT rebinding, restart) is
        heard again. Reports are due at randomised times of 0.5-1.5 ``rtcp_interval`` per leg
        (§6.3.1), so a thousand legs cost a few reports per sweep rather than one burst that
        would delay the 20 ms tick.
        """
        interval, quiet_after, timeout = self.rtcp_interval, self.relatch_after, self.timeout_after
        silent: list[MediaEndpoint] = []
        for endpoint in list(self._endpoints):
            last = endpoint.last_received_at
            if endpoint._locked and (last is None or now - last > quiet_after):
                endpoint.unlock()
            if timeout > 0 and self._silent(endpoint, now, timeout):
                silent.append(endpoint)
            if interval <= 0:
                continue
            due = endpoint._next_report_at
            if due is None:
                endpoint._next_report_at = now + interval * random.uniform(0.5, 1.5)
            elif due <= now:
                endpoint._next_report_at = now + interval * random.uniform(0.5, 1.5)
                if last is not None or endpoint.stats.packets_sent:
                    endpoint.send_rtcp(endpoint.rtcp_report(wall, now))
        for endpoint in silent:
            if self.on_timeout is not None and not endpoint.closed:  # a report may end the call
                try:
                    self.on_timeout(endpoint)
                except Exception:
                    log.exception("media timeout callback failed for media port %d", endpoint.port)

    def _silent(self, endpoint: MediaEndpoint, now: float, timeout: float) -> bool:
        """Whether the leg has sent neither RTP nor RTCP for ``timeout``, once per spell.

        Watched: a relayed leg (a peer or a conference), and a held leg once its phone has
        sent RTCP during the call; a held leg whose phone never sent RTCP is exempt, and so is
        a leg relayed to no one. :func:`media_silence` decides; this keeps its clock.
        """
        verdict = media_silence(
            relayed=endpoint._peer is not None or endpoint._conference is not None,
            held=endpoint in self._holds,
            last_rtp=endpoint.last_received_at,
            last_rtcp=endpoint.last_rtcp_at,
            since=endpoint._quiet_since,
            reported=endpoint._quiet_reported,
            now=now,
            timeout=timeout,
        )
        endpoint._quiet_since, endpoint._quiet_reported = verdict.since, verdict.reported
        return verdict.due

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
            self._end_hold(endpoint)


def _close(loop: asyncio.AbstractEventLoop, *socks: socket.socket) -> None:
    for sock in socks:
        loop.remove_reader(sock.fileno())
        sock.close()
