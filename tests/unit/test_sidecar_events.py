"""The event hub without sockets: addressing, ordering, slow subscribers, closing."""

from __future__ import annotations

import asyncio
import json

import pytest

from bridge.sidecar.events import (
    SLOW_SUBSCRIBER,
    EventHub,
    Subscription,
    SubscriptionClosed,
    publish_ticket,
)
from bridge.sidecar.metrics import MetricsRegistry
from bridge.tickets import lifecycle
from bridge.tickets.model import TicketDraft

NOW = 1_700_000_000.0


def pending(subscription: Subscription) -> list[object]:
    """What is queued right now, without waiting."""
    out: list[object] = []
    while (message := subscription.get_nowait()) is not None:
        out.append(message.event.get("n", message.event.get("type")))
    return out


async def test_events_reach_subscribers_sharing_a_seat_or_platform() -> None:
    hub = EventHub()
    seat = hub.subscribe(seats=["seat-1"])
    platform = hub.subscribe(platforms=["110"])
    either = hub.subscribe(seats=["seat-2"], platforms=["110"])
    console = hub.subscribe(everything=True)
    assert hub.publish({"n": 1}, seats=["seat-1"]) == 2
    assert hub.publish({"n": 2}, platforms=["110"]) == 3
    assert hub.publish({"n": 3}, seats=["seat-2"], platforms=["12345"]) == 2
    assert hub.publish({"n": 4}) == 1
    assert hub.publish({"n": 5}, seats=[None], platforms=[None]) == 1
    assert pending(seat) == [1]
    assert pending(platform) == [2]
    assert pending(either) == [2, 3]
    assert pending(console) == [1, 2, 3, 4, 5]


async def test_get_returns_events_in_order_with_their_json_text() -> None:
    hub = EventHub()
    subscription = hub.subscribe(everything=True)
    for n in range(3):
        hub.publish({"n": n, "text": "工单"})
    received = [await asyncio.wait_for(subscription.get(), 5) for _ in range(3)]
    assert [m.event["n"] for m in received] == [0, 1, 2]
    assert json.loads(received[0].text) == {"n": 0, "text": "工单"}
    assert "工单" in received[0].text


async def test_a_slow_subscriber_is_cut_off_without_hurting_others() -> None:
    metrics = MetricsRegistry()
    hub = EventHub(queue_size=2, metrics=metrics)
    slow = hub.subscribe(everything=True)
    fast = hub.subscribe(everything=True)
    for n in range(3):
        hub.publish({"n": n})
        await asyncio.wait_for(fast.get(), 5)
    assert slow.closed_reason == SLOW_SUBSCRIBER
    assert hub.subscriber_count == 1
    with pytest.raises(SubscriptionClosed) as info:
        await asyncio.wait_for(slow.get(), 5)
    assert info.value.reason == SLOW_SUBSCRIBER
    assert "bridge_event_subscribers_cut_off_total 1\n" in metrics.render()
    assert "bridge_event_subscribers 1\n" in metrics.render()
    assert hub.publish({"n": 9}) == 1


async def test_closing_wakes_a_waiting_reader_and_stays_closed() -> None:
    hub = EventHub()
    subscription = hub.subscribe(everything=True)
    waiter = asyncio.create_task(subscription.get())
    await asyncio.sleep(0)  # let the reader start waiting
    hub.close()
    with pytest.raises(SubscriptionClosed):
        await asyncio.wait_for(waiter, 5)
    with pytest.raises(SubscriptionClosed):
        await asyncio.wait_for(subscription.get(), 5)
    with pytest.raises(SubscriptionClosed):
        subscription.get_nowait()
    assert hub.publish({"n": 1}) == 0
    assert hub.subscriber_count == 0


def test_queue_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="queue_size"):
        EventHub(queue_size=0)


async def test_ticket_changes_go_to_the_seat_both_platforms_and_extra_seats() -> None:
    hub = EventHub()
    sender = hub.subscribe(seats=["seat-1001"])
    receiver_platform = hub.subscribe(platforms=["110"])
    receiver_seat = hub.subscribe(seats=["110-seat-7"])
    bystander = hub.subscribe(seats=["seat-1002"], platforms=["12313"])
    draft = TicketDraft(
        origin="12345", category="criminal", sending_seat="seat-1001", destination="110"
    )
    transition = lifecycle.create(draft, ticket_id="T1", actor="alice", now=NOW)
    assert publish_ticket(hub, transition, seats=["110-seat-7"]) == 3
    message = await asyncio.wait_for(receiver_seat.get(), 5)
    assert message.event["type"] == "ticket"
    assert message.event["kind"] == "created"
    assert message.event["ticket"]["id"] == "T1"
    assert message.event["event"]["seq"] == 1
    assert pending(sender) == ["ticket"]
    assert pending(receiver_platform) == ["ticket"]
    assert pending(bystander) == []
