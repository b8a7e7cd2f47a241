"""What a transfer run measured and how it is printed: latencies (a) and (b) per counted transfer,
failures by reason, the bench's loop lag, the bridge's CPU and RSS, and the verdict on the targets.

Kept out of ``bench_transfer`` (which drives the peers and the bridge) so that the figures are
defined in one place; it only reads what a run left behind.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the run's records are the run's; only their types are needed here
    from bench.bench_transfer import Options, Scenario


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def summary(values: list[float]) -> str:
    if not values:
        return "no samples"
    return (
        f"n={len(values)}  p50 {percentile(values, 0.5):.2f} ms  p95 {percentile(values, 0.95):.2f}"
        f" ms  p99 {percentile(values, 0.99):.2f} ms  max {max(values):.2f} ms"
    )


def report(
    options: Options,
    scenario: Scenario,
    pops: dict[str, int],
    lags: list[float],
    *,
    cpu: float,
    rss: int,
    elapsed: float,
    log_tail: str,
    store: str,
    store_cpu: float | None = None,
) -> int:
    """``store`` names the bridge's ticket store; ``store_cpu`` is the PostgreSQL server's CPU
    seconds over the run (None on SQLite, whose work is in the bridge's own CPU)."""
    transfers = sorted(
        {id(t): t for t in scenario.transfers.values()}.values(), key=lambda t: t.index
    )
    warm = int(options.rate * options.warmup)
    counted = [t for t in transfers if t.index >= warm]
    key_to_invite = [
        (t.invite_kernel_ns - t.info_sent_ns) / 1e6
        for t in counted
        if t.info_sent_ns and t.invite_kernel_ns
    ]
    key_to_invite_loop = [
        (t.invite_loop_ns - t.info_sent_ns) / 1e6
        for t in counted
        if t.info_sent_ns and t.invite_loop_ns
    ]
    ringing_to_pop = [
        (pops[t.ticket_id] - t.ringing_sent_ns) / 1e6
        for t in counted
        if t.ringing_sent_ns and t.ticket_id in pops
    ]
    failed = [t for t in transfers if t.failure or not t.done]
    reasons: dict[str, int] = {}
    for t in failed:
        reason = t.failure or (
            "no INVITE at the target"
            if not t.invite_kernel_ns
            else "target not answered"
            if not t.answered
            else "not ended"
        )
        reasons[reason] = reasons.get(reason, 0) + 1
    transferred = sum(1 for t in transfers if t.answered)
    released = sum(1 for t in transfers if t.agent_released)
    print(
        f"transfer bench: {len(transfers)} calls at {options.rate}/s over "
        f"{options.warmup + options.duration:.0f} s (first {options.warmup:.0f} s = {warm} calls "
        f"are warm-up, not counted); key at +{options.press_after:.2f} s, target rings "
        f"{options.ring:.2f} s, caller hangs up {options.hold:.2f} s after the transfer; "
        f"ticket store {store}"
    )
    print(
        f"  transferred {transferred}, agents released {released}, failed {len(failed)}"
        + (f" {reasons}" if reasons else "")
        + f", stray INVITEs {scenario.stray}, run {elapsed:.1f} s"
    )
    print(f"  (a) key → target INVITE (kernel rx stamp)   {summary(key_to_invite)}")
    print(f"      key → target INVITE (peer loop)         {summary(key_to_invite_loop)}")
    print(f"  (b) target 180 → ringing on the WebSocket  {summary(ringing_to_pop)}")
    print(f"      screen pops missing: {sum(1 for t in counted if t.ticket_id not in pops)}")
    print(
        f"  bench process loop lag p99 {percentile(lags, 0.99):.2f} ms, max "
        f"{max(lags, default=math.nan):.2f} ms"
    )
    per = cpu / len(transfers) * 1000 if transfers else math.nan
    print(f"  bridge CPU {cpu:.2f} s ({per:.2f} ms per transferred call), RSS {rss // 1024} MiB")
    if store_cpu is not None:
        store_per = store_cpu / len(transfers) * 1000 if transfers else math.nan
        print(
            f"  PostgreSQL server CPU {store_cpu:.2f} s ({store_per:.2f} ms per transferred call)"
        )
    a_ok = percentile(key_to_invite, 0.99) < 10
    b_ok = percentile(ringing_to_pop, 0.99) < 50
    print(
        f"  target (a) p99 < 10 ms: {'met' if a_ok else 'NOT MET'}; "
        f"(b) p99 < 50 ms: {'met' if b_ok else 'NOT MET'}"
    )
    if failed:
        print("  bridge log tail:\n    " + log_tail.replace("\n", "\n    "))
    return 1 if failed else 0
