"""How long this machine itself stops running its most urgent process, during a measurement.

One process per CPU, pinned to it, at SCHED_FIFO one step above the relay, sleeps 1 ms at a
time and keeps every wake-up that came later than ``threshold``. Nothing of lower priority can
run on that CPU while the probe cannot, so a stall it sees (the virtual machine paused by its
host, an interrupt storm) held up the relay as well: a delay no relay code could avoid. The
media bench sets each packet's trip against these stalls, so a run's jitter figure says how
much of it the machine caused.

Costs about 1 % of each CPU (1,000 short wake-ups a second); needs CAP_SYS_NICE, like the
relay's own real-time priority.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np

PERIOD = 0.001


@dataclass(frozen=True, slots=True, kw_only=True)
class Stall:
    cpu: int
    began: float
    """time.time() when the probe should have woken."""
    ended: float
    """time.time() when it did."""

    @property
    def length_ms(self) -> float:
        return (self.ended - self.began) * 1000


def _probe(conn: Connection, cpu: int, priority: int, threshold: float) -> None:
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    stalls: list[Stall] = []
    conn.send("ready")
    while not conn.poll():
        due = time.time() + PERIOD
        time.sleep(PERIOD)
        woke = time.time()
        if woke - due > threshold:
            stalls.append(Stall(cpu=cpu, began=due, ended=woke))
    conn.send(stalls)


class StallProbe:
    """Start before the measured window, :meth:`stop` after it; stalls of all CPUs."""

    def __init__(self, priority: int, threshold: float = 0.002) -> None:
        ctx = mp.get_context("fork")
        self._conns: list[Connection] = []
        self._processes: list[mp.process.BaseProcess] = []
        for cpu in sorted(os.sched_getaffinity(0)):
            parent, child = ctx.Pipe()
            process = ctx.Process(
                target=_probe, args=(child, cpu, priority, threshold), daemon=True
            )
            process.start()
            self._conns.append(parent)
            self._processes.append(process)
        for conn in self._conns:
            if not conn.poll(10) or conn.recv() != "ready":
                self.stop()
                raise RuntimeError("stall probe did not start")

    def stop(self) -> list[Stall]:
        stalls: list[Stall] = []
        for conn in self._conns:
            conn.send("stop")
        for conn, process in zip(self._conns, self._processes, strict=True):
            if conn.poll(5):
                stalls.extend(conn.recv())
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
        return sorted(stalls, key=lambda stall: stall.began)


def during_stalls(sent: np.ndarray, arrived: np.ndarray, stalls: list[Stall]) -> np.ndarray:
    """Which packets were on their way (sent, not yet arrived) while some CPU stalled."""
    hit = np.zeros(len(sent), dtype=bool)
    for stall in stalls:
        hit |= (sent < stall.ended) & (arrived > stall.began)
    return hit
