"""Live events for seats, supervisors and the console (the screen pop).

A publisher addresses an event to seats and platforms; a subscriber asked for some seats and/or
platforms, or for everything (the console, supervisors). An event reaches a subscriber when the
two share a seat or a platform, or when the subscriber takes everything. Publishing never waits:
each subscriber has a bounded queue, and one that falls that far behind is cut off (its socket
closes with "try again later") instead of slowing the call path down. The event is serialised
once, whatever the number of subscribers, and not at all when none wants it. Call
:meth:`EventHub.publish` from the event loop's thread only, and only after the change it reports
is stored (store first, then signal).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.sidecar.metrics import MetricsRegistry
from bridge.tickets.lifecycle import Transition

DEFAULT_QUEUE_SIZE = 256
SLOW_SUBSCRIBER = "subscriber too slow"


@dataclass(frozen=True, slots=True, kw_only=True)
class Published:
    event: Mapping[str, Any]
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionFilter:
    seats: frozenset[str] = frozenset()
    platforms: frozenset[str] = frozenset()
    everything: bool = False

    def matches(self, seats: frozenset[str], platforms: frozenset[str]) -> bool:
        return self.everything or bool(self.seats & seats) or bool(self.platforms & platforms)


class SubscriptionClosed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Subscription:
    def __init__(self, hub: EventHub, wanted: SubscriptionFilter, queue_size: int) -> None:
        self.filter = wanted
        self._hub = hub
        self._queue: asyncio.Queue[Published | None] = asyncio.Queue()
        self._limit = queue_size
        self.closed_reason: str | None = None

    @property
    def closed(self) -> bool:
        return self.closed_reason is not None

    def _offer(self, message: Published) -> bool:
        """Queue ``message``; cut the subscriber off if it is ``queue_size`` messages behind."""
        if self.closed:
            return False
        if self._queue.qsize() >= self._limit:
            self.close(SLOW_SUBSCRIBER)
            return False
        self._queue.put_nowait(message)
        return True

    async def get(self) -> Published:
        """The next event; raises :class:`SubscriptionClosed` once closed."""
        message = await self._queue.get()
        if message is None:
            # Leave the marker for any other waiter.
            self._queue.put_nowait(None)
            raise SubscriptionClosed(self.closed_reason or "closed")
        return message

    def get_nowait(self) -> Published | None:
        """The next event if one is queued, else None; raises once closed."""
        if self._queue.empty():
            return None
        message = self._queue.get_nowait()
        if message is None:
            self._queue.put_nowait(None)
            raise SubscriptionClosed(self.closed_reason or "closed")
        return message

    def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.closed_reason = reason
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)
        self._hub._forget(self)


class EventHub:
    def __init__(
        self, *, queue_size: int = DEFAULT_QUEUE_SIZE, metrics: MetricsRegistry | None = None
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._queue_size = queue_size
        self._subscriptions: set[Subscription] = set()
        registry = metrics or MetricsRegistry()
        self._published = registry.counter(
            "bridge_events_published_total", "Events published to live subscribers"
        )
        self._deliveries = registry.counter(
            "bridge_events_delivered_total", "Event copies queued for subscribers"
        )
        self._cut_off = registry.counter(
            "bridge_event_subscribers_cut_off_total", "Subscribers dropped for falling behind"
        )
        registry.gauge("bridge_event_subscribers", "Live event subscribers").set_function(
            lambda: float(len(self._subscriptions))
        )

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def subscribe(
        self,
        *,
        seats: Iterable[str] = (),
        platforms: Iterable[str] = (),
        everything: bool = False,
    ) -> Subscription:
        wanted = SubscriptionFilter(
            seats=frozenset(seats), platforms=frozenset(platforms), everything=everything
        )
        subscription = Subscription(self, wanted, self._queue_size)
        self._subscriptions.add(subscription)
        return subscription

    def publish(
        self,
        event: Mapping[str, Any],
        *,
        seats: Iterable[str | None] = (),
        platforms: Iterable[str | None] = (),
    ) -> int:
        """Deliver ``event`` to every matching subscriber; returns how many got it."""
        self._published.inc()
        if not self._subscriptions:
            # Every call event comes through here; with nobody listening, serialising it is
            # wasted work on the call path.
            return 0
        seat_set = frozenset(s for s in seats if s)
        platform_set = frozenset(p for p in platforms if p)
        message: Published | None = None
        delivered = 0
        for subscription in list(self._subscriptions):
            if not subscription.filter.matches(seat_set, platform_set):
                continue
            if message is None:
                message = Published(event=event, text=json.dumps(event, ensure_ascii=False))
            if subscription._offer(message):
                delivered += 1
            else:
                self._cut_off.inc()
        self._deliveries.inc(delivered)
        return delivered

    def close(self) -> None:
        for subscription in list(self._subscriptions):
            subscription.close("server shutting down")

    def _forget(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)


def ticket_message(transition: Transition) -> dict[str, Any]:
    """The WebSocket form of a ticket change: the event and the ticket as it now stands."""
    return {
        "type": "ticket",
        "kind": transition.event.kind.value,
        "event": transition.event.to_json(),
        "ticket": transition.ticket.model_dump(mode="json"),
    }


def publish_ticket(
    hub: EventHub,
    transition: Transition,
    *,
    seats: Iterable[str] = (),
    platforms: Iterable[str] = (),
) -> int:
    """Publish a stored ticket change to its sending seat, its origin and destination platforms,
    plus any ``seats``/``platforms`` given (the receiving seat while the call rings)."""
    ticket = transition.ticket
    return hub.publish(
        ticket_message(transition),
        seats=(ticket.sending_seat, *seats),
        platforms=(ticket.origin, ticket.destination, *platforms),
    )
