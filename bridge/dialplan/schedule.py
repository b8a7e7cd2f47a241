"""Time windows: is a rule in force at this local time?

A window is a set of weekdays and hours, read in the plan's time zone (Asia/Shanghai unless the
plan says otherwise). When it names a holiday calendar, a listed holiday counts as the day
``hol`` instead of its weekday — so an office-hours window is closed on 国庆 — and a make-up
workday (调休, a weekend day worked instead of a holiday) counts as a working day: the window
is open then if it is open on any of Monday to Friday.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, tzinfo

from bridge.dialplan.schema import WEEKDAYS, Holidays, TimeWindow, parse_hours

HOLIDAY = 7
_WORKING_DAYS = frozenset(range(5))


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    name: str
    days: frozenset[int]
    hours: tuple[tuple[time, time | None], ...]
    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()

    @classmethod
    def compile(cls, window: TimeWindow, calendar: Holidays | None) -> Window:
        days = frozenset(HOLIDAY if d == "hol" else WEEKDAYS.index(d) for d in window.days)
        return cls(
            name=window.name,
            days=days,
            hours=tuple(parse_hours(h) for h in window.hours),
            holidays=frozenset(calendar.dates) if calendar else frozenset(),
            workdays=frozenset(calendar.workdays) if calendar else frozenset(),
        )

    def is_open(self, local: datetime) -> bool:
        """``local`` is already in the plan's time zone."""
        day = local.date()
        if day in self.holidays:
            if HOLIDAY not in self.days:
                return False
        elif day in self.workdays:
            if not self.days & _WORKING_DAYS:
                return False
        elif day.weekday() not in self.days:
            return False
        moment = local.time()
        return any(start <= moment and (end is None or moment < end) for start, end in self.hours)


def to_local(now: datetime, zone: tzinfo) -> datetime:
    """A naive ``now`` is a wall-clock time in the plan's zone; an aware one is converted."""
    if now.tzinfo is None:
        return now.replace(tzinfo=zone)
    return now.astimezone(zone)
