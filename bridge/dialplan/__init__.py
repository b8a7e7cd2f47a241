"""Dial plans: the routing policy as admin-edited TOML, checked whole, routed in microseconds.

Load with :func:`load_file` (never raises for a bad plan: look at ``problems``), ask the
:class:`Router` it builds, and replace the plan in force only through :class:`DialPlanHolder`.
"""

from bridge.dialplan.holder import DialPlanError, DialPlanHolder, ReloadOutcome
from bridge.dialplan.loader import LoadResult, Problem, load_file, load_text
from bridge.dialplan.router import (
    PARTIAL,
    FeatureCode,
    InboundDecision,
    RouteDecision,
    Router,
    RoutingError,
)

__all__ = [
    "PARTIAL",
    "DialPlanError",
    "DialPlanHolder",
    "FeatureCode",
    "InboundDecision",
    "LoadResult",
    "Problem",
    "ReloadOutcome",
    "RouteDecision",
    "Router",
    "RoutingError",
    "load_file",
    "load_text",
]
