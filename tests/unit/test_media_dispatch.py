"""The bookkeeping of media split over workers: which worker holds each leg, what each is told.

No processes or sockets: descriptors are plain ints, and what a worker would be sent is read
from ``take_outgoing``.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest

from bridge.media.dispatch import (
    MAX_BATCH,
    DigitDetected,
    Item,
    MediaDispatch,
    MediaLost,
    NoMediaPortError,
    Outgoing,
    WorkerLeg,
    figures_of,
    split_ports,
)
from bridge.media.stats import StreamStatsSnapshot

RANGES = [(10000, 10100), (10100, 10200), (10200, 10300)]
STATE = {"codec": 0, "stats": "figures"}
"""What a worker's "exported" report carries; the bridge passes it on untouched."""


def dispatch(workers: int = 2, stock: int = 4) -> MediaDispatch:
    """Workers 0.. each ready with ``stock`` ports of its own range; nothing sent yet."""
    media = MediaDispatch("192.0.2.1", RANGES[:workers])
    for worker, (low, _) in enumerate(RANGES[:workers]):
        media.receive(worker, [("ready", [low + 2 * n for n in range(stock)])], [])
    return media


def to(messages: list[Outgoing], worker: int) -> list[Item]:
    """Every item sent to ``worker``, in order."""
    return [item for m in messages if m.worker == worker for item in m.items]


def sent(media: MediaDispatch, worker: int) -> list[Item]:
    return to(media.take_outgoing(), worker)


def ops(items: list[Item]) -> list[str]:
    return [item[0] for item in items]


def exported(media: MediaDispatch, worker: int, port: int, fds: list[int]) -> list[Any]:
    state = STATE if fds else None
    return list(media.receive(worker, [("exported", port, state)], fds))


def figures(received: int) -> tuple[Any, ...]:
    return figures_of(
        StreamStatsSnapshot(
            packets_received=received,
            bytes_received=172 * received,
            packets_expected=received + 1,
            packets_lost=1,
            jitter_ms=2.5,
            packets_sent=received,
            bytes_sent=172 * received,
        )
    )


def lost(events: list[Any]) -> list[WorkerLeg]:
    assert all(isinstance(event, MediaLost) for event in events)
    return [event.leg for event in events]


# -- split_ports ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("low", "high", "workers"), [(20000, 30000, 4), (20001, 29999, 3), (10000, 10008, 4)]
)
def test_port_shares_are_equal_disjoint_even_and_cover_the_range(
    low: int, high: int, workers: int
) -> None:
    shares = split_ports(low, high, workers)
    assert len(shares) == workers
    first = low + low % 2
    assert shares[0][0] == first
    assert shares[-1][1] == high
    for (_, end), (start, _) in pairwise(shares):
        assert end == start  # disjoint and no port left out between shares
    assert all(start % 2 == 0 and start < end for start, end in shares)
    pairs = [len(range(start, end - 1, 2)) for start, end in shares]
    assert max(pairs) - min(pairs) <= workers - 1
    assert len(set(pairs[:-1])) <= 1
    assert sum(pairs) == len(range(first, high - 1, 2))  # every pair of the range is used


@pytest.mark.parametrize(
    ("low", "high", "workers"), [(20000, 20006, 4), (20001, 20003, 1), (20000, 30000, 0)]
)
def test_a_range_too_small_to_split_is_refused(low: int, high: int, workers: int) -> None:
    with pytest.raises(ValueError, match="cannot be split"):
        split_ports(low, high, workers)


# -- allocate ------------------------------------------------------------------------------


def test_no_port_before_any_worker_is_ready() -> None:
    media = MediaDispatch("192.0.2.1", RANGES[:2])
    with pytest.raises(NoMediaPortError):
        media.allocate()
    assert media.take_outgoing() == []


def test_no_port_when_every_stock_is_empty() -> None:
    media = dispatch(stock=1)
    media.allocate()
    media.allocate()
    with pytest.raises(NoMediaPortError):
        media.allocate()
    media.receive(1, [("ready", [10102])], [])  # the refill
    assert media.allocate().port == 10102


def test_a_leg_goes_beside_its_near_leg() -> None:
    media = dispatch()
    a = media.allocate()
    assert media.allocate(near=a).worker == a.worker
    assert media.allocate(near=a).worker == a.worker


def test_without_a_hint_the_least_loaded_worker_is_chosen() -> None:
    media = dispatch()
    a = media.allocate()
    b = media.allocate()
    assert a.worker != b.worker
    media.allocate(near=a)
    d = media.allocate()
    assert d.worker == b.worker  # a's worker carries a and c
    assert media.load[a.worker] == media.load[b.worker] == 2


def test_a_released_leg_lightens_its_worker() -> None:
    media = dispatch()
    a = media.allocate()
    near_a = [media.allocate(near=a), media.allocate(near=a)]
    b = media.allocate()
    assert media.load == [3, 1]
    for leg in [a, *near_a]:
        media.release(leg)
    assert media.load == [0, 1]
    assert media.allocate().worker == a.worker != b.worker


def test_the_worker_holding_the_port_is_told_to_take_it() -> None:
    media = dispatch()
    a = media.allocate()
    b = media.allocate()
    messages = media.take_outgoing()
    assert to(messages, a.worker) == [("take", a.port)]
    assert to(messages, b.worker) == [("take", b.port)]
    assert media.legs == {a.port: a, b.port: b}
    assert media.ranges[a.worker][0] <= a.port < media.ranges[a.worker][1]


# -- commands ------------------------------------------------------------------------------


def test_commands_reach_the_leg_s_worker_in_order() -> None:
    media = dispatch()
    a = media.allocate()
    b = media.allocate(near=a)
    other = media.allocate()
    media.take_outgoing()
    media.point(a, "198.51.100.7", 4000, 0, telephone_event_pt=96)
    media.connect(a, b)
    media.hold(a)
    media.unhold(a)
    media.private_keys(b)
    media.conference([a, b])
    media.set_mode(b, "listen", whisper_to=a)
    media.release(a)
    messages = media.take_outgoing()
    assert to(messages, a.worker) == [
        ("point", a.port, "198.51.100.7", 4000, 0, 96),
        ("connect", a.port, b.port),
        ("hold", a.port),
        ("unhold", a.port),
        ("private_keys", b.port),
        ("conference", [a.port, b.port]),
        ("mode", b.port, "listen", a.port),
        ("release", a.port),
    ]
    assert to(messages, other.worker) == []
    assert a.codec == 0


def test_set_mode_outside_a_conference_is_refused() -> None:
    media = dispatch()
    a = media.allocate()
    b = media.allocate(near=a)
    media.conference([a, b])
    media.connect(a, b)  # the conference is left for a two-party call
    media.take_outgoing()
    with pytest.raises(ValueError, match="no conference"):
        media.set_mode(a, "mute")
    assert media.take_outgoing() == []


def test_nothing_is_sent_for_a_released_leg() -> None:
    media = dispatch()
    a = media.allocate()
    b = media.allocate(near=a)
    media.take_outgoing()
    media.release(a)
    media.release(a)
    media.point(a, "198.51.100.7", 4000, 0, telephone_event_pt=101)
    media.hold(a)
    media.unhold(a)
    media.private_keys(a)
    media.hold(b)
    assert sent(media, a.worker) == [("release", a.port), ("hold", b.port)]
    assert media.load[a.worker] == 1


# -- moving legs between workers ------------------------------------------------------------


def moving_pair(media: MediaDispatch) -> tuple[WorkerLeg, WorkerLeg]:
    """a in worker 0, b in worker 1, outgoing drained."""
    a = media.allocate()
    b = media.allocate()
    assert (a.worker, b.worker) == (0, 1)
    media.take_outgoing()
    return a, b


def test_connect_across_workers_exports_then_adopts_before_the_connect() -> None:
    media = dispatch()
    a, b = moving_pair(media)
    media.connect(a, b)
    media.hold(a)
    messages = media.take_outgoing()
    assert to(messages, 1) == [("export", b.port)]
    assert to(messages, 0) == []  # nothing may overtake the adoption of b
    assert b.worker == 0
    assert media.load == [2, 0]

    assert exported(media, 1, b.port, [41, 42]) == []
    messages = media.take_outgoing()
    assert [m for m in messages if m.worker == 1] == []
    zero = [m for m in messages if m.worker == 0]
    assert zero[0] == Outgoing(worker=0, items=[("adopt", b.port, STATE)], fds=(41, 42))
    assert to(zero[1:], 0) == [("connect", a.port, b.port), ("hold", a.port)]
    assert all(m.fds == () for m in zero[1:])
    assert media.unused_fds == []


def test_commands_sent_before_the_move_go_before_the_adoption() -> None:
    media = dispatch()
    a, b = moving_pair(media)
    media.hold(a)
    media.connect(a, b)
    media.unhold(a)
    assert sent(media, 0) == [("hold", a.port)]
    exported(media, 1, b.port, [41, 42])
    assert ops(sent(media, 0)) == ["adopt", "connect", "unhold"]


def test_a_conference_across_workers_moves_its_members_into_the_first_one_s() -> None:
    media = dispatch(workers=3)
    a = media.allocate()
    b = media.allocate()
    c = media.allocate()
    assert (a.worker, b.worker, c.worker) == (0, 1, 2)
    media.take_outgoing()
    media.conference([a, b, c])
    messages = media.take_outgoing()
    assert to(messages, 1) == [("export", b.port)]
    assert to(messages, 2) == [("export", c.port)]
    assert to(messages, 0) == []

    exported(media, 2, c.port, [51, 52])
    messages = media.take_outgoing()
    zero = [m for m in messages if m.worker == 0]
    assert zero == [Outgoing(worker=0, items=[("adopt", c.port, STATE)], fds=(51, 52))]

    exported(media, 1, b.port, [41, 42])
    zero = [m for m in media.take_outgoing() if m.worker == 0]
    assert zero[0] == Outgoing(worker=0, items=[("adopt", b.port, STATE)], fds=(41, 42))
    assert to(zero[1:], 0) == [("conference", [a.port, b.port, c.port])]
    assert media.load == [3, 0, 0]


def test_a_leg_joined_again_mid_move_moves_on_from_its_first_destination() -> None:
    """connect(a@0, b@1), then conference([c@2, b]) before worker 1 answered: b goes 1 → 0
    → 2, and neither worker 0 nor 2 is left waiting for good."""
    media = dispatch(workers=3)
    a, b, c = media.allocate(), media.allocate(), media.allocate()
    assert (a.worker, b.worker, c.worker) == (0, 1, 2)
    media.take_outgoing()
    media.connect(a, b)
    media.conference([c, b])
    messages = media.take_outgoing()
    assert to(messages, 1) == [("export", b.port)]
    assert to(messages, 0) == []
    assert to(messages, 2) == []

    exported(media, 1, b.port, [41, 42])
    messages = media.take_outgoing()
    assert next((m.items[0][0], m.fds) for m in messages if m.worker == 0) == ("adopt", (41, 42))
    assert ops(to(messages, 0)) == ["adopt", "connect", "export"]
    assert to(messages, 2) == []

    exported(media, 0, b.port, [43, 44])
    messages = media.take_outgoing()
    assert ops(to(messages, 2)) == ["adopt", "conference"]
    assert next(m.fds for m in messages if m.worker == 2) == (43, 44)
    media.hold(a)
    media.hold(c)
    messages = media.take_outgoing()
    assert to(messages, 0) == [("hold", a.port)], "worker 0 is not blocked any more"
    assert to(messages, 2) == [("hold", c.port)]
    assert b.worker == 2
    assert media.load == [1, 0, 2]


def test_a_leg_released_while_moving_is_released_after_its_adoption() -> None:
    media = dispatch()
    a, b = moving_pair(media)
    media.connect(a, b)
    media.release(b)
    assert sent(media, 1) == [("export", b.port)]
    exported(media, 1, b.port, [41, 42])
    messages = media.take_outgoing()
    assert to(messages, 0) == [
        ("adopt", b.port, STATE),
        ("connect", a.port, b.port),
        ("release", b.port),
    ]
    assert media.load == [1, 0]
    # Foreign to worker 0, the port is sent home once closed there.
    media.receive(0, [("freed", b.port)], [])
    assert sent(media, 1) == [("reclaim", b.port)]


def test_a_leg_its_worker_did_not_hold_is_reported_lost() -> None:
    media = dispatch()
    a, b = moving_pair(media)
    media.connect(a, b)
    media.hold(a)
    media.take_outgoing()
    events = exported(media, 1, b.port, [])
    assert lost(events) == [b]
    assert "lost" in events[0].reason
    assert ops(sent(media, 0)) == ["connect", "hold"]  # worker 0 is not left blocked
    assert b.port not in media.legs
    assert media.load == [1, 0]
    media.hold(b)
    assert media.take_outgoing() == []


@pytest.mark.parametrize(("state", "fds"), [(None, [41, 42]), (STATE, [41])])
def test_descriptors_of_a_failed_export_are_closed(
    state: dict[str, Any] | None, fds: list[int]
) -> None:
    media = dispatch()
    a, b = moving_pair(media)
    media.connect(a, b)
    media.take_outgoing()
    events = media.receive(1, [("exported", b.port, state)], fds)
    assert lost(list(events)) == [b]
    assert media.unused_fds == fds
    messages = media.take_outgoing()
    assert all(m.fds == () for m in messages)
    assert "adopt" not in ops(to(messages, 0))


# -- a worker that dies ---------------------------------------------------------------------


def test_a_dead_worker_s_legs_are_lost_and_its_stock_gone() -> None:
    media = dispatch()
    a = media.allocate()
    b = media.allocate()
    c = media.allocate(near=b)
    media.take_outgoing()
    events = media.worker_lost(1)
    assert sorted(lost(events), key=lambda leg: leg.port) == [b, c]
    assert all("worker" in event.reason for event in events)
    assert list(media.legs) == [a.port]
    assert media.load == [1, 0]
    assert [media.allocate().worker for _ in range(2)] == [0, 0]
    assert media.allocate(near=b).worker == 0
    with pytest.raises(NoMediaPortError):
        media.allocate()
    media.hold(b)
    assert 1 not in {m.worker for m in media.take_outgoing()}


def test_an_adoption_not_yet_sent_to_a_worker_that_died_closes_its_descriptors() -> None:
    media = dispatch()
    a, b = moving_pair(media)
    media.connect(a, b)
    media.take_outgoing()
    exported(media, 1, b.port, [41, 42])  # the adoption is queued for worker 0 ...
    media.worker_lost(0)  # ... which dies before it goes out
    assert [m for m in media.take_outgoing() if m.fds] == []
    assert media.unused_fds == [41, 42]


def test_a_dead_worker_s_adopted_port_goes_home() -> None:
    media = dispatch()
    a, b = moving_pair(media)
    media.connect(a, b)
    exported(media, 1, b.port, [41, 42])
    media.take_outgoing()
    assert lost(media.worker_lost(0)) in ([a, b], [b, a])
    # b's port is worker 1's: only worker 1 may bind it again.
    assert sent(media, 1) == [("reclaim", b.port)]


def test_a_move_whose_source_died_unblocks_its_destination() -> None:
    media = dispatch()
    a, b = moving_pair(media)
    media.connect(a, b)
    media.hold(a)
    media.take_outgoing()
    assert lost(media.worker_lost(1)) == [b]
    assert ops(sent(media, 0)) == ["connect", "hold"]
    assert media.load == [1, 0]
    media.unhold(a)
    assert sent(media, 0) == [("unhold", a.port)]


def test_a_move_whose_destination_died_sends_the_port_home() -> None:
    media = dispatch()
    a, b = moving_pair(media)
    media.connect(a, b)
    media.take_outgoing()
    assert sorted(lost(media.worker_lost(0)), key=lambda leg: leg.port) == [a, b]
    assert sent(media, 1) == []  # the sockets are still on their way
    assert exported(media, 1, b.port, [41, 42]) == []
    messages = media.take_outgoing()
    assert media.unused_fds == [41, 42]
    assert all(m.fds == () for m in messages)
    assert to(messages, 1) == [("reclaim", b.port)]
    assert to(messages, 0) == []


def test_a_released_leg_moving_into_a_worker_that_died_is_sent_home() -> None:
    media = dispatch()
    a, b = moving_pair(media)
    media.connect(a, b)
    media.release(b)
    media.take_outgoing()
    assert lost(media.worker_lost(0)) == [a]
    exported(media, 1, b.port, [41, 42])
    messages = media.take_outgoing()
    assert media.unused_fds == [41, 42]
    assert all(m.fds == () for m in messages)
    assert to(messages, 1) == [("reclaim", b.port)]
    # Worker 0, started again, is told of its new legs at once.
    media.receive(0, [("ready", list(range(10000, 10010, 2)))], [])  # more than worker 1's
    c = media.allocate()
    assert c.worker == 0
    assert sent(media, 0) == [("take", c.port)]


# -- reports -------------------------------------------------------------------------------


def test_stats_reports_update_the_leg_s_figures() -> None:
    media = dispatch()
    a = media.allocate()
    b = media.allocate(near=a)
    media.receive(a.worker, [("stats", [(a.port, figures(50)), (b.port, figures(7))])], [])
    assert a.stats.snapshot().packets_received == 50
    assert a.stats.snapshot().jitter_ms == 2.5
    assert b.stats.snapshot().packets_received == 7
    media.receive(a.worker, [("stats", [(a.port, figures(51))])], [])
    assert a.stats.snapshot().packets_received == 51
    assert b.stats.snapshot().packets_received == 7


def test_digits_and_timeouts_name_the_right_leg() -> None:
    media = dispatch()
    a = media.allocate()
    b = media.allocate(near=a)
    events = media.receive(a.worker, [("digit", b.port, "5"), ("timeout", a.port)], [])
    assert events == [DigitDetected(leg=b, digit="5"), MediaLost(leg=a, reason="media timeout")]


def test_reports_about_released_ports_are_ignored() -> None:
    media = dispatch()
    a = media.allocate()
    media.release(a)
    events = media.receive(
        a.worker,
        [("digit", a.port, "1"), ("timeout", a.port), ("stats", [(a.port, figures(9))])],
        [],
    )
    assert events == []
    assert a.stats.snapshot().packets_received == 0


def test_reports_from_a_leg_s_former_worker_are_ignored() -> None:
    media = dispatch()
    a, b = moving_pair(media)
    media.connect(a, b)
    events = media.receive(
        1, [("digit", b.port, "1"), ("timeout", b.port), ("stats", [(b.port, figures(9))])], []
    )
    assert events == []
    assert b.stats.snapshot().packets_received == 0
    exported(media, 1, b.port, [41, 42])
    assert media.receive(0, [("timeout", b.port)], []) == [MediaLost(leg=b, reason="media timeout")]


def test_a_freed_port_is_reclaimed_by_its_owner() -> None:
    media = dispatch()
    media.receive(0, [("freed", 10104)], [])
    messages = media.take_outgoing()
    assert to(messages, 1) == [("reclaim", 10104)]
    assert to(messages, 0) == []


def test_descriptors_no_report_claims_are_closed() -> None:
    media = dispatch()
    media.receive(0, [("timeout", 10000)], [7, 8])
    assert media.unused_fds == [7, 8]


# -- sending -------------------------------------------------------------------------------


def test_long_batches_are_split_in_order() -> None:
    media = dispatch(stock=1)
    a = media.allocate()
    media.take_outgoing()
    for port in range(2 * MAX_BATCH + 10):
        media.point(a, "198.51.100.7", port, None, telephone_event_pt=None)
    messages = media.take_outgoing()
    assert [len(m.items) for m in messages] == [MAX_BATCH, MAX_BATCH, 10]
    assert [item[3] for item in to(messages, a.worker)] == list(range(2 * MAX_BATCH + 10))
    assert media.take_outgoing() == []


# -- relay counters -----------------------------------------------------------------------


def test_relay_counters_of_every_worker_are_summed() -> None:
    media = dispatch()
    media.receive(0, [("counters", {"malformed": 2, "digits": 1})], [])
    media.receive(1, [("counters", {"malformed": 3, "send_failed": 4})], [])
    assert media.counters() == {"malformed": 5, "digits": 1, "send_failed": 4}
    media.receive(0, [("counters", {"malformed": 7, "digits": 1})], [])
    assert media.counters() == {"malformed": 10, "digits": 1, "send_failed": 4}, "latest, not added"


def test_relay_counters_never_go_backwards_when_a_worker_dies_and_is_replaced() -> None:
    media = dispatch()
    media.receive(0, [("counters", {"malformed": 5, "digits": 2})], [])
    media.receive(1, [("counters", {"malformed": 1})], [])
    media.worker_lost(0)
    assert media.counters() == {"malformed": 6, "digits": 2}, "the dead worker's counts stay"
    media.receive(0, [("ready", [10000]), ("counters", {"malformed": 0, "digits": 0})], [])
    assert media.counters() == {"malformed": 6, "digits": 2}
    media.receive(0, [("counters", {"malformed": 3, "digits": 0})], [])
    assert media.counters() == {"malformed": 9, "digits": 2}
    media.worker_lost(0)
    media.worker_lost(0)  # a second loss report adds nothing
    assert media.counters() == {"malformed": 9, "digits": 2}
    # Its next run's first report may count more than the last run did by then.
    media.receive(0, [("ready", [10000]), ("counters", {"malformed": 7, "digits": 3})], [])
    assert media.counters() == {"malformed": 16, "digits": 5}


def test_a_worker_counting_from_zero_again_keeps_its_former_counts() -> None:
    media = dispatch()
    media.receive(1, [("counters", {"malformed": 8, "digits": 3})], [])
    media.receive(1, [("counters", {"malformed": 1, "digits": 3})], [])
    assert media.counters() == {"malformed": 9, "digits": 6}
