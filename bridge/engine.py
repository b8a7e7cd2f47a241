"""Wires the sans-IO core to the world: sockets, the timer, media, storage and the sidecar.

The B2BUA core never sees asyncio. The engine feeds it every frame with ``loop.time()``, sends
whatever it queued, and keeps exactly one timer armed at the core's next deadline, rounded up to
``TIMER_SLACK``: under load every call has several transaction timers a few milliseconds apart,
and one wake-up per slack period serves them all instead of one wake-up each. SIP timers are in
hundreds of milliseconds (T1 = 500 ms), so 10 ms late is well within what peers tolerate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import sys
from collections.abc import Callable
from typing import Any

from bridge import native
from bridge.calls.admission import Admission
from bridge.calls.b2bua import B2BUA
from bridge.calls.call import CallEvent
from bridge.config import Config, ConfigError, load_config
from bridge.logging_setup import setup_logging
from bridge.media.dtmf import DtmfDigit
from bridge.media_adapter import RelayMedia
from bridge.media_workers import WorkerMedia
from bridge.process import apply_realtime_priority, event_loop_runner, settle_heap
from bridge.routing import PlanRouting
from bridge.seats import SeatAuthority
from bridge.sip.transaction import TransactionLayer
from bridge.tickets.errors import StoreUnavailable, StoreVersionError
from bridge.transport import SipTransport

log = logging.getLogger("bridge.engine")

TIMER_SLACK = 0.01
"""Seconds by which a core timer may fire late so that nearby timers share one wake-up."""


class Engine:
    """One bridge process: SIP transport, B2BUA core, media relay, dial plan, sidecar."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.transport = SipTransport(
            self._on_frame,
            max_size=config.sip.max_message_bytes,
            on_error=self._on_transport_error,
        )
        self.routing = PlanRouting(config.resolve(config.dialplan.path))
        self.seats = SeatAuthority(config.registrar)
        self.routing.seat_lookup = self.seats.destinations
        self.seats.platform_of = self.routing.seat_platform
        self.media: RelayMedia | WorkerMedia
        if config.media.workers:
            self.media = WorkerMedia(
                config.media,
                on_digit=self._on_digit,
                on_timeout=self._on_media_timeout,
                realtime_priority=config.scheduling.realtime_priority,
                log_level=config.log.level,
            )
        else:
            self.media = RelayMedia(
                config.media, on_digit=self._on_digit, on_timeout=self._on_media_timeout
            )
        self.b2bua: B2BUA | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_soon = False
        self.event_listeners: list[Any] = []
        self.flush_listeners: list[Callable[[], None]] = []
        """Called after every batch of core work, to collect what the core queued."""
        self.closed = asyncio.Event()
        self.idle = asyncio.Event()
        """Set whenever no call is in progress: what a graceful shutdown waits for."""

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        host, port = self.config.sip.address
        await self.transport.start(host, port)
        await self.media.start()
        t1 = self.config.sip.t1_ms / 1000
        self.b2bua = B2BUA(
            local=self.transport.local,
            advertised_host=self.config.sip.public_host or self.transport.local[0],
            routing=self.routing,
            media=self.media,
            transactions=TransactionLayer(t1=t1),
            user_agent=self.config.sip.user_agent,
            authenticate_seat=self.seats.authenticate_invite,
            handle_register=self.seats.handle_register,
            admission=Admission(
                max_calls=self.config.sip.max_calls, max_call_rate=self.config.sip.max_call_rate
            ),
        )
        log.info("SIP listening on %s:%d (UDP+TCP)", *self.transport.local)

    @property
    def core(self) -> B2BUA:
        assert self.b2bua is not None, "engine not started"
        return self.b2bua

    def now(self) -> float:
        """The core's clock: the event loop's monotonic time."""
        assert self._loop is not None
        return self._loop.time()

    def _on_frame(self, data: bytes, source: tuple[str, int], transport: str) -> None:
        core = self.b2bua
        if core is None:
            return
        try:
            core.receive(data, source, transport, self.now())
        except Exception:
            # A bug triggered by one message must not stop the service for everyone else.
            log.exception("unhandled error on a %s frame from %s", transport, source[0])
        self._flush_later()

    def _on_transport_error(self, destination: tuple[str, int], transport: str) -> None:
        """A destination the transport could not reach: its transactions fail now, so an
        INVITE goes on to the next destination or fails its caller at once (RFC 3261 §18.4)."""
        core = self.b2bua
        if core is None:
            return
        try:
            core.transport_error(destination, transport, self.now())
        except Exception:
            log.exception(
                "unhandled error on a %s transport error to %s", transport, destination[0]
            )
        self._flush_later()

    def _flush_later(self) -> None:
        if not self._flush_soon:
            # Under load the loop hands over many datagrams per wake-up: flush once after all
            # of them (sends keep their order), not after each one.
            self._flush_soon = True
            assert self._loop is not None
            self._loop.call_soon(self._flush_frames)

    def _flush_frames(self) -> None:
        self._flush_soon = False
        self.flush()

    def _on_digit(self, endpoint: object, digit: DtmfDigit) -> None:
        self.core.on_digit(endpoint, digit.digit, self.now())
        self.flush()

    def _on_media_timeout(self, endpoint: object, reason: str = "media timeout") -> None:
        self.core.media_timeout(endpoint, self.now(), reason)
        self.flush()

    def flush(self) -> None:
        core = self.core
        for out in core.take_outgoing():
            self.transport.send(out.data, out.destination, out.transport, out.fallback)
        events = core.take_events()
        if events:
            self._publish(events)
        for listener in self.flush_listeners:
            listener()
        if core.calls:
            self.idle.clear()
        else:
            self.idle.set()
        self._arm_timer()

    def _publish(self, events: list[CallEvent]) -> None:
        for listener in self.event_listeners:
            try:
                listener(events)
            except Exception:
                log.exception("event listener failed")

    def _arm_timer(self) -> None:
        deadline = self.core.next_deadline()
        if deadline is None:
            return
        deadline = math.ceil(deadline / TIMER_SLACK) * TIMER_SLACK
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.core.handle_timers(self.now())
        except Exception:
            log.exception("unhandled error in timers")
        self.flush()

    async def drain(self, grace: float) -> None:
        """Stop taking calls; let calls in progress end by themselves up to ``grace`` seconds,
        then hang up what is left and wait briefly for the BYEs to be answered."""
        core = self.core
        core.accepting = False
        self.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle.wait(), grace)
        for call_id in list(core.calls):
            core.hangup(call_id, self.now(), reason="shutdown")
        self.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle.wait(), 2.0)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await self.transport.close()
        await self.media.close()
        self.closed.set()


async def serve(config: Config, *, ready: asyncio.Event | None = None) -> None:
    engine = Engine(config)
    await engine.start()
    from bridge.service import Service

    service = Service(engine, config)
    try:
        await service.start()
    except BaseException:
        await service.close()
        await engine.close()
        raise
    settle_heap()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, service.reload_dialplan_from_signal)
    log.info(
        "ready: SIGHUP reloads the dial plan, SIGTERM/SIGINT stop gracefully (call core %s)",
        "compiled" if native.active() else "as Python",
    )
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("shutting down: no new calls, grace %.0fs", config.shutdown.grace_s)
    await engine.drain(config.shutdown.grace_s)
    await service.close()
    await engine.close()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(sig)


def run_service(config_path: str) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    setup_logging(config.log.level)
    apply_realtime_priority(config.scheduling.realtime_priority)
    runner = event_loop_runner()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            runner(serve(config))
    except (StoreUnavailable, StoreVersionError) as exc:
        # Nothing to debug in a traceback: the operator fixes the address, password or release.
        print(f"bridge: {exc.detail}", file=sys.stderr)
        return 1
    return 0
