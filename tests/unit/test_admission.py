"""Admission limits with a fake clock: concurrent calls, call rate, and urgent calls."""

from __future__ import annotations

from bridge.calls.admission import Admission


def test_no_limits_admit_everything() -> None:
    admission = Admission()
    assert not admission.limited
    assert all(admission.admit(now=0.0, in_progress=n, urgent=False) is None for n in range(1000))


def test_the_call_limit_counts_calls_in_progress() -> None:
    admission = Admission(max_calls=2)
    assert admission.admit(now=0.0, in_progress=1, urgent=False) is None
    refusal = admission.admit(now=0.0, in_progress=2, urgent=False)
    assert refusal is not None
    assert refusal.reason == "call limit 2 reached"
    assert admission.admit(now=0.0, in_progress=2, urgent=True) is None


def test_the_rate_allows_one_seconds_burst_then_refills_steadily() -> None:
    admission = Admission(max_call_rate=4)
    verdicts = [admission.admit(now=100.0, in_progress=0, urgent=False) for _ in range(5)]
    assert [v is None for v in verdicts] == [True] * 4 + [False]
    refusal = verdicts[-1]
    assert refusal is not None
    assert refusal.reason == "call rate limit 4/s reached"
    assert refusal.retry_after == 1
    assert admission.admit(now=100.125, in_progress=0, urgent=False) is not None  # half a call
    assert admission.admit(now=100.25, in_progress=0, urgent=False) is None
    assert admission.admit(now=100.25, in_progress=0, urgent=False) is not None
    # A quiet spell refills one second's worth, never more.
    later = [admission.admit(now=200.0, in_progress=0, urgent=False) for _ in range(5)]
    assert sum(v is None for v in later) == 4


def test_urgent_calls_are_admitted_past_the_rate_and_use_it_up_for_others() -> None:
    admission = Admission(max_call_rate=2)
    assert admission.admit(now=0.0, in_progress=0, urgent=True) is None
    assert admission.admit(now=0.0, in_progress=0, urgent=True) is None
    assert admission.admit(now=0.0, in_progress=0, urgent=True) is None
    assert admission.admit(now=0.0, in_progress=0, urgent=False) is not None
    assert admission.admit(now=0.5, in_progress=0, urgent=False) is None


def test_a_rate_below_one_call_a_second_still_admits_one_call_per_period() -> None:
    admission = Admission(max_call_rate=0.25)
    assert admission.admit(now=0.0, in_progress=0, urgent=False) is None
    refusal = admission.admit(now=1.0, in_progress=0, urgent=False)
    assert refusal is not None
    assert refusal.retry_after == 3
    assert admission.admit(now=4.0, in_progress=0, urgent=False) is None
