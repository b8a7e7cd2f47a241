"""The router: a checked dial plan turned into lookup tables, answering "where does this call go?".

Theory of operation. Building a :class:`Router` does all the work once: every (origin,
category) pair gets its *chain* — the rules that can decide it, in file order, cut after the
first rule without a time window — and every outcome is built in advance as an immutable
:class:`RouteDecision`. A routing call is then a dict lookup, plus a clock check only when a
time window is involved. Decisions are shared and never change, so a call keeps the decision it
got even after the plan is swapped (see :mod:`bridge.dialplan.holder`).

The policy's two overrides come first: urgent (danger to life, property or public safety) goes
to the urgent platform (110) whatever the category; a request whose ownership is unresolved
(no category) stays with the platform that took it first (首接负责制).

Reasons name the deciding rule and its line, and never contain caller numbers: they end up in
logs and audit events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal
from zoneinfo import ZoneInfo

from bridge.dialplan import schema
from bridge.dialplan.locate import LineMap, Path
from bridge.dialplan.schedule import Window, to_local
from bridge.dialplan.suggest import KeywordIndex, Suggestion

PARTIAL: Final = "partial"
"""What :meth:`Router.match_feature_code` returns while the digits so far begin some code."""


class RoutingError(ValueError):
    """The question names an origin or category the plan does not know."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteDecision:
    action: schema.Action
    origin: str
    category: str | None
    urgent: bool
    destination: str
    """Platform key; the origin itself for ``keep``."""
    destination_label: str
    number: str | None
    """The destination's public number: what a ``guide`` tells the caller to ring."""
    say: str | None
    """Words for the agent to read to the caller (the platform's ``say``), if the plan has any."""
    uris: tuple[str, ...]
    """Trunk destinations in failover order; empty for ``keep``."""
    ring_timeout: float
    rule: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundDecision:
    rule: str
    platform: str
    seat_group: str | None
    seats: tuple[str, ...]
    uris: tuple[str, ...]
    """The platform's trunk when the rule sends the call straight out; empty for a seat group."""
    ring_timeout: float
    called: str
    calling: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FeatureCode:
    code: str
    action: Literal["transfer", "three_way", "cancel"]
    destination: str | None
    uris: tuple[str, ...]
    ring_timeout: float
    label: str


Chain = tuple[tuple[Window | None, RouteDecision], ...]


class _NumberMatcher:
    __slots__ = ("_exact", "_prefix", "_regex", "_rewrite")

    def __init__(self, match: schema.NumberMatch) -> None:
        self._exact = match.exact
        self._prefix = match.prefix
        self._regex = re.compile(match.regex) if match.regex is not None else None
        self._rewrite = match.rewrite

    def apply(self, number: str) -> str | None:
        """``number`` (rewritten when the rule says so) if it matches, else ``None``."""
        if self._exact is not None:
            return number if number == self._exact else None
        if self._prefix is not None:
            return number if number.startswith(self._prefix) else None
        assert self._regex is not None
        found = self._regex.fullmatch(number)
        if found is None:
            return None
        return found.expand(self._rewrite) if self._rewrite is not None else number


@dataclass(frozen=True, slots=True, kw_only=True)
class _Inbound:
    called: _NumberMatcher | None
    calling: _NumberMatcher | None
    window: Window | None
    template: InboundDecision


class Router:
    """Answers routing questions for one plan; build it once, ask it from any call.

    The plan must have passed :func:`bridge.dialplan.checks.check_plan` (the loader sees to
    that): the router trusts its references.
    """

    def __init__(
        self, plan: schema.DialPlan, *, filename: str = "", lines: LineMap | None = None
    ) -> None:
        self.plan = plan
        self.filename = filename
        self._lines = lines
        self.zone = ZoneInfo(plan.timezone)
        self.platforms = {p.key: p for p in plan.platforms}
        self.categories = {c.key: c for c in plan.categories}
        self.desks = tuple(p.key for p in plan.platforms if p.desk)
        self._desk_set = frozenset(self.desks)
        self._trunks = {t.name: t for t in plan.trunks}
        self._windows = self._compile_windows()
        self._chains = self._compile_rules()
        self._urgent = {o: self._urgent_decision(o) for o in self.desks}
        self._unresolved = {
            o: self._keep_decision(o, None, "overrides.unresolved") for o in self.desks
        }
        self._inbound = self._compile_inbound()
        self._features = {f.code: self._feature(f) for f in plan.features.codes}
        self._feature_prefixes = frozenset(
            code[:n] for code in self._features for n in range(len(code))
        )
        self._keywords = KeywordIndex((c.key, c.keywords) for c in plan.categories)

    # -- questions ------------------------------------------------------------------------

    def route(
        self,
        origin: str,
        category: str | None,
        *,
        urgent: bool = False,
        now: datetime | None = None,
    ) -> RouteDecision:
        """Where a request taken at ``origin`` goes; ``category=None`` means unresolved.

        ``now`` matters only for rules with a time window; ``None`` reads the clock then.
        """
        if origin not in self._desk_set:
            raise RoutingError(f"unknown origin {origin!r}: desks are {', '.join(self.desks)}")
        if category is not None and category not in self.categories:
            raise RoutingError(f"unknown category {category!r}")
        if urgent:
            return self._urgent[origin]
        if category is None:
            return self._unresolved[origin]
        chain = self._chains.get((origin, category))
        if chain is None:
            return self._first_contact(origin, category)
        window, decision = chain[0]
        if window is None:
            return decision
        local = to_local(now or datetime.now(self.zone), self.zone)
        for window, decision in chain:
            if window is None or window.is_open(local):
                return decision
        return self._first_contact(origin, category)

    def chain(self, origin: str, category: str) -> Chain:
        """Every decision (origin, category) can get, with the window that selects it."""
        return self._chains.get((origin, category), ())

    def urgent_route(self, origin: str) -> RouteDecision:
        return self.route(origin, None, urgent=True)

    def route_inbound(
        self, called: str, calling: str, now: datetime | None = None
    ) -> InboundDecision | None:
        """The first inbound rule that matches, or ``None`` (answer 404: nobody takes it)."""
        local: datetime | None = None
        for rule in self._inbound:
            new_called = rule.called.apply(called) if rule.called else called
            if new_called is None:
                continue
            new_calling = rule.calling.apply(calling) if rule.calling else calling
            if new_calling is None:
                continue
            if rule.window is not None:
                if local is None:
                    local = to_local(now or datetime.now(self.zone), self.zone)
                if not rule.window.is_open(local):
                    continue
            template = rule.template
            return InboundDecision(
                rule=template.rule,
                platform=template.platform,
                seat_group=template.seat_group,
                seats=template.seats,
                uris=template.uris,
                ring_timeout=template.ring_timeout,
                called=new_called,
                calling=new_calling,
                reason=template.reason,
            )
        return None

    def match_feature_code(self, digits: str) -> FeatureCode | Literal["partial"] | None:
        """Collecting DTMF: a complete code, :data:`PARTIAL` (keep collecting), or ``None``.

        The checker guarantees no code is a prefix of another, so a complete code can act at
        once without waiting for the inter-digit timeout.
        """
        found = self._features.get(digits)
        if found is not None:
            return found
        if digits in self._feature_prefixes:
            return PARTIAL
        return None

    @property
    def digit_timeout(self) -> float:
        return self.plan.features.digit_timeout

    def suggest(self, text: str, limit: int | None = None) -> list[tuple[str, int]]:
        """Categories for a request's wording, best first, with their keyword scores."""
        ranked = self._keywords.suggest(text)[:limit]
        return [(s.category, s.score) for s in ranked]

    def explain_suggestion(self, text: str) -> list[Suggestion]:
        return self._keywords.suggest(text)

    def label(self, category: str | None) -> str:
        if category is None:
            return "unresolved"
        return self.categories[category].label

    # -- building -------------------------------------------------------------------------

    def _where(self, path: Path) -> str:
        if self._lines is None:
            return ""
        return f" ({self.filename or 'line'}:{self._lines.line_of(path)})"

    def _uris(self, platform: schema.Platform) -> tuple[tuple[str, ...], float]:
        trunk = self._trunks.get(platform.trunk) if platform.trunk else None
        default = self.plan.defaults.ring_timeout
        if trunk is None:
            return (), default
        timeout = trunk.ring_timeout if trunk.ring_timeout is not None else default
        return tuple(trunk.destinations), timeout

    def _compile_windows(self) -> dict[str, Window]:
        calendars = {h.name: h for h in self.plan.holidays}
        return {
            w.name: Window.compile(w, calendars.get(w.holidays) if w.holidays else None)
            for w in self.plan.time_windows
        }

    def _compile_rules(self) -> dict[tuple[str, str], Chain]:
        chains: dict[tuple[str, str], list[tuple[Window | None, RouteDecision]]] = {}
        for index, rule in enumerate(self.plan.rules):
            window = self._windows.get(rule.when) if rule.when else None
            origins = self.desks if schema.WILDCARD in rule.origins else rule.origins
            if schema.WILDCARD in rule.categories:
                categories: tuple[str, ...] = tuple(self.categories)
            else:
                categories = rule.categories
            for origin in origins:
                for category in categories:
                    if category not in self.categories or origin not in self.platforms:
                        continue
                    chain = chains.setdefault((origin, category), [])
                    if chain and chain[-1][0] is None:
                        continue  # an earlier rule always decides this pair
                    decision = self._rule_decision(index, rule, origin, category)
                    chain.append((window, decision))
        return {key: tuple(chain) for key, chain in chains.items()}

    def _rule_name(self, index: int, rule: schema.Rule) -> str:
        return f"rules[{index}]" + (f" {rule.name!r}" if rule.name else "")

    def _rule_decision(
        self, index: int, rule: schema.Rule, origin: str, category: str
    ) -> RouteDecision:
        name = self._rule_name(index, rule)
        if rule.action == "keep" or rule.to is None:
            return self._keep_decision(origin, category, name, ("rules", index))
        target = self.platforms[rule.to]
        label = self.categories[category].label
        where = self._where(("rules", index))
        window = f" during {rule.when}" if rule.when else ""
        if rule.action == "guide":
            what = f"guide the caller to ring {target.number} ({target.label})"
        else:
            verb = "transfer" if rule.action == "transfer" else "three-way call"
            what = f"{verb} to {target.key} ({target.label})"
        return self._decision(
            rule.action,
            origin,
            category,
            target,
            say=target.say,
            rule=name,
            reason=f"{name}{where}{window}: {label} from {origin}: {what}",
        )

    def _decision(
        self,
        action: schema.Action,
        origin: str,
        category: str | None,
        target: schema.Platform,
        *,
        rule: str,
        reason: str,
        urgent: bool = False,
        say: str | None = None,
    ) -> RouteDecision:
        """The decision to ``action`` a request from ``origin`` to ``target``.

        ``keep`` rings no trunk (``target`` is then the origin's own platform); every other
        action rings ``target``'s trunk.
        """
        if action == "keep":
            uris: tuple[str, ...] = ()
            timeout = self.plan.defaults.ring_timeout
        else:
            uris, timeout = self._uris(target)
        return RouteDecision(
            action=action,
            origin=origin,
            category=category,
            urgent=urgent,
            destination=target.key,
            destination_label=target.label,
            number=target.number,
            say=say,
            uris=uris,
            ring_timeout=timeout,
            rule=rule,
            reason=reason,
        )

    def _first_contact(self, origin: str, category: str | None) -> RouteDecision:
        """No rule decides (only possible in an unchecked plan): the caller is never dropped."""
        why = f"no rule routes {self.label(category)} from {origin} now: kept at first contact"
        return self._keep_decision(origin, category, "first-contact", why=why)

    def _keep_decision(
        self,
        origin: str,
        category: str | None,
        rule: str,
        path: Path = ("overrides", "unresolved"),
        *,
        why: str = "",
    ) -> RouteDecision:
        if not why and category is None:
            why = (
                f"ownership unresolved{self._where(path)}: first-contact responsibility "
                f"keeps it at {origin}"
            )
        elif not why:
            why = f"{rule}{self._where(path)}: {self.label(category)} stays at {origin}"
        return self._decision(
            "keep", origin, category, self.platforms[origin], rule=rule, reason=why
        )

    def _urgent_decision(self, origin: str) -> RouteDecision:
        urgent = self.plan.overrides.urgent
        rule = "overrides.urgent"
        if urgent is None or urgent.to not in self.platforms:
            reason = "urgent, but the plan has no urgent route: kept at first contact"
            return self._decision(
                "keep", origin, None, self.platforms[origin], urgent=True, rule=rule, reason=reason
            )
        target = self.platforms[urgent.to]
        where = self._where(("overrides", "urgent"))
        if origin == target.key:
            reason = f"urgent{where}: already at {origin}, which handles danger first"
            return self._decision(
                "keep", origin, None, target, urgent=True, rule=rule, reason=reason
            )
        verb = "transfer" if urgent.action == "transfer" else "three-way call"
        reason = (
            f"urgent{where}: danger to life, property or public safety goes to "
            f"{target.key} first, whatever the category: {verb} to {target.key}"
        )
        return self._decision(
            urgent.action, origin, None, target, urgent=True, rule=rule, reason=reason
        )

    def _compile_inbound(self) -> tuple[_Inbound, ...]:
        groups = {g.name: g for g in self.plan.seat_groups}
        compiled: list[_Inbound] = []
        for index, rule in enumerate(self.plan.inbound):
            name = f"inbound[{index}]" + (f" {rule.name!r}" if rule.name else "")
            where = self._where(("inbound", index))
            if rule.group is not None:
                group = groups[rule.group]
                platform, seats = group.platform, group.seats
                uris: tuple[str, ...] = ()
                timeout = self.plan.defaults.ring_timeout
                what = f"seat group {group.name} of {platform}"
            else:
                assert rule.platform is not None
                platform, seats = rule.platform, ()
                uris, timeout = self._uris(self.platforms[platform])
                what = f"platform {platform}"
            template = InboundDecision(
                rule=name,
                platform=platform,
                seat_group=rule.group,
                seats=tuple(seats),
                uris=uris,
                ring_timeout=timeout,
                called="",
                calling="",
                reason=f"{name}{where}: to {what}",
            )
            compiled.append(
                _Inbound(
                    called=_NumberMatcher(rule.called) if rule.called else None,
                    calling=_NumberMatcher(rule.calling) if rule.calling else None,
                    window=self._windows.get(rule.when) if rule.when else None,
                    template=template,
                )
            )
        return tuple(compiled)

    def _feature(self, code: schema.FeatureCode) -> FeatureCode:
        if code.to is None:
            uris: tuple[str, ...] = ()
            timeout = self.plan.defaults.ring_timeout
        else:
            uris, timeout = self._uris(self.platforms[code.to])
        label = code.label or (f"{code.action} {code.to}" if code.to else code.action)
        return FeatureCode(
            code=code.code,
            action=code.action,
            destination=code.to,
            uris=uris,
            ring_timeout=timeout,
            label=label,
        )
