"""``GET /api/v1/events``: the live event stream over a WebSocket (RFC 6455).

Query: ``seat=`` and ``platform=`` (each repeatable) choose what to receive; the token comes as a
bearer header or ``access_token=``. Supervisors and admins may omit both and see everything (the
console). Agents may ask only for their own seat and platform, peers only for their platform;
when they ask for nothing they get exactly those. The first message is ``{"type":
"subscribed", ...}`` echoing the filter, so a client knows from when on it misses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import WSCloseCode, web

from bridge.sidecar.auth import Permission, Principal, Role
from bridge.sidecar.bodies import EventsQuery
from bridge.sidecar.context import read_query, require, sidecar_of
from bridge.sidecar.errors import ApiError
from bridge.sidecar.events import (
    SLOW_SUBSCRIBER,
    Subscription,
    SubscriptionClosed,
    SubscriptionFilter,
)

HEARTBEAT_SECONDS = 30.0


def _filter_for(principal: Principal, query: EventsQuery) -> SubscriptionFilter:
    seats, platforms = frozenset(query.seat), frozenset(query.platform)
    if principal.may(Permission.SEE_ALL_EVENTS):
        return SubscriptionFilter(
            seats=seats, platforms=platforms, everything=not seats | platforms
        )
    own_seats = (
        frozenset({principal.seat})
        if principal.seat and principal.role is Role.AGENT
        else frozenset()
    )
    own_platforms = frozenset({principal.platform}) if principal.platform else frozenset()
    if not seats <= own_seats or not platforms <= own_platforms:
        raise ApiError(403, "forbidden", "you may subscribe only to your own seat and platform")
    if not seats and not platforms:
        seats, platforms = own_seats, own_platforms
    if not seats and not platforms:
        raise ApiError(403, "forbidden", "this token names no seat or platform to follow")
    return SubscriptionFilter(seats=seats, platforms=platforms)


async def _read_until_closed(ws: web.WebSocketResponse, subscription: Subscription) -> None:
    # Clients have nothing to tell us; reading keeps control frames (ping, close) flowing.
    async for _message in ws:
        pass
    subscription.close("client closed")


async def events(request: web.Request) -> web.StreamResponse:
    principal = require(request, Permission.SUBSCRIBE_EVENTS, allow_query_token=True)
    query = read_query(request, EventsQuery, repeatable=frozenset({"seat", "platform"}))
    wanted = _filter_for(principal, query)
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS)
    await ws.prepare(request)
    hub = sidecar_of(request).hub
    subscription = hub.subscribe(
        seats=wanted.seats, platforms=wanted.platforms, everything=wanted.everything
    )
    reader = asyncio.create_task(_read_until_closed(ws, subscription))
    try:
        await ws.send_json(
            {
                "type": "subscribed",
                "seats": sorted(wanted.seats),
                "platforms": sorted(wanted.platforms),
                "everything": wanted.everything,
            }
        )
        while True:
            try:
                message = await subscription.get()
            except SubscriptionClosed as closed:
                code = (
                    WSCloseCode.TRY_AGAIN_LATER
                    if closed.reason == SLOW_SUBSCRIBER
                    else WSCloseCode.GOING_AWAY
                )
                await ws.close(code=code, message=closed.reason.encode())
                break
            await ws.send_str(message.text)
    except ConnectionResetError:
        pass
    finally:
        subscription.close("handler finished")
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return ws
