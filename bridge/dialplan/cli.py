"""``bridge dialplan check|route|diff|suggest``: put a plan through its paces before it goes live.

Output goes to stdout, one finding per line as ``FILE:LINE: message``, so editors and CI can jump
to the line. Exit status: 0 when the files are valid (for ``diff``, whatever changed), 1 when a
plan has errors or a question names something the plan does not know.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from bridge.dialplan.diff import diff_routers, format_changes
from bridge.dialplan.loader import LoadResult, load_file
from bridge.dialplan.router import Router, RoutingError


def add_dialplan_commands(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("dialplan", help="check and query dial plans")
    commands = parser.add_subparsers(dest="dialplan_command", metavar="COMMAND")

    check = commands.add_parser("check", help="validate plans; print FILE:LINE: message")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(handler=_check)

    route = commands.add_parser("route", help="print where a request would go")
    route.add_argument("file", metavar="FILE")
    route.add_argument("--from", dest="origin", required=True, metavar="PLATFORM")
    route.add_argument(
        "--category", metavar="KEY", help="category key; omit for unresolved ownership"
    )
    route.add_argument("--urgent", action="store_true", help="danger to life or safety")
    route.add_argument(
        "--at",
        type=datetime.fromisoformat,
        metavar="DATETIME",
        help="ISO date and time (plan's time zone unless an offset is given); default now",
    )
    route.set_defaults(handler=_route)

    diff = commands.add_parser("diff", help="print what routing a new plan changes")
    diff.add_argument("old", metavar="OLD")
    diff.add_argument("new", metavar="NEW")
    diff.set_defaults(handler=_diff)

    suggest = commands.add_parser("suggest", help="rank categories for a request's wording")
    suggest.add_argument("file", metavar="FILE")
    suggest.add_argument("text")
    suggest.add_argument("--limit", type=int, default=5, help="at most this many (default 5)")
    suggest.set_defaults(handler=_suggest)


def _load(path: str) -> Router | None:
    result: LoadResult = load_file(path)
    for problem in result.problems:
        print(problem)
    return result.router


def _check(args: argparse.Namespace) -> int:
    status = 0
    for path in args.files:
        router = _load(path)
        if router is None:
            status = 1
            continue
        plan = router.plan
        counts = [
            _count(len(plan.platforms), "platform"),
            _count(len(plan.categories), "category", "categories"),
            _count(len(plan.rules), "rule"),
            _count(len(plan.inbound), "inbound rule"),
            _count(len(plan.features.codes), "feature code"),
        ]
        print(f"{path}: ok ({', '.join(counts)})")
    return status


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def _route(args: argparse.Namespace) -> int:
    router = _load(args.file)
    if router is None:
        return 1
    try:
        decision = router.route(args.origin, args.category, urgent=args.urgent, now=args.at)
    except RoutingError as exc:
        print(f"error: {exc}")
        return 1
    print(f"action:      {decision.action}")
    print(f"destination: {decision.destination} ({decision.destination_label})")
    if decision.action == "guide" or decision.number:
        print(f"number:      {decision.number or '-'}")
    if decision.say:
        print(f"say:         {decision.say}")
    if decision.uris:
        print(f"uris:        {', '.join(decision.uris)}")
        print(f"ring:        {decision.ring_timeout:g}s")
    print(f"reason:      {decision.reason}")
    return 0


def _diff(args: argparse.Namespace) -> int:
    old, new = _load(args.old), _load(args.new)
    if old is None or new is None:
        return 1
    lines = format_changes(diff_routers(old, new))
    for line in lines:
        print(line)
    if not lines:
        print("no routing changes")
    else:
        print(f"{len(lines)} routing change{'s' if len(lines) > 1 else ''}")
    return 0


def _suggest(args: argparse.Namespace) -> int:
    router = _load(args.file)
    if router is None:
        return 1
    found = router.explain_suggestion(args.text)[: max(args.limit, 0)]
    if not found:
        print("no category matches; ask the caller more, or treat ownership as unresolved")
        return 0
    for suggestion in found:
        label = router.label(suggestion.category)
        hits = "、".join(suggestion.keywords)
        print(f"{suggestion.score:3d}  {suggestion.category} ({label}): {hits}")
    return 0
