"""The dial-plan file format: pydantic models of the TOML that telecom admins edit.

The schema checks what one table can check on its own (types, required keys, ranges, which keys
go with which action). Everything that needs the whole plan — references between tables,
duplicates, shadowed rules, coverage of every category — lives in :mod:`bridge.dialplan.checks`,
so that both kinds of error come back as ``FILE:LINE: message``. Every model forbids unknown keys:
a misspelt key is an error at load time, not a silently ignored setting.

Names follow ``dialplans/README.md``; the TOML key ``from`` is ``origins`` here because ``from``
is a Python keyword.
"""

from __future__ import annotations

import re
from datetime import date, time
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    model_validator,
)

from bridge.sip.errors import SipError
from bridge.sip.uri import SipUri

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun", "hol"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Weekday names in :meth:`datetime.date.weekday` order; ``hol`` stands for a listed holiday."""

DEFAULT_TIMEZONE = "Asia/Shanghai"
WILDCARD = "*"

Action = Literal["transfer", "three_way", "guide", "keep"]
CallAction = Literal["transfer", "three_way"]
_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$"
_REFERENCE = r"^(\*|[A-Za-z0-9_][A-Za-z0-9_.\-]*)$"
_DIAL_STRING = r"^\+?[0-9*#\-]+$"
_FEATURE_DIGITS = r"^[0-9*#]{1,8}$"
_SEAT_ID = r"^[A-Za-z0-9_.\-+]+$"

PATTERN_HINTS = {
    _NAME: "may hold only letters, digits, _, - and . (and not start with - or .)",
    _REFERENCE: "must be a key (letters, digits, _, - and .) or *",
    _DIAL_STRING: "must be a number: digits, *, # and -, with an optional leading +",
    _FEATURE_DIGITS: "must be 1 to 8 of the DTMF keys 0-9, * and #",
    _SEAT_ID: "must be a SIP user name: letters, digits, _, ., - and +",
}
"""Admin-readable wording for each pattern, used by the loader instead of the regex."""

Name = Annotated[str, StringConstraints(pattern=_NAME, max_length=64)]
"""Keys that other tables refer to: platform keys, trunk and group names, category keys."""

Reference = Annotated[str, StringConstraints(pattern=_REFERENCE, max_length=64)]
"""A :data:`Name` or the wildcard ``*`` (rule origins and categories)."""

DialString = Annotated[str, StringConstraints(pattern=_DIAL_STRING, max_length=32)]
FeatureDigits = Annotated[str, StringConstraints(pattern=_FEATURE_DIGITS)]
SeatId = Annotated[str, StringConstraints(pattern=_SEAT_ID, max_length=64)]
Seconds = Annotated[float, Field(strict=True, gt=0, le=300)]
"""Strict: ``20`` and ``2.5`` are seconds, ``"20"`` and ``true`` are mistakes."""
Label = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Keyword = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


def _one_or_many(value: object) -> object:
    """``from = "12345"`` and ``from = ["12345", "110"]`` both mean a tuple of names."""
    return (value,) if isinstance(value, str) else value


def _sip_uri(text: str) -> str:
    try:
        uri = SipUri.parse(text)
    except SipError as exc:
        raise ValueError(exc.detail) from None
    if uri.scheme not in ("sip", "sips") or not uri.host:
        raise ValueError(f"not a sip: or sips: URI: {text!r}")
    return text


SipUriText = Annotated[str, AfterValidator(_sip_uri)]

_HOURS = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")


def _hours_range(text: str) -> str:
    parse_hours(text)
    return text


def parse_hours(text: str) -> tuple[time, time | None]:
    """``"08:30-12:00"`` → (start, end); end ``None`` means midnight at the end of the day."""
    match = _HOURS.match(text)
    if not match:
        raise ValueError(f"hours {text!r} must look like HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        raise ValueError(f"hours {text!r}: no such time of day")
    start = time(h1, m1)
    end = None if h2 == 24 else time(h2, m2)
    if end is not None and end <= start:
        raise ValueError(
            f"hours {text!r} must end after they start; split a night shift into "
            "two ranges (22:00-24:00 and 00:00-06:00)"
        )
    return start, end


HoursRange = Annotated[str, AfterValidator(_hours_range)]

_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(?::(\d{1,5}))?$")


def _host_port(text: str) -> str:
    match = _HOST_PORT.match(text)
    if not match or (match.group(2) and not 0 < int(match.group(2)) < 65536):
        raise ValueError(f"{text!r} must be HOST or HOST:PORT")
    return text


HostPort = Annotated[str, AfterValidator(_host_port)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Defaults(_Strict):
    ring_timeout: Seconds = 20.0


class Trunk(_Strict):
    """A SIP peer: destinations tried in order until one answers, and where its calls come from.

    Requests from a trunk's ``sources`` (and from its destinations' addresses) are trusted as
    coming from that trunk; a carrier that only sends calls in has sources and no destinations.
    """

    name: Name
    destinations: tuple[SipUriText, ...] = ()
    sources: tuple[HostPort, ...] = ()
    ring_timeout: Seconds | None = None

    @model_validator(mode="after")
    def _reachable_or_heard(self) -> Trunk:
        if not self.destinations and not self.sources:
            raise ValueError("give destinations (to call it), sources (calls from it) or both")
        return self


class Platform(_Strict):
    """A service a request can belong to: 12345, 110, another hotline, an enterprise.

    ``desk = true`` marks the platforms whose agents work through the bridge: calls are routed
    *from* them, so every category must have a route from each desk.
    """

    key: Name
    label: Label
    number: DialString | None = None
    trunk: Name | None = None
    desk: StrictBool = False
    say: str | None = Field(default=None, max_length=500)


class Seat(_Strict):
    id: SeatId
    platform: Name
    name: str | None = Field(default=None, max_length=100)


class SeatGroup(_Strict):
    name: Name
    platform: Name
    seats: tuple[SeatId, ...] = Field(min_length=1)


class Holidays(_Strict):
    """Public holidays and the weekend days worked instead of them (调休)."""

    name: Name
    dates: tuple[date, ...] = ()
    workdays: tuple[date, ...] = ()


class TimeWindow(_Strict):
    name: Name
    days: tuple[Weekday, ...] = Field(default=WEEKDAYS, min_length=1)
    hours: tuple[HoursRange, ...] = Field(default=("00:00-24:00",), min_length=1)
    holidays: Name | None = None


class NumberMatch(_Strict):
    """One of ``exact``, ``prefix`` or ``regex`` (full match); ``rewrite`` goes with ``regex``."""

    exact: DialString | None = None
    prefix: DialString | None = None
    regex: str | None = Field(default=None, min_length=1, max_length=200)
    rewrite: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _one_kind(self) -> NumberMatch:
        given = [k for k in ("exact", "prefix", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of exact, prefix or regex")
        if self.rewrite is not None and self.regex is None:
            raise ValueError("rewrite needs regex (its groups are \\1, \\2, ...)")
        return self


class InboundRule(_Strict):
    """Where a call into the bridge goes: a seat group, or straight out to a platform."""

    name: str | None = Field(default=None, max_length=100)
    called: NumberMatch | None = None
    calling: NumberMatch | None = None
    when: Name | None = None
    group: Name | None = None
    platform: Name | None = None

    @model_validator(mode="after")
    def _one_target(self) -> InboundRule:
        if (self.group is None) == (self.platform is None):
            raise ValueError("give exactly one of group or platform")
        return self


class Category(_Strict):
    key: Name
    label: Label
    keywords: tuple[Keyword, ...] = ()
    description: str = Field(default="", max_length=500)


class Rule(_Strict):
    """Origin platform(s) + category(ies) → action; the first matching rule decides."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str | None = Field(default=None, max_length=100)
    origins: Annotated[
        tuple[Reference, ...], BeforeValidator(_one_or_many), Field(alias="from", min_length=1)
    ]
    categories: Annotated[tuple[Reference, ...], BeforeValidator(_one_or_many)] = Field(
        min_length=1
    )
    action: Action
    to: Name | None = None
    when: Name | None = None

    @model_validator(mode="after")
    def _target_fits_action(self) -> Rule:
        if self.action == "keep" and self.to is not None:
            raise ValueError("action 'keep' stays at the origin: remove 'to'")
        if self.action != "keep" and self.to is None:
            raise ValueError(f"action {self.action!r} needs 'to' (a platform key)")
        return self


class UrgentOverride(_Strict):
    """Danger to life, property or public safety: this route wins over every category."""

    action: CallAction = "transfer"
    to: Name


class UnresolvedOverride(_Strict):
    """Ownership not agreed: first-contact responsibility (首接负责制) keeps the call."""

    action: Literal["keep"] = "keep"


class Overrides(_Strict):
    urgent: UrgentOverride | None = None
    unresolved: UnresolvedOverride = UnresolvedOverride()


class FeatureCode(_Strict):
    code: FeatureDigits
    action: Literal["transfer", "three_way", "cancel"]
    to: Name | None = None
    label: str | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _target_fits_action(self) -> FeatureCode:
        if self.action == "cancel" and self.to is not None:
            raise ValueError("action 'cancel' takes no 'to'")
        if self.action != "cancel" and self.to is None:
            raise ValueError(f"action {self.action!r} needs 'to' (a platform key)")
        return self


class Features(_Strict):
    digit_timeout: Annotated[float, Field(strict=True, gt=0, le=30)] = 3.0
    codes: tuple[FeatureCode, ...] = ()


class DialPlan(_Strict):
    """The whole plan, as written in one TOML file."""

    name: str = Field(default="", max_length=100)
    timezone: str = DEFAULT_TIMEZONE
    defaults: Defaults = Defaults()
    trunks: tuple[Trunk, ...] = ()
    platforms: tuple[Platform, ...] = Field(min_length=1)
    seats: tuple[Seat, ...] = ()
    seat_groups: tuple[SeatGroup, ...] = ()
    holidays: tuple[Holidays, ...] = ()
    time_windows: tuple[TimeWindow, ...] = ()
    inbound: tuple[InboundRule, ...] = ()
    categories: tuple[Category, ...] = Field(min_length=1)
    rules: tuple[Rule, ...] = Field(min_length=1)
    overrides: Overrides = Overrides()
    features: Features = Features()
