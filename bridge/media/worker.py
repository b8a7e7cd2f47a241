"""A media worker: one :class:`MediaRelay` in a process of its own, driven over a control socket.

Theory of operation. The bridge starts ``python -m bridge.media.worker SETTINGS FD`` once per
``[media] workers``. The worker binds a stock of port pairs in its share of the RTP range and
reports their ports ``ready``; the bridge hands them to calls and names them, by port, in the
commands below. What the relay notices goes back as reports.

    command                      effect                                  report
    take port                    a stock pair becomes a call's leg       ready (the stock refill)
    point port host rport pt te  where the leg's phone is, its codec and
                                 telephone-event type (te absent: kept)
    connect a b / conference ps  feeds, as MediaRelay.connect/conference
    mode port mode whisper       a conference member's audibility
    hold port / unhold port      hold tone or music, and back
    private_keys port            the leg's digits are detected, not relayed
    release port                 parked for reuse (or closed if foreign) freed (foreign ports)
    export port                  sockets and stream state leave          exported (+ 2 fds)
    adopt port state (+ 2 fds)   a leg exported by another worker
    reclaim port                 an exported port was closed elsewhere
    (relay events)                                                        digit, timeout, stats
    (once a second)                                                       counters

A command naming a port the worker does not hold is ignored: after a worker died and was
replaced, the bridge may still speak of legs that are gone. The worker ignores SIGINT and
SIGTERM, since its life is the bridge's: it keeps relaying while the bridge drains calls on
shutdown, and exits when the control socket closes (the bridge stopped, or died: media without
signalling is no call).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from bridge.logging_setup import setup_logging
from bridge.media.channel import ControlChannel
from bridge.media.dispatch import MAX_BATCH, Item, figures_of
from bridge.media.dtmf import DtmfDigit
from bridge.media.endpoint import MediaEndpoint
from bridge.media.mixer import MixMode
from bridge.media.ports import PortPoolExhaustedError
from bridge.media.relay import MediaRelay
from bridge.media.tone import AudioSource, Samples, ToneSource, load_wav
from bridge.process import apply_realtime_priority, event_loop_runner, settle_heap

log = logging.getLogger("bridge.media.worker")

STOCK = 64
"""Port pairs kept bound ahead of demand: a burst of this many new legs needs no wait."""
REPORT_INTERVAL = 1.0
"""Seconds between two RTP statistics reports about a leg."""
REPORT_SLICES = 10
"""Each interval is cut into this many slices, each reporting the legs of its share of the
ports: a thousand legs' figures at once would hold the relay's loop for milliseconds, and every
stream would hear that as jitter."""
_KEEP = -1
"""No payload type (they are 0-127): a command that did not name one."""
_STATE = (
    "codec",
    "telephone_event_pt",
    "remote",
    "remote_rtcp",
    "swallow_dtmf",
    "stats",
    "out",
    "last_received_at",
    "last_rtcp_at",
)
"""What of an endpoint moves with it: where its phone is, its figures, and its outgoing stream
identity (so the phone sees one SSRC with continuous sequence numbers across the move)."""


class Worker:
    def __init__(self, settings: dict[str, Any], control: socket.socket) -> None:
        self.relay = MediaRelay(
            settings["host"],
            settings["port_min"],
            settings["port_max"],
            reuse_after=settings["reuse_after"],
            timeout_after=settings["timeout_after"],
            on_digit=self._on_digit,
            on_timeout=self._on_timeout,
        )
        self.hold_audio: str | None = settings["hold_audio"]
        self._hold_samples: Samples | None = None
        self.stock: dict[int, MediaEndpoint] = {}
        self.legs: dict[int, MediaEndpoint] = {}
        self._reported: dict[int, tuple[int, int]] = {}
        self._reported_counters: dict[str, int] = {}
        self._outbox: list[Item] = []
        self._flush_soon = False
        self.done = asyncio.Event()
        self.channel = ControlChannel(control, self._on_message, self.done.set)
        self._commands: dict[str, Callable[..., None]] = {
            "take": self._take,
            "point": self._point,
            "connect": self._connect,
            "conference": self._conference,
            "mode": self._mode,
            "hold": self._hold,
            "unhold": self._unhold,
            "private_keys": self._private_keys,
            "release": self._release,
            "export": self._export,
            "reclaim": self.relay.reclaim,
        }

    # -- control ------------------------------------------------------------------------

    def _on_message(self, items: list[Item], fds: list[int]) -> None:
        for item in items:
            op, *args = item
            try:
                if op == "adopt":
                    self._adopt(*args, fds=fds)
                    fds = []
                else:
                    self._commands[op](*args)
            except Exception:
                log.exception("media command %s failed", op)
        for fd in fds:
            socket.close(fd)
        self.refill()
        self.flush()

    def _report(self, item: Item) -> None:
        self._outbox.append(item)
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_soon = False
        items, self._outbox = self._outbox, []
        for start in range(0, len(items), MAX_BATCH):
            self.channel.send(items[start : start + MAX_BATCH])

    def refill(self) -> None:
        """Keep ``STOCK`` pairs bound; report the new ones."""
        ready: list[int] = []
        while len(self.stock) < STOCK:
            try:
                endpoint = self.relay.allocate()
            except (PortPoolExhaustedError, OSError):
                break
            self.stock[endpoint.port] = endpoint
            ready.append(endpoint.port)
        if ready:
            self._report(("ready", ready))

    def _leg(self, port: int) -> MediaEndpoint | None:
        endpoint = self.legs.get(port)
        if endpoint is None:
            log.debug("media command for port %d, which this worker does not hold", port)
        return endpoint

    # -- commands -----------------------------------------------------------------------

    def _take(self, port: int) -> None:
        endpoint = self.stock.pop(port, None)
        if endpoint is None:
            log.error("port %d was given out but is not in stock", port)
            self._report(("timeout", port))
            return
        self.legs[port] = endpoint

    def _point(
        self,
        port: int,
        host: str,
        rport: int,
        payload_type: int | None,
        telephone_event_pt: int | None = _KEEP,
    ) -> None:
        """A "point" without its telephone-event type (from a bridge that predates it)
        leaves the leg's as it is."""
        endpoint = self._leg(port)
        if endpoint is not None:
            endpoint.set_remote(host, rport)
            if payload_type is not None:
                endpoint.codec = payload_type
            if telephone_event_pt != _KEEP:
                endpoint.telephone_event_pt = telephone_event_pt

    def _connect(self, a: int, b: int) -> None:
        first, second = self._leg(a), self._leg(b)
        if first is not None and second is not None:
            self.relay.connect(first, second)

    def _conference(self, ports: list[int]) -> None:
        members = [e for e in map(self._leg, ports) if e is not None]
        if members:
            self.relay.conference(members)

    def _mode(self, port: int, mode: str, whisper: int | None) -> None:
        endpoint = self._leg(port)
        if endpoint is None or endpoint.conference is None:
            return
        whisper_to = None if whisper is None else self.legs.get(whisper)
        endpoint.conference.set_mode(endpoint, MixMode(mode), whisper_to=whisper_to)

    def _hold(self, port: int) -> None:
        endpoint = self._leg(port)
        if endpoint is not None:
            self.relay.play_hold(endpoint, self._hold_source())

    def _hold_source(self) -> AudioSource | Samples:
        if self.hold_audio:
            if self._hold_samples is None:
                self._hold_samples = load_wav(self.hold_audio)
            return self._hold_samples
        return ToneSource()

    def _unhold(self, port: int) -> None:
        endpoint = self._leg(port)
        if endpoint is not None:
            self.relay.stop_hold(endpoint)

    def _private_keys(self, port: int) -> None:
        endpoint = self._leg(port)
        if endpoint is not None:
            endpoint.swallow_dtmf = True

    def _release(self, port: int) -> None:
        endpoint = self.legs.pop(port, None)
        self._reported.pop(port, None)
        if endpoint is None:
            return
        if self.relay.pool.owns(port):
            self.relay.release(endpoint)
            return
        socks = self.relay.export(endpoint)  # another worker's port: it goes home
        for sock in socks or ():
            sock.close()
        self._report(("freed", port))

    def _export(self, port: int) -> None:
        endpoint = self.legs.pop(port, None)
        self._reported.pop(port, None)
        socks = None if endpoint is None else self.relay.export(endpoint)
        self.flush()  # what was reported before goes first
        if endpoint is None or socks is None:
            self.channel.send([("exported", port, None)])
            return
        state = {name: getattr(endpoint, name) for name in _STATE}
        fds = tuple(sock.detach() for sock in socks)
        self.channel.send([("exported", port, state)], fds)

    def _adopt(self, port: int, state: dict[str, Any] | None, *, fds: list[int]) -> None:
        if state is None or len(fds) != 2:
            for fd in fds:
                socket.close(fd)
            return
        rtp, rtcp = (socket.socket(fileno=fd) for fd in fds)
        endpoint = self.relay.adopt(
            port, rtp, rtcp, codec=state["codec"], telephone_event_pt=state["telephone_event_pt"]
        )
        for name in _STATE:
            setattr(endpoint, name, state[name])
        self.legs[port] = endpoint

    # -- reports ------------------------------------------------------------------------

    def _on_digit(self, endpoint: MediaEndpoint, digit: DtmfDigit) -> None:
        self._report(("digit", endpoint.port, digit))

    def _on_timeout(self, endpoint: MediaEndpoint) -> None:
        self._report(("timeout", endpoint.port))

    def report_stats(self, slice_: int) -> None:
        """RFC 3550 figures of the legs in ``slice_`` whose counts moved since their last
        report."""
        changed: list[tuple[int, tuple[Any, ...]]] = []
        for port, endpoint in self.legs.items():
            if port // 2 % REPORT_SLICES != slice_:
                continue
            stats = endpoint.stats
            counts = (stats.packets_received, stats.packets_sent)
            if self._reported.get(port) != counts:
                self._reported[port] = counts
                changed.append((port, figures_of(stats.snapshot())))
        for start in range(0, len(changed), MAX_BATCH):
            self._report(("stats", changed[start : start + MAX_BATCH]))

    def report_counters(self) -> None:
        """The relay's counters (``RelayCounters``, since this worker started), if they moved:
        the bridge sums every worker's into its metrics."""
        counters = self.relay.counters.as_dict()
        if counters != self._reported_counters:
            self._reported_counters = counters
            self._report(("counters", counters))

    async def run(self) -> None:
        self.refill()
        if not self.stock:
            self._report(("ready", []))  # alive, though every port of its share is taken
        self.flush()
        settle_heap()
        ticks = 0
        while not self.done.is_set():
            try:
                await asyncio.wait_for(self.done.wait(), REPORT_INTERVAL / REPORT_SLICES)
            except TimeoutError:
                self.report_stats(ticks % REPORT_SLICES)
                if ticks % REPORT_SLICES == 0:
                    self.report_counters()
                self.refill()  # after a range that was exhausted
                ticks += 1
        self.relay.close()


async def _serve(settings: dict[str, Any], fd: int) -> None:
    worker = Worker(settings, socket.socket(fileno=fd))
    await worker.run()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    settings = json.loads(args[0])
    setup_logging(settings["log_level"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    apply_realtime_priority(settings["realtime_priority"])
    event_loop_runner()(_serve(settings, int(args[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
