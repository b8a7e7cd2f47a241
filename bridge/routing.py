"""The dial plan as the B2BUA core sees it: who is calling, and where a call goes.

A request comes from a trunk when its source address is one of the plan's trunk addresses (the
allow-list); anything else must be an authenticated seat. Calls are routed by the plan's inbound
rules on the called and calling numbers, to a seat group (each seat's registered contacts, in
order) or straight out to a platform's trunk.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from bridge.calls.ports import Destination, Origin, RouteResult
from bridge.dialplan.holder import DialPlanHolder
from bridge.dialplan.router import Router
from bridge.sip.errors import RemoteProtocolError
from bridge.sip.message import Request
from bridge.sip.uri import SipUri

Address = tuple[str, int]
SeatLookup = Callable[[str, float, float], list[Destination]]
"""Registered contacts of a seat: (seat id, ring timeout, now) → destinations in order."""


class PlanRouting:
    def __init__(self, path: Path | str) -> None:
        self.holder = DialPlanHolder.from_file(path)
        self.seat_lookup: SeatLookup = lambda seat, ring_timeout, now: []
        self._sources: dict[Address, Origin] = {}
        self._index_sources()

    @property
    def router(self) -> Router:
        return self.holder.router

    def _index_sources(self) -> None:
        router = self.router
        platform_of_trunk = {p.trunk: p.key for p in router.plan.platforms if p.trunk is not None}
        sources: dict[Address, Origin] = {}
        for trunk in router.plan.trunks:
            platform = platform_of_trunk.get(trunk.name, trunk.name)
            for text in (*trunk.destinations, *getattr(trunk, "sources", ())):
                host, port = _source_of(text)
                sources[(host, port)] = Origin(kind="trunk", name=trunk.name, platform=platform)
        self._sources = sources

    def reloaded(self) -> None:
        """Call after the holder swapped plans: the allow-list follows the plan in force."""
        self._index_sources()

    def match_feature_code(self, digits: str) -> Any:
        return self.router.match_feature_code(digits)

    @property
    def digit_timeout(self) -> float:
        return self.router.digit_timeout

    def seat_platform(self, seat: str) -> str | None:
        for entry in self.router.plan.seats:
            if entry.id == seat:
                return entry.platform
        return None

    def identify(self, request: Request, source: Address) -> Origin | None:
        return self._sources.get(source) or self._sources.get((source[0], 0))

    def route(self, request: Request, origin: Origin, now: float) -> RouteResult | None:
        called = request.uri.user or ""
        try:
            calling = request.from_.uri.user or ""
        except RemoteProtocolError:
            calling = ""
        router = self.router
        decision = router.route_inbound(called, calling, datetime.now(router.zone))
        if decision is None:
            return None
        destinations: list[Destination] = []
        for seat in decision.seats:
            destinations.extend(self.seat_lookup(seat, decision.ring_timeout, now))
        for text in decision.uris:
            destinations.append(trunk_destination(text, decision.platform, decision.ring_timeout))
        urgent = router.plan.overrides.urgent
        return RouteResult(
            origin=origin.platform,
            destinations=tuple(destinations),
            reason=decision.reason,
            urgent=urgent is not None and decision.platform == urgent.to,
        )

    def resolve_target(self, target: str, now: float) -> tuple[str, list[Destination]]:
        """Where a transfer to ``target`` rings: dialled like an incoming number first (so
        "12345" reaches the 12345 seats on duty), else a platform key reaches that platform's
        trunk. Returns the destination platform and the destinations in failover order."""
        router = self.router
        decision = router.route_inbound(target, "", datetime.now(router.zone))
        if decision is not None:
            destinations: list[Destination] = []
            for seat in decision.seats:
                destinations.extend(self.seat_lookup(seat, decision.ring_timeout, now))
            for text in decision.uris:
                destinations.append(
                    trunk_destination(text, decision.platform, decision.ring_timeout)
                )
            return decision.platform, destinations
        platform = router.platforms.get(target)
        if platform is None or platform.trunk is None:
            return target, []
        trunk = next(t for t in router.plan.trunks if t.name == platform.trunk)
        timeout = trunk.ring_timeout or router.plan.defaults.ring_timeout
        return platform.key, [
            trunk_destination(uri, platform.key, timeout) for uri in trunk.destinations
        ]

    def resolve_supervisor(self, supervisor: str, now: float) -> list[Destination]:
        """Where a supervisor is rung: the phones registered for that seat, else wherever a
        transfer to ``supervisor`` would ring (a number of the plan, a platform's trunk)."""
        ring_timeout = self.router.plan.defaults.ring_timeout
        return (
            self.seat_lookup(supervisor, ring_timeout, now)
            or self.resolve_target(supervisor, now)[1]
        )


def trunk_destination(text: str, peer: str, ring_timeout: float) -> Destination:
    uri = SipUri.parse(text)
    return Destination(
        uri=uri,
        address=uri.hostport,
        transport="TCP" if uri.transport == "tcp" else "UDP",
        peer=peer,
        ring_timeout=ring_timeout,
    )


def _source_of(text: str) -> Address:
    """A trunk address: ``sip:user@host:port`` or ``host[:port]`` (port 0 = any port)."""
    if text.startswith(("sip:", "sips:")):
        uri = SipUri.parse(text)
        return uri.hostport
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit():
        return host.strip("[]"), int(port)
    return text, 0
