"""Admission limits: how many calls the bridge carries at once and how fast new ones may come.

Theory of operation. A bridge past its capacity does not fail one call, it fails them all: its
answers come late, callers retransmit, the retransmissions are more work, and calls in progress
time out with the new ones (measured here: at 500 offered calls/s on a host good for 450, a
60 s run lost 593 calls, answered ones included). An admin who knows the capacity (see
BENCHMARKS.md) sets ``max_calls`` and ``max_call_rate``; a call beyond them is refused at once
with 503 and Retry-After (RFC 3261 §21.5.4, §20.33), which a carrier's trunk takes as "try
another node", and the calls already up keep their quality.

Calls to the urgent platform (110) are never refused: the policy sends emergencies to 110
first, and a surge of other calls must not crowd them out. They still take their share of
the rate, so they count against the calls that follow.

The rate is a token bucket holding one second of calls (one call at least): a burst of
``max_call_rate`` is admitted, then one call per 1/``max_call_rate`` seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    reason: str
    retry_after: int
    """Seconds, for the Retry-After header: when a call may be admitted again."""


class Admission:
    """``max_calls`` and ``max_call_rate`` of 0 mean no limit."""

    def __init__(self, *, max_calls: int = 0, max_call_rate: float = 0.0) -> None:
        self.max_calls = max_calls
        self.max_call_rate = max_call_rate
        self._burst = max(1.0, max_call_rate)
        self._tokens = self._burst
        self._refilled_at: float | None = None

    @property
    def limited(self) -> bool:
        return self.max_calls > 0 or self.max_call_rate > 0

    def admit(self, *, now: float, in_progress: int, urgent: bool) -> Refusal | None:
        """Take a new call, or say why not. ``in_progress`` excludes the call asked about."""
        rate = self.max_call_rate
        if rate > 0:
            if self._refilled_at is not None:
                self._tokens = min(self._burst, self._tokens + (now - self._refilled_at) * rate)
            self._refilled_at = now
        if urgent:
            self._tokens = max(0.0, self._tokens - 1)
            return None
        if 0 < self.max_calls <= in_progress:
            return Refusal(reason=f"call limit {self.max_calls} reached", retry_after=5)
        if rate > 0:
            if self._tokens < 1:
                wait = math.ceil((1 - self._tokens) / rate)
                return Refusal(reason=f"call rate limit {rate:g}/s reached", retry_after=wait)
            self._tokens -= 1
        return None
