"""Checks that need the whole plan: references, duplicates, dead rules, gaps in coverage.

The schema accepts each table on its own; a plan can still send a category nowhere, refer to a
trunk that does not exist, or contain a rule that can never fire because an earlier one always
decides first. Each finding is ``(path, message)``; the loader turns the path into a line. The
messages say what to change, because the reader is an admin with the file open, not a developer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge.dialplan.locate import Path
from bridge.dialplan.schema import WILDCARD, DialPlan, NumberMatch, Platform

Finding = tuple[Path, str]
LineOf = Callable[[Path], int]


def check_plan(plan: DialPlan, line_of: LineOf) -> list[Finding]:
    return _Checker(plan, line_of).run()


class _Checker:
    def __init__(self, plan: DialPlan, line_of: LineOf) -> None:
        self.plan = plan
        self.line_of = line_of
        self.found: list[Finding] = []
        self.platforms = {p.key: p for p in plan.platforms}
        self.desks = [p.key for p in plan.platforms if p.desk]
        self.trunks = {t.name: t for t in plan.trunks}
        self.seats = {s.id: s for s in plan.seats}
        self.groups = {g.name for g in plan.seat_groups}
        self.windows = {w.name for w in plan.time_windows}
        self.calendars = {h.name for h in plan.holidays}
        self.categories = {c.key for c in plan.categories}

    def run(self) -> list[Finding]:
        self._timezone()
        self._duplicates()
        self._platforms()
        self._seats()
        self._calendars()
        self._inbound()
        self._rules()
        self._coverage()
        self._urgent()
        self._features()
        return self.found

    def add(self, path: Path, message: str) -> None:
        self.found.append((path, message))

    def line(self, path: Path) -> int:
        return self.line_of(path)

    # -- single tables --------------------------------------------------------------------

    def _timezone(self) -> None:
        try:
            ZoneInfo(self.plan.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            self.add(("timezone",), f"unknown time zone {self.plan.timezone!r}")

    def _duplicates(self) -> None:
        plan = self.plan
        self._unique("trunks", "name", "trunk", [t.name for t in plan.trunks])
        self._unique("platforms", "key", "platform", [p.key for p in plan.platforms])
        self._unique("seats", "id", "seat", [s.id for s in plan.seats])
        self._unique("seat_groups", "name", "seat group", [g.name for g in plan.seat_groups])
        self._unique("holidays", "name", "holiday calendar", [h.name for h in plan.holidays])
        self._unique("time_windows", "name", "time window", [w.name for w in plan.time_windows])
        self._unique("categories", "key", "category", [c.key for c in plan.categories])
        self._unique("rules", "name", "rule name", [r.name for r in plan.rules])
        self._unique("inbound", "name", "inbound rule name", [r.name for r in plan.inbound])

    def _unique(self, table: str, key: str, what: str, values: Sequence[str | None]) -> None:
        first: dict[str, int] = {}
        for index, value in enumerate(values):
            if value is None:
                continue
            if value in first:
                earlier = self.line((table, first[value], key))
                self.add(
                    (table, index, key), f"duplicate {what} {value!r} (first at line {earlier})"
                )
            else:
                first[value] = index

    def _ref(self, path: Path, value: str | None, known: Iterable[str], what: str) -> bool:
        if value is None or value in known:
            return True
        self.add(path, f"unknown {what} {value!r}")
        return False

    def _callable(self, path: Path, platform: Platform) -> None:
        """The bridge must be able to ring ``platform``: it needs a trunk with destinations."""
        if platform.trunk is None:
            self.add(path, f"platform {platform.key!r} has no trunk to call")
            return
        trunk = self.trunks.get(platform.trunk)
        if trunk is not None and not trunk.destinations:
            self.add(
                path,
                f"platform {platform.key!r} cannot be called: trunk {trunk.name!r} "
                "has no destinations",
            )

    def _platforms(self) -> None:
        if not self.desks:
            self.add(
                ("platforms",),
                "no desk platform: set desk = true on the platforms whose agents use the bridge",
            )
        for i, platform in enumerate(self.plan.platforms):
            self._ref(("platforms", i, "trunk"), platform.trunk, self.trunks, "trunk")

    def _seats(self) -> None:
        for i, seat in enumerate(self.plan.seats):
            self._ref(("seats", i, "platform"), seat.platform, self.platforms, "platform")
        for i, group in enumerate(self.plan.seat_groups):
            self._ref(("seat_groups", i, "platform"), group.platform, self.platforms, "platform")
            for k, seat_id in enumerate(group.seats):
                path = ("seat_groups", i, "seats", k)
                member = self.seats.get(seat_id)
                if member is None:
                    self.add(path, f"unknown seat {seat_id!r}: add it under [[seats]]")
                elif member.platform != group.platform:
                    self.add(
                        path,
                        f"seat {seat_id!r} belongs to {member.platform}, "
                        f"not to this group's platform {group.platform}",
                    )

    def _calendars(self) -> None:
        for i, calendar in enumerate(self.plan.holidays):
            holidays = set(calendar.dates)
            for k, day in enumerate(calendar.workdays):
                if day in holidays:
                    self.add(
                        ("holidays", i, "workdays", k),
                        f"{day} is listed both as a holiday and as a workday",
                    )
        for i, window in enumerate(self.plan.time_windows):
            path = ("time_windows", i, "holidays")
            self._ref(path, window.holidays, self.calendars, "holiday calendar")
            if "hol" in window.days and window.holidays is None:
                self.add(
                    ("time_windows", i, "days"),
                    "days include 'hol' but the window names no holidays calendar",
                )

    # -- inbound --------------------------------------------------------------------------

    def _inbound(self) -> None:
        rules = self.plan.inbound
        for i, rule in enumerate(rules):
            self._ref(("inbound", i, "group"), rule.group, self.groups, "seat group")
            if self._ref(("inbound", i, "platform"), rule.platform, self.platforms, "platform"):
                platform = self.platforms.get(rule.platform or "")
                if platform is not None:
                    self._callable(("inbound", i, "platform"), platform)
            self._ref(("inbound", i, "when"), rule.when, self.windows, "time window")
            for side in ("called", "calling"):
                match = getattr(rule, side)
                if match is not None:
                    self._number_match(("inbound", i, side), match)
            for j in range(i):
                earlier = rules[j]
                if earlier.when not in (None, rule.when):
                    continue
                if _covers(earlier.called, rule.called) and _covers(earlier.calling, rule.calling):
                    self.add(
                        ("inbound", i),
                        f"inbound rule never applies: inbound[{j}] "
                        f"(line {self.line(('inbound', j))}) takes every call it would",
                    )
                    break

    def _number_match(self, path: Path, match: NumberMatch) -> None:
        if match.regex is None:
            return
        try:
            compiled = re.compile(match.regex)
        except re.error as exc:
            self.add((*path, "regex"), f"bad regex '{match.regex}': {exc}")
            return
        if match.rewrite is not None:
            try:
                _stand_in(compiled).expand(match.rewrite)
            except (re.error, IndexError) as exc:
                self.add((*path, "rewrite"), f"bad rewrite '{match.rewrite}': {exc}")

    # -- transfer rules -------------------------------------------------------------------

    def _rules(self) -> None:
        decided: dict[tuple[str, str], dict[str | None, int]] = {}
        for i, rule in enumerate(self.plan.rules):
            origins: list[str] = []
            for k, origin in enumerate(rule.origins):
                path = ("rules", i, "from", k)
                if origin == WILDCARD:
                    origins.extend(self.desks)
                elif self._ref(path, origin, self.platforms, "platform"):
                    if origin in self.desks:
                        origins.append(origin)
                    else:
                        self.add(
                            path,
                            f"calls are routed from desk platforms only: {origin!r} "
                            "has no desk = true",
                        )
            categories: list[str] = []
            for k, category in enumerate(rule.categories):
                if category == WILDCARD:
                    categories.extend(self.categories)
                elif self._ref(
                    ("rules", i, "categories", k), category, self.categories, "category"
                ):
                    categories.append(category)
            self._ref(("rules", i, "when"), rule.when, self.windows, "time window")
            self._target(i, rule.action, rule.to, origins)
            self._dead_parts(i, origins, categories, decided)
            for origin in origins:
                for category in categories:
                    decided.setdefault((origin, category), {}).setdefault(rule.when, i)

    def _target(self, i: int, action: str, to: str | None, origins: list[str]) -> None:
        path = ("rules", i, "to")
        if to is None or not self._ref(path, to, self.platforms, "platform"):
            return
        platform = self.platforms[to]
        if action in ("transfer", "three_way"):
            self._callable(path, platform)
            if to in origins:
                self.add(path, f"{action} from {to} to itself: use action 'keep'")
        elif action == "guide" and platform.number is None:
            self.add(path, f"platform {to!r} has no number to tell the caller")

    def _dead_parts(
        self,
        i: int,
        origins: list[str],
        categories: list[str],
        decided: dict[tuple[str, str], dict[str | None, int]],
    ) -> None:
        """Report the parts of rule ``i`` that earlier rules always decide first."""
        when = self.plan.rules[i].when

        def earlier(origin: str, category: str) -> int | None:
            by_window = decided.get((origin, category), {})
            found = by_window.get(None, by_window.get(when))
            return found

        pairs = [(o, c) for o in origins for c in categories]
        if not pairs:
            return
        owners = [earlier(o, c) for o, c in pairs]
        if all(owner is not None for owner in owners):
            first = min(owner for owner in owners if owner is not None)
            self.add(
                ("rules", i),
                f"rule never applies: earlier rules decide all it covers "
                f"(first rules[{first}], line {self.line(('rules', first))})",
            )
            return
        rule = self.plan.rules[i]
        for k, category in enumerate(rule.categories):
            if category not in self.categories:
                continue
            hits = [earlier(o, category) for o in origins]
            if hits and all(h is not None for h in hits):
                first = min(h for h in hits if h is not None)
                self.add(
                    ("rules", i, "categories", k),
                    f"category {category!r} here is shadowed: rules[{first}] "
                    f"(line {self.line(('rules', first))}) already decides it",
                )
        for k, origin in enumerate(rule.origins):
            if origin not in self.desks:
                continue
            hits = [earlier(origin, c) for c in categories]
            if hits and all(h is not None for h in hits):
                first = min(h for h in hits if h is not None)
                self.add(
                    ("rules", i, "from", k),
                    f"origin {origin!r} here is shadowed: rules[{first}] "
                    f"(line {self.line(('rules', first))}) already decides all its categories",
                )

    def _coverage(self) -> None:
        """Every desk needs a route for every category at every hour."""
        windows: dict[tuple[str, str], list[str | None]] = {}
        for rule in self.plan.rules:
            origins = self.desks if WILDCARD in rule.origins else rule.origins
            cats = self.categories if WILDCARD in rule.categories else rule.categories
            for origin in origins:
                for key in cats:
                    windows.setdefault((origin, key), []).append(rule.when)
        for k, category in enumerate(self.plan.categories):
            for origin in self.desks:
                seen = windows.get((origin, category.key))
                path = ("categories", k, "key")
                if not seen:
                    self.add(
                        path,
                        f"category {category.key!r} ({category.label}) has no route from "
                        f"{origin}: add a rule (action 'keep' if {origin} handles it)",
                    )
                elif None not in seen:
                    names = ", ".join(sorted({w for w in seen if w is not None}))
                    self.add(
                        path,
                        f"category {category.key!r} ({category.label}) has no route from "
                        f"{origin} outside time window {names}: add a rule without 'when'",
                    )

    # -- overrides and feature codes ------------------------------------------------------

    def _urgent(self) -> None:
        urgent = self.plan.overrides.urgent
        if urgent is None:
            self.add(
                ("overrides",),
                'no urgent route: add [overrides.urgent] with to = "110" '
                "(danger to life, property or public safety goes to 110 first)",
            )
            return
        path = ("overrides", "urgent", "to")
        if self._ref(path, urgent.to, self.platforms, "platform"):
            self._callable(path, self.platforms[urgent.to])

    def _features(self) -> None:
        codes = self.plan.features.codes
        for i, feature in enumerate(codes):
            path = ("features", "codes", i, "to")
            if self._ref(path, feature.to, self.platforms, "platform") and feature.to:
                self._callable(path, self.platforms[feature.to])
            for j in range(i):
                other = codes[j].code
                if not (feature.code.startswith(other) or other.startswith(feature.code)):
                    continue
                where = f"line {self.line(('features', 'codes', j, 'code'))}"
                if other == feature.code:
                    message = f"duplicate feature code {other!r} (first at {where})"
                else:
                    short, long = sorted((other, feature.code), key=len)
                    message = (
                        f"feature code {feature.code!r} conflicts with {other!r} ({where}): "
                        f"{short!r} is a prefix of {long!r}, so {long!r} could never be dialled"
                    )
                self.add(("features", "codes", i, "code"), message)
                break  # one conflict per code is enough to fix it


def _stand_in(pattern: re.Pattern[str]) -> re.Match[str]:
    """A match with the same groups as ``pattern``, to try a rewrite template on."""
    names = {index: name for name, index in pattern.groupindex.items()}
    groups = "".join(
        f"(?P<{names[i]}>)" if i in names else "()" for i in range(1, pattern.groups + 1)
    )
    found = re.fullmatch(groups, "")
    assert found is not None
    return found


def _covers(earlier: NumberMatch | None, later: NumberMatch | None) -> bool:
    """Does every number ``later`` matches also match ``earlier``? (Sure cases only.)"""
    if earlier is None:
        return True
    if later is None:
        return False
    if earlier.exact is not None:
        return later.exact == earlier.exact
    if earlier.prefix is not None:
        text = later.exact if later.exact is not None else later.prefix
        return text is not None and text.startswith(earlier.prefix)
    if earlier.regex is not None:
        if later.regex is not None:
            return later.regex == earlier.regex
        if later.exact is not None:
            try:
                return re.fullmatch(earlier.regex, later.exact) is not None
            except re.error:
                return False
    return False
