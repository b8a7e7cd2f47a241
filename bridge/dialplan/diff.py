"""What a new plan changes, in the admin's terms: per origin and category, before → after.

Two plans are compared by what they *do*, not by their text: each (origin, category) is routed
by both routers and the outcomes described in words. Reordering rules, renaming a rule or
rewording a comment changes nothing here; moving a trunk to another address changes every
route that uses it, and each of those routes is listed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bridge.dialplan.router import FeatureCode, RouteDecision, Router

URGENT = "(urgent)"
UNRESOLVED = "(unresolved)"


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteChange:
    origin: str
    """A desk platform, or ``*`` for feature codes and inbound routing."""
    subject: str
    """A category key, :data:`URGENT`, :data:`UNRESOLVED`, ``feature *1`` or ``inbound``."""
    label: str
    before: str | None
    """``None``: the old plan had no such route."""
    after: str | None


def describe(decision: RouteDecision) -> str:
    if decision.action == "keep":
        return f"keep at {decision.destination}"
    if decision.action == "guide":
        return f"guide to {decision.destination} (ring {decision.number})"
    return (
        f"{decision.action} to {decision.destination} via {', '.join(decision.uris)} "
        f"(ring {decision.ring_timeout:g}s)"
    )


def describe_route(router: Router, origin: str, category: str) -> str:
    chain = router.chain(origin, category)
    if not chain:
        return "keep at first contact (no rule)"
    parts = []
    for window, decision in chain:
        when = f"during {window.name}: " if window is not None else ""
        if window is not None or len(chain) > 1:
            when = when or "otherwise: "
        parts.append(when + describe(decision))
    if chain[-1][0] is not None:
        parts.append("otherwise: keep at first contact (no rule)")
    return "; ".join(parts)


def _describe_feature(code: FeatureCode) -> str:
    if code.action == "cancel":
        return "cancel"
    return (
        f"{code.action} to {code.destination} via {', '.join(code.uris)} "
        f"(ring {code.ring_timeout:g}s)"
    )


def diff_routers(old: Router, new: Router) -> list[RouteChange]:
    changes: list[RouteChange] = []
    origins = _union(old.desks, new.desks)
    categories = _union(new.categories, old.categories)
    for origin in origins:
        in_old, in_new = origin in old.desks, origin in new.desks

        def add(
            subject: str, label: str, before: str | None, after: str | None, origin: str = origin
        ) -> None:
            if before != after:
                changes.append(
                    RouteChange(
                        origin=origin, subject=subject, label=label, before=before, after=after
                    )
                )

        add(
            URGENT,
            "",
            describe(old.urgent_route(origin)) if in_old else None,
            describe(new.urgent_route(origin)) if in_new else None,
        )
        add(
            UNRESOLVED,
            "",
            describe(old.route(origin, None)) if in_old else None,
            describe(new.route(origin, None)) if in_new else None,
        )
        for category in categories:
            category_in_new = category in new.categories
            label = (new if category_in_new else old).label(category)
            add(
                category,
                label,
                describe_route(old, origin, category)
                if in_old and category in old.categories
                else None,
                describe_route(new, origin, category) if in_new and category_in_new else None,
            )
    old_codes = {c.code: c for c in old.plan.features.codes}
    new_codes = {c.code: c for c in new.plan.features.codes}
    for code in _union(old_codes, new_codes):
        before = old.match_feature_code(code) if code in old_codes else None
        after = new.match_feature_code(code) if code in new_codes else None
        b = _describe_feature(before) if isinstance(before, FeatureCode) else None
        a = _describe_feature(after) if isinstance(after, FeatureCode) else None
        if a != b:
            changes.append(
                RouteChange(origin="*", subject=f"feature {code}", label="", before=b, after=a)
            )
    if _inbound_fingerprint(old) != _inbound_fingerprint(new):
        changes.append(
            RouteChange(
                origin="*",
                subject="inbound",
                label="incoming calls",
                before="old inbound rules, seat groups or time windows",
                after="changed",
            )
        )
    return changes


def format_changes(changes: Iterable[RouteChange]) -> list[str]:
    lines = []
    for change in changes:
        label = f" ({change.label})" if change.label else ""
        where = "" if change.origin == "*" else f"from {change.origin}, "
        head = f"{where}{change.subject}{label}"
        if change.before is None:
            lines.append(f"{head}: added: {change.after}")
        elif change.after is None:
            lines.append(f"{head}: removed (was: {change.before})")
        elif change.subject == "inbound":
            lines.append(f"{head}: inbound rules, seat groups, seats or time windows changed")
        else:
            lines.append(f"{head}: {change.before} → {change.after}")
    return lines


def _inbound_fingerprint(router: Router) -> object:
    """Everything that decides an incoming call, with names resolved to what they stand for."""
    plan = router.plan
    windows = {w.name: w for w in plan.time_windows}
    calendars = {h.name: h for h in plan.holidays}
    groups = {g.name: g for g in plan.seat_groups}
    trunks = {t.name: t for t in plan.trunks}
    resolved: list[tuple[object, ...]] = []
    for rule in plan.inbound:
        window = windows.get(rule.when) if rule.when else None
        calendar = calendars.get(window.holidays) if window and window.holidays else None
        if rule.group is not None:
            group = groups.get(rule.group)
            target: object = (group.platform, group.seats) if group else None
        else:
            platform = router.platforms.get(rule.platform or "")
            target = trunks.get(platform.trunk) if platform and platform.trunk else None
            target = (rule.platform, target, plan.defaults.ring_timeout)
        resolved.append((rule.called, rule.calling, window, calendar, target))
    zone = plan.timezone if any(rule.when for rule in plan.inbound) else None
    return zone, resolved


def _union(first: Iterable[str], second: Iterable[str]) -> list[str]:
    return list(dict.fromkeys([*first, *second]))
