"""The RTP port pool hands out even ports and reuses released ones last."""

from __future__ import annotations

import pytest

from bridge.media.ports import PortPool, PortPoolExhaustedError


def test_pairs_start_even_and_fit_the_range() -> None:
    pool = PortPool(10001, 10008)  # 10002/3, 10004/5, 10006/7; 10008 has no odd partner
    assert [pool.take() for _ in range(3)] == [10002, 10004, 10006]
    with pytest.raises(PortPoolExhaustedError):
        pool.take()


def test_released_ports_go_to_the_back_of_the_queue() -> None:
    pool = PortPool(20000, 20005)  # 20000, 20002, 20004
    first = pool.take()
    pool.give_back(first)
    # A late packet of the call that just ended must not reach the next call.
    assert pool.take() != first
    assert (pool.free, pool.in_use) == (2, 1)


def test_giving_back_twice_or_a_stranger_changes_nothing() -> None:
    pool = PortPool(20000, 20001)
    port = pool.take()
    pool.give_back(port)
    pool.give_back(port)
    pool.give_back(31000)
    assert (pool.free, pool.in_use) == (1, 0)


@pytest.mark.parametrize(("low", "high"), [(20000, 20000), (20001, 20002), (65534, 65536)])
def test_a_range_without_a_pair_is_refused(low: int, high: int) -> None:
    with pytest.raises(ValueError, match="no even/odd pair"):
        PortPool(low, high)
