"""Process-wide settings shared by the bridge and its media workers: collection, scheduling,
event loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from typing import Any

log = logging.getLogger("bridge.process")

GC_THRESHOLDS = (20_000, 20, 20)
"""Young-generation collections every 20,000 net allocations instead of 700: each call makes
thousands of short-lived objects (messages, headers, events) that reference counting frees, and
frequent young collections were several percent of a call's CPU."""


def settle_heap() -> None:
    """End of start-up: what it built (config, dial plan, modules, ~100,000 objects) lives as
    long as the process, so keep it out of every later collection, and collect the young
    generation less often. A full collection of that heap stalls the loop for 20-30 ms:
    every relayed stream would hear it as a gap."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def apply_realtime_priority(priority: int) -> None:
    """Put this process (and the threads it starts later) in SCHED_RR at ``priority``.

    A relay at 70 % of a core keeps up only while it has that core: a few milliseconds of
    some other process running instead come out as jitter on every stream at once. The
    kernel still keeps 5 % of each second for other work (sched_rt_runtime_us), so a bug
    cannot lock the machine. Refused without CAP_SYS_NICE: said once, then normal scheduling.
    """
    if priority <= 0:
        return
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(priority))
    except (OSError, AttributeError) as exc:
        log.warning(
            "real-time priority %d refused (%s): running with normal scheduling",
            priority,
            getattr(exc, "strerror", None) or exc,
        )
        return
    log.info("running at SCHED_RR real-time priority %d", priority)


def event_loop_runner() -> Any:
    """uvloop when installed (about 4x cheaper sockets), the default loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run
