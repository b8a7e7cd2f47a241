"""Time routing decisions with the example dial plan (target: well under 50 µs each).

A plain script: ``python bench/bench_routing.py [N]`` prints microseconds per decision, the
best of several timeit repeats (the machine is shared, so the minimum is the honest figure).
Each repeat routes every (desk, category) pair of the example plan in turn, so the figure is an
average over the whole routing list rather than one lucky dict entry; the urgent, unresolved,
inbound (time window in Asia/Shanghai, regex rewrite) and DTMF lookups are timed alongside.
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from bridge.dialplan import load_file

EXAMPLE = Path(__file__).resolve().parent.parent / "dialplans" / "example.toml"


def best_us(action: Callable[[], object], per_call: int, number: int, repeat: int = 7) -> float:
    best = min(timeit.repeat(action, number=number, repeat=repeat))
    return best / (number * per_call) * 1e6


def main() -> None:
    number = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    result = load_file(EXAMPLE)
    router = result.router
    if router is None:
        for problem in result.problems:
            print(problem)
        raise SystemExit(1)
    pairs = [(origin, key) for origin in router.desks for key in router.categories]
    now = datetime(2025, 3, 3, 9, 0)

    def every_pair() -> None:
        for origin, category in pairs:
            router.route(origin, category, now=now)

    def urgent() -> None:
        router.route("12345", "market", urgent=True)

    def unresolved() -> None:
        router.route("110", None)

    def inbound_window() -> None:
        router.route_inbound("12345", "13800000000", now)

    def inbound_regex() -> None:
        router.route_inbound("0773-110", "13800000000", now)

    def dtmf() -> None:
        router.match_feature_code("*")
        router.match_feature_code("*1")

    print(f"example plan: {len(pairs)} (desk, category) pairs, best of 7 repeats")
    pair_us = best_us(every_pair, len(pairs), max(number // 10, 1))
    print(f"route, every pair      {pair_us:6.2f} us/decision")
    print(f"route, urgent          {best_us(urgent, 1, number * 10):6.2f} us/decision")
    print(f"route, unresolved      {best_us(unresolved, 1, number * 10):6.2f} us/decision")
    print(f"inbound, time window   {best_us(inbound_window, 1, number):6.2f} us/decision")
    print(f"inbound, regex rewrite {best_us(inbound_regex, 1, number):6.2f} us/decision")
    print(f"dtmf, partial+complete {best_us(dtmf, 2, number * 10):6.2f} us/lookup")


if __name__ == "__main__":
    main()
