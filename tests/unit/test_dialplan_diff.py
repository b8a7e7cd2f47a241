"""Diff of two plans, and the hot-reload holder that swaps plans whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.dialplan import DialPlanError, DialPlanHolder, Router, load_text
from bridge.dialplan.diff import diff_routers, format_changes

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "dialplans" / "example.toml").read_text(encoding="utf-8")

SMALL = """
[[trunks]]
name = "pbx-110"
destinations = ["sip:110@127.0.0.1:5072"]
[[trunks]]
name = "pbx-12345"
destinations = ["sip:12345@127.0.0.1:5071"]

[[platforms]]
key = "12345"
label = "12345"
trunk = "pbx-12345"
desk = true
[[platforms]]
key = "110"
label = "110"
trunk = "pbx-110"
desk = true

[[categories]]
key = "police"
label = "警情"
[[categories]]
key = "market"
label = "市场监督管理"

[[rules]]
from = "12345"
categories = "police"
action = "transfer"
to = "110"
[[rules]]
from = "110"
categories = "market"
action = "transfer"
to = "12345"
[[rules]]
from = "*"
categories = "*"
action = "keep"

[overrides.urgent]
to = "110"
"""


def router(text: str) -> Router:
    result = load_text(text, "plan.toml")
    assert result.router is not None, [str(p) for p in result.problems]
    return result.router


def test_a_plan_compared_with_itself_changes_nothing() -> None:
    assert diff_routers(router(EXAMPLE), router(EXAMPLE)) == []


def test_renaming_rules_and_comments_changes_nothing() -> None:
    edited = EXAMPLE.replace('name = "A: 12345 → 110"', 'name = "police matters"')
    edited = edited.replace("# A. 12345 → 110", "# police")
    assert edited != EXAMPLE
    assert diff_routers(router(EXAMPLE), router(edited)) == []


def test_action_change_is_listed_per_origin_and_category() -> None:
    new = SMALL.replace('action = "transfer"\nto = "110"', 'action = "three_way"\nto = "110"')
    lines = format_changes(diff_routers(router(SMALL), router(new)))
    assert lines == [
        "from 12345, police (警情): transfer to 110 via sip:110@127.0.0.1:5072 (ring 20s)"
        " → three_way to 110 via sip:110@127.0.0.1:5072 (ring 20s)"
    ]


def test_moving_a_trunk_changes_every_route_that_uses_it() -> None:
    new = EXAMPLE.replace('"sip:110@127.0.0.1:5080"', '"sip:110@127.0.0.1:5090"')
    changes = diff_routers(router(EXAMPLE), router(new))
    police = ["criminal", "public_order", "road_traffic", "crime_report", "emergency_help"]
    police.append("police_complaint")
    assert [(c.origin, c.subject) for c in changes] == [
        ("12345", "(urgent)"),
        *[("12345", key) for key in police],
        ("*", "feature *1"),
        ("*", "feature *2"),
    ]
    for change in changes:
        assert change.before is not None
        assert change.after == change.before.replace(":5080", ":5090")


def test_added_and_removed_categories() -> None:
    new = SMALL.replace(
        '[[categories]]\nkey = "market"\nlabel = "市场监督管理"',
        '[[categories]]\nkey = "tobacco"\nlabel = "烟草警情"',
    ).replace('from = "110"\ncategories = "market"', 'from = "110"\ncategories = "tobacco"')
    assert format_changes(diff_routers(router(SMALL), router(new))) == [
        "from 12345, tobacco (烟草警情): added: keep at 12345",
        "from 12345, market (市场监督管理): removed (was: keep at 12345)",
        "from 110, tobacco (烟草警情): added: transfer to 12345 via sip:12345@127.0.0.1:5071"
        " (ring 20s)",
        "from 110, market (市场监督管理): removed (was: transfer to 12345 via"
        " sip:12345@127.0.0.1:5071 (ring 20s))",
    ]


def test_a_platform_that_stops_being_a_desk_loses_its_routes() -> None:
    new = SMALL.replace('trunk = "pbx-110"\ndesk = true', 'trunk = "pbx-110"')
    new = new.replace(
        '[[rules]]\nfrom = "110"\ncategories = "market"\naction = "transfer"\nto = "12345"', ""
    )
    assert format_changes(diff_routers(router(SMALL), router(new))) == [
        "from 110, (urgent): removed (was: keep at 110)",
        "from 110, (unresolved): removed (was: keep at 110)",
        "from 110, police (警情): removed (was: keep at 110)",
        "from 110, market (市场监督管理): removed (was: transfer to 12345 via"
        " sip:12345@127.0.0.1:5071 (ring 20s))",
    ]


def test_windowed_routes_are_described_with_their_windows() -> None:
    new = SMALL.replace(
        '[[rules]]\nfrom = "12345"',
        '[[time_windows]]\nname = "office"\ndays = ["mon"]\n\n'
        '[[rules]]\nfrom = "12345"\ncategories = "police"\naction = "keep"\nwhen = "office"\n\n'
        '[[rules]]\nfrom = "12345"',
        1,
    )
    assert format_changes(diff_routers(router(SMALL), router(new))) == [
        "from 12345, police (警情): transfer to 110 via sip:110@127.0.0.1:5072 (ring 20s)"
        " → during office: keep at 12345;"
        " otherwise: transfer to 110 via sip:110@127.0.0.1:5072 (ring 20s)"
    ]


def test_inbound_changes_are_reported_once() -> None:
    new = EXAMPLE.replace(
        'seats = ["agent1001", "agent1002", "agent1003"]', 'seats = ["agent1002", "agent1001"]'
    )
    assert format_changes(diff_routers(router(EXAMPLE), router(new))) == [
        "inbound (incoming calls): inbound rules, seat groups, seats or time windows changed"
    ]
    holidays = EXAMPLE.replace("2025-09-28, ", "")
    assert len(diff_routers(router(EXAMPLE), router(holidays))) == 1


# -- hot reload ------------------------------------------------------------------------------


def line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_holder_refuses_to_start_on_a_bad_plan(tmp_path: Path) -> None:
    text = SMALL.replace('[overrides.urgent]\nto = "110"', '[overrides.urgent]\nto = "119"')
    bad = write(tmp_path / "bad.toml", text)
    with pytest.raises(DialPlanError) as caught:
        DialPlanHolder.from_file(bad)
    line = line_of(text, 'to = "119"')
    assert [str(p) for p in caught.value.problems] == [f"{bad}:{line}: unknown platform '119'"]


def test_candidate_is_checked_beside_the_current_plan_then_swapped(tmp_path: Path) -> None:
    plan = write(tmp_path / "plan.toml", SMALL)
    holder = DialPlanHolder.from_file(plan)
    old_router = holder.router
    held = holder.router.route("12345", "police")
    write(
        plan, SMALL.replace('action = "transfer"\nto = "110"', 'action = "three_way"\nto = "110"')
    )

    result = holder.load_candidate()
    assert result.ok
    assert holder.router is old_router  # nothing in force changed yet
    assert holder.router.route("12345", "police").action == "transfer"

    assert holder.swap() is holder.router
    assert holder.generation == 2
    assert holder.router.route("12345", "police").action == "three_way"
    assert held.action == "transfer"  # a call in progress keeps its decision
    assert holder.candidate is None
    with pytest.raises(LookupError):
        holder.swap()


def test_failed_reload_changes_nothing_and_reports_lines(tmp_path: Path) -> None:
    plan = write(tmp_path / "plan.toml", SMALL)
    holder = DialPlanHolder.from_file(plan)
    before = holder.router
    text = SMALL.replace('action = "keep"', 'action = "kep"')
    write(plan, text)

    outcome = holder.reload()
    assert not outcome.ok
    assert outcome.generation == 1
    line = line_of(text, 'action = "kep"')
    assert outcome.problems == (
        f"{plan}:{line}: rules[2].action: Input should be 'transfer', 'three_way', 'guide'"
        " or 'keep'",
    )
    assert holder.router is before
    assert holder.candidate is None
    with pytest.raises(LookupError):
        holder.swap()


def test_failed_candidate_drops_an_older_good_one(tmp_path: Path) -> None:
    good = write(tmp_path / "good.toml", SMALL)
    holder = DialPlanHolder.from_file(good)
    assert holder.load_candidate(good).ok
    bad = write(tmp_path / "bad.toml", "not toml at all")
    assert not holder.load_candidate(bad).ok
    with pytest.raises(LookupError):
        holder.swap()


def test_successful_reload_reports_what_changed(tmp_path: Path) -> None:
    plan = write(tmp_path / "plan.toml", SMALL)
    holder = DialPlanHolder.from_file(plan)
    new = write(
        tmp_path / "new.toml",
        SMALL.replace('action = "transfer"\nto = "110"', 'action = "three_way"\nto = "110"'),
    )
    outcome = holder.reload(new)
    assert outcome.ok
    assert outcome.generation == 2
    assert outcome.path == str(new)
    assert holder.path == str(new)
    assert len(outcome.sha256) == 64
    assert len(outcome.changes) == 1
    assert outcome.changes[0].startswith("from 12345, police (警情): transfer to 110")
