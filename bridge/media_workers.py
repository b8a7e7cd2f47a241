"""Media in worker processes (``[media] workers = N``) behind the call core's synchronous Media.

One Python process relaying 50,000 packets/s needs most of a core by itself, and every call's
sockets count against that one process's descriptor limit. With workers, the bridge process
keeps signalling and each worker relays the calls of its share of the RTP port range; the
bookkeeping is :mod:`bridge.media.dispatch`, the worker :mod:`bridge.media.worker`.

A worker that dies is started again (at most ``MAX_RESTARTS`` times a minute); the calls it
carried are told their media is gone, as after a media timeout, so no caller is left in silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import bridge
from bridge.calls.ports import MediaUnavailable, MixMode
from bridge.config import MediaConfig
from bridge.media.channel import ControlChannel, channel_pair
from bridge.media.dispatch import (
    DigitDetected,
    MediaDispatch,
    MediaEvent,
    NoMediaPortError,
    WorkerLeg,
    split_ports,
)
from bridge.media_adapter import REUSE_AFTER
from bridge.media_figures import MediaFigures

log = logging.getLogger("bridge.media.workers")

START_TIMEOUT = 20.0
"""Seconds a worker may take to start and report its first ports."""
STOP_TIMEOUT = 5.0
MAX_RESTARTS = 5
"""Restarts of one worker within a minute before it is left down (a crash loop)."""


class WorkerMedia:
    def __init__(
        self,
        config: MediaConfig,
        *,
        on_digit: Callable[[WorkerLeg, Any], None],
        on_timeout: Callable[[WorkerLeg, str], None],
        realtime_priority: int = 0,
        log_level: str = "info",
    ) -> None:
        self.config = config
        self.on_digit = on_digit
        self.on_timeout = on_timeout
        self.realtime_priority = realtime_priority
        self.log_level = log_level
        self.ranges = split_ports(config.port_min, config.port_max, config.workers)
        self.dispatch = MediaDispatch(config.host, self.ranges)
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * len(self.ranges)
        self._channels: list[ControlChannel | None] = [None] * len(self.ranges)
        self._restarts: list[deque[float]] = [deque() for _ in self.ranges]
        self.worker_restarts = 0
        """Workers started again after dying, since the bridge started."""
        self._started: list[asyncio.Event] = [asyncio.Event() for _ in self.ranges]
        self._flush_soon = False
        self._closing = False
        self._reaping: set[asyncio.Task[None]] = set()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p is not None and p.poll() is None]

    async def start(self) -> None:
        cores = os.cpu_count() or 1
        if self.realtime_priority and len(self.ranges) >= cores:
            # Measured: two SCHED_RR workers on two cores left everything else (signalling
            # included) only the kernel's 5 % real-time reserve whenever media was busy.
            log.warning(
                "%d media workers at real-time priority on %d CPUs can take every core from "
                "the signalling: use at most %d workers with realtime_priority",
                len(self.ranges),
                cores,
                max(1, cores - 1),
            )
        for index in range(len(self.ranges)):
            self._spawn(index)
        for index, started in enumerate(self._started):
            try:
                await asyncio.wait_for(started.wait(), START_TIMEOUT)
            except TimeoutError:
                await self.close()
                raise RuntimeError(f"media worker {index} did not start") from None

    def _spawn(self, index: int) -> None:
        low, high = self.ranges[index]
        settings = {
            "host": self.config.host,
            "port_min": low,
            "port_max": high,
            "reuse_after": REUSE_AFTER,
            "timeout_after": self.config.timeout_s,
            "hold_audio": self.config.hold_audio,
            "realtime_priority": self.realtime_priority,
            "log_level": self.log_level,
        }
        ours, theirs = channel_pair()
        with theirs:
            command = [sys.executable, "-m", "bridge.media.worker", json.dumps(settings)]
            self.processes[index] = subprocess.Popen(
                [*command, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=_worker_environment(),
            )
        self._started[index].clear()
        self._channels[index] = ControlChannel(
            ours, partial(self._on_message, index), partial(self._on_lost, index)
        )
        log.info("media worker %d started (ports %d-%d)", index, low, high - 1)

    def media_figures(self) -> MediaFigures:
        """For ``/metrics``: the relay counters are the workers' latest reports (once a
        second), summed with those of workers that died."""
        dispatch = self.dispatch
        return MediaFigures(
            legs=len(dispatch.legs),
            counters=dispatch.counters(),
            workers_alive=sum(dispatch.alive),
            legs_per_worker=tuple(dispatch.load),
            ports_ready=sum(len(ready) for ready in dispatch.ready),
            worker_restarts=self.worker_restarts,
            moves=dispatch.moves,
        )

    # -- the call core's Media ----------------------------------------------------------

    def allocate(self, near: WorkerLeg | None = None) -> WorkerLeg:
        try:
            leg = self.dispatch.allocate(near)
        except NoMediaPortError as exc:
            raise MediaUnavailable(str(exc)) from exc
        self._flush_later()
        return leg

    def point(
        self,
        leg: WorkerLeg,
        host: str,
        port: int,
        payload_type: int | None,
        *,
        telephone_event_pt: int | None,
    ) -> None:
        self.dispatch.point(leg, host, port, payload_type, telephone_event_pt=telephone_event_pt)
        self._flush_later()

    def connect(self, a: WorkerLeg, b: WorkerLeg) -> None:
        self.dispatch.connect(a, b)
        self._flush_later()

    def hold(self, leg: WorkerLeg) -> None:
        self.dispatch.hold(leg)
        self._flush_later()

    def unhold(self, leg: WorkerLeg) -> None:
        self.dispatch.unhold(leg)
        self._flush_later()

    def private_keys(self, leg: WorkerLeg) -> None:
        self.dispatch.private_keys(leg)
        self._flush_later()

    def conference(self, legs: list[WorkerLeg]) -> None:
        self.dispatch.conference(legs)
        self._flush_later()

    def set_mode(self, leg: WorkerLeg, mode: MixMode, whisper_to: WorkerLeg | None = None) -> None:
        self.dispatch.set_mode(leg, mode, whisper_to)
        self._flush_later()

    def release(self, leg: WorkerLeg) -> None:
        self.dispatch.release(leg)
        self._flush_later()

    # -- control traffic ----------------------------------------------------------------

    def _flush_later(self) -> None:
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Send what the core's media calls of this loop iteration asked of the workers."""
        self._flush_soon = False
        for message in self.dispatch.take_outgoing():
            channel = self._channels[message.worker]
            if channel is None:
                _close_fds(message.fds)
                continue
            channel.send(message.items, message.fds)

    def _on_message(self, index: int, items: list[Any], fds: list[int]) -> None:
        events = self.dispatch.receive(index, items, fds)
        self._close_unused()
        if self.dispatch.alive[index]:
            self._started[index].set()
        self._deliver(events)
        self.flush()

    def _close_unused(self) -> None:
        _close_fds(self.dispatch.unused_fds)
        self.dispatch.unused_fds.clear()

    def _deliver(self, events: list[MediaEvent]) -> None:
        for event in events:
            try:
                if isinstance(event, DigitDetected):
                    self.on_digit(event.leg, event.digit)
                else:
                    log.warning("media of port %d lost: %s", event.leg.port, event.reason)
                    self.on_timeout(event.leg, event.reason)
            except Exception:
                log.exception("media event handler failed for port %d", event.leg.port)

    def _on_lost(self, index: int) -> None:
        """The worker's control socket closed: it exited or crashed."""
        self._channels[index] = None
        if self._closing:
            return
        process = self.processes[index]
        if process is not None:
            self._reap(index, process)
        self._deliver(self.dispatch.worker_lost(index))
        self._close_unused()
        self.flush()
        restarts = self._restarts[index]
        now = time.monotonic()
        while restarts and now - restarts[0] > 60:
            restarts.popleft()
        if len(restarts) >= MAX_RESTARTS:
            log.critical("media worker %d keeps failing: left down", index)
            return
        restarts.append(now)
        self.worker_restarts += 1
        self._spawn(index)

    def _reap(self, index: int, process: subprocess.Popen[bytes]) -> None:
        """Collect the dead worker's exit status (its socket may close a moment before)."""

        async def wait() -> None:
            status = await asyncio.to_thread(process.wait)
            log.error(
                "media worker %d (pid %d) stopped, exit status %s", index, process.pid, status
            )

        task = asyncio.get_running_loop().create_task(wait())
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def close(self) -> None:
        """Stop every worker: closing its control socket is its signal to finish."""
        self._closing = True
        for index, channel in enumerate(self._channels):
            if channel is not None:
                channel.close()
                self._channels[index] = None
        for process in self.processes:
            if process is None:
                continue
            if process.poll() is not None:
                continue
            try:
                await asyncio.to_thread(process.wait, STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.error("media worker pid %d did not stop: killed", process.pid)
                process.kill()
                await asyncio.to_thread(process.wait)
        if self._reaping:
            await asyncio.wait(self._reaping, timeout=STOP_TIMEOUT)


def _worker_environment() -> dict[str, str]:
    """The bridge's environment, with this very ``bridge`` package first on the path: a worker
    must run the same code as the bridge that commands it, wherever it was started from."""
    env = dict(os.environ)
    root = str(Path(bridge.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _close_fds(fds: tuple[int, ...] | list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
