"""Routing with the example plan: the whole routing list of the linkage plan, both directions.

The expected table below is written from the policy (分流转办事项清单, sections A–D), not from
the plan file, so a plan edit that breaks the policy fails here.
"""

from __future__ import annotations

import timeit
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.dialplan import PARTIAL, FeatureCode, Router, RoutingError, load_file, load_text

ROOT = Path(__file__).resolve().parents[2]

# A. 12345 → 110
POLICE = {
    "criminal": "刑事类警情",
    "public_order": "治安类警情",
    "road_traffic": "道路交通类警情",
    "crime_report": "违法犯罪报警",
    "emergency_help": "紧急求助",
    "police_complaint": "民警违法违纪投诉",
}
# B. 110 → 12345
GOVERNMENT = {
    "health": "卫生医疗",
    "labour": "劳动和社会保障",
    "forestry_water": "林水管理",
    "market": "市场监督管理",
    "civil_relief": "民政救助",
    "public_facility": "公共设施",
    "culture_media": "文广管理",
    "environment": "环保管理",
    "city_appearance": "市容管理",
    "construction": "施工管理",
    "food_drug": "食品药品监管",
    "work_safety": "安全生产监督",
    "greening": "农林绿化",
    "culture_tourism": "文旅管理",
    "transport": "交通运输",
    "housing": "住房城乡建设",
    "maritime": "海事管理",
    "civil_dispute": "其他纠纷类",
}
# C. and D.: key → (label, platform, number told to the caller)
GUIDED = {
    "tobacco": ("烟草警情", "12313", "12313"),
    "water_rescue": ("水上遇险搜救", "12395", "12395"),
    "legal": ("司法联动", "12348", "12348"),
    "power_repair": ("电力抢修", "power", "95598"),
    "utility_repair": ("水气热抢修", "water_gas_heat", "96000"),
    "telecom_repair": ("通信抢修", "telecom", "10000"),
    "locksmith": ("开锁联动", "locksmith", "96001"),
}
DESKS = ("12345", "110")
PBX_110 = ("sip:110@127.0.0.1:5072", "sip:110@127.0.0.1:5080")
PBX_12345 = ("sip:12345@127.0.0.1:5071",)

MONDAY_MORNING = datetime(2025, 3, 3, 9, 0)


@pytest.fixture(scope="module")
def router() -> Router:
    result = load_file(ROOT / "dialplans" / "example.toml")
    assert result.router is not None, result.problems
    return result.router


def test_example_has_exactly_the_policys_categories(router: Router) -> None:
    expected = {**POLICE, **GOVERNMENT, **{k: v[0] for k, v in GUIDED.items()}}
    assert {key: c.label for key, c in router.categories.items()} == expected
    assert router.desks == DESKS


@pytest.mark.parametrize("category", POLICE)
def test_police_categories_go_from_12345_to_110(router: Router, category: str) -> None:
    decision = router.route("12345", category)
    assert decision.action == "transfer"
    assert decision.destination == "110"
    assert decision.uris == PBX_110
    assert decision.ring_timeout == 15
    assert POLICE[category] in decision.reason
    assert "A: 12345 → 110" in decision.reason


@pytest.mark.parametrize("category", POLICE)
def test_police_categories_stay_at_110(router: Router, category: str) -> None:
    decision = router.route("110", category)
    assert (decision.action, decision.destination, decision.uris) == ("keep", "110", ())


@pytest.mark.parametrize("category", GOVERNMENT)
def test_government_categories_go_from_110_to_12345(router: Router, category: str) -> None:
    decision = router.route("110", category)
    assert decision.action == "transfer"
    assert decision.destination == "12345"
    assert decision.uris == PBX_12345
    assert decision.ring_timeout == 25
    assert GOVERNMENT[category] in decision.reason


@pytest.mark.parametrize("category", GOVERNMENT)
def test_government_categories_stay_at_12345(router: Router, category: str) -> None:
    decision = router.route("12345", category)
    assert (decision.action, decision.destination, decision.uris) == ("keep", "12345", ())


@pytest.mark.parametrize("origin", DESKS)
@pytest.mark.parametrize("category", GUIDED)
def test_other_hotlines_and_enterprises_are_guided(
    router: Router, origin: str, category: str
) -> None:
    _, platform, number = GUIDED[category]
    decision = router.route(origin, category)
    assert decision.action == "guide"
    assert decision.destination == platform
    assert decision.number == number
    assert f"ring {number}" in decision.reason


def test_guide_to_a_hotline_carries_what_to_say(router: Router) -> None:
    assert router.route("110", "tobacco").say == "烟草相关问题请拨打 12313。"


@pytest.mark.parametrize("category", [*POLICE, *GOVERNMENT, *GUIDED, None])
def test_urgent_goes_to_110_first_whatever_the_category(
    router: Router, category: str | None
) -> None:
    decision = router.route("12345", category, urgent=True)
    assert decision.urgent
    assert decision.action == "transfer"
    assert decision.destination == "110"
    assert decision.uris == PBX_110
    assert decision.rule == "overrides.urgent"


def test_urgent_at_110_stays_at_110(router: Router) -> None:
    decision = router.route("110", "market", urgent=True)
    assert (decision.action, decision.destination, decision.urgent) == ("keep", "110", True)


@pytest.mark.parametrize("origin", DESKS)
def test_unresolved_ownership_stays_at_first_contact(router: Router, origin: str) -> None:
    decision = router.route(origin, None)
    assert (decision.action, decision.destination) == ("keep", origin)
    assert "first-contact" in decision.reason


def test_reason_names_the_rule_and_its_line(router: Router) -> None:
    text = (ROOT / "dialplans" / "example.toml").read_text(encoding="utf-8").splitlines()
    reason = router.route("110", "market").reason
    line = int(reason.split("example.toml:")[1].split(")")[0])
    assert text[line - 1] == "[[rules]]"
    assert text[line] == 'name = "B: 110 → 12345"'


def test_unknown_origin_or_category_is_refused(router: Router) -> None:
    with pytest.raises(RoutingError, match="unknown category"):
        router.route("12345", "crimnal")
    with pytest.raises(RoutingError, match="unknown origin"):
        router.route("12313", "criminal")


def test_decisions_are_immutable_and_shared(router: Router) -> None:
    first = router.route("12345", "criminal")
    assert router.route("12345", "criminal") is first
    with pytest.raises(AttributeError):
        first.destination = "12345"  # type: ignore[misc]


# -- inbound and time windows -------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "group"),
    [
        (MONDAY_MORNING, "12345-day"),
        (datetime(2025, 3, 3, 8, 0), "12345-day"),  # window start is inside
        (datetime(2025, 3, 3, 20, 0), "12345-night"),  # window end is outside
        (datetime(2025, 3, 1, 10, 0), "12345-night"),  # Saturday
        (datetime(2025, 10, 1, 10, 0), "12345-night"),  # National Day, a Wednesday
        (datetime(2025, 9, 28, 10, 0), "12345-day"),  # Sunday worked instead (调休)
        (datetime(2025, 3, 3, 1, 0, tzinfo=UTC), "12345-day"),  # 09:00 in Shanghai
        (datetime(2025, 3, 3, 13, 0, tzinfo=UTC), "12345-night"),  # 21:00 in Shanghai
    ],
)
def test_inbound_12345_follows_the_day_shift(router: Router, now: datetime, group: str) -> None:
    decision = router.route_inbound("12345", "13800000000", now)
    assert decision is not None
    assert decision.seat_group == group
    assert decision.platform == "12345"


def test_inbound_gives_the_group_seats_in_order(router: Router) -> None:
    decision = router.route_inbound("12345", "13800000000", MONDAY_MORNING)
    assert decision is not None
    assert decision.seats == ("agent1001", "agent1002", "agent1003")
    assert decision.called == "12345"
    assert decision.calling == "13800000000"


def test_inbound_regex_rewrites_the_called_number(router: Router) -> None:
    decision = router.route_inbound("0773-110", "13800000000", MONDAY_MORNING)
    assert decision is not None
    assert (decision.seat_group, decision.called) == ("110-desk", "110")


def test_inbound_reason_keeps_caller_numbers_out(router: Router) -> None:
    decision = router.route_inbound("12345", "13812345678", MONDAY_MORNING)
    assert decision is not None
    assert "13812345678" not in decision.reason


def test_inbound_without_a_match_is_none(router: Router) -> None:
    assert router.route_inbound("12306", "13800000000", MONDAY_MORNING) is None


WINDOWED_PLAN = """
[[trunks]]
name = "pbx-110"
destinations = ["sip:110@127.0.0.1:5072"]
[[trunks]]
name = "legal"
destinations = ["sip:12348@127.0.0.1:5075"]
ring_timeout = 30

[[platforms]]
key = "12345"
label = "12345"
desk = true
[[platforms]]
key = "110"
label = "110"
trunk = "pbx-110"
[[platforms]]
key = "12348"
label = "12348 公共法律服务热线"
number = "12348"
trunk = "legal"

[[holidays]]
name = "cn"
dates = [2025-10-01]
workdays = [2025-09-28]

[[time_windows]]
name = "office"
days = ["mon", "tue", "wed", "thu", "fri"]
hours = ["08:30-12:00", "14:00-17:30"]
holidays = "cn"

[[time_windows]]
name = "holiday-duty"
days = ["hol"]
holidays = "cn"

[[categories]]
key = "legal"
label = "司法联动"

[[rules]]
from = "12345"
categories = "legal"
action = "three_way"
to = "12348"
when = "office"

[[rules]]
from = "12345"
categories = "legal"
action = "transfer"
to = "12348"
when = "holiday-duty"

[[rules]]
from = "12345"
categories = "legal"
action = "guide"
to = "12348"

[overrides.urgent]
action = "three_way"
to = "110"
"""


@pytest.fixture(scope="module")
def windowed() -> Router:
    result = load_text(WINDOWED_PLAN, "windowed.toml")
    assert result.router is not None, result.problems
    return result.router


@pytest.mark.parametrize(
    ("now", "action"),
    [
        (datetime(2025, 3, 3, 8, 29), "guide"),
        (datetime(2025, 3, 3, 8, 30), "three_way"),
        (datetime(2025, 3, 3, 12, 30), "guide"),  # lunch break
        (datetime(2025, 3, 3, 17, 29, 59), "three_way"),
        (datetime(2025, 3, 3, 17, 30), "guide"),
        (datetime(2025, 3, 2, 10, 0), "guide"),  # Sunday
        (datetime(2025, 9, 28, 10, 0), "three_way"),  # Sunday worked instead
        (datetime(2025, 10, 1, 10, 0), "transfer"),  # holiday duty
    ],
)
def test_rule_time_windows_and_holidays(windowed: Router, now: datetime, action: str) -> None:
    decision = windowed.route("12345", "legal", now=now)
    assert decision.action == action
    assert decision.destination == "12348"


def test_windowed_rule_says_when_it_applies(windowed: Router) -> None:
    decision = windowed.route("12345", "legal", now=datetime(2025, 3, 3, 9, 0))
    assert "during office" in decision.reason
    assert decision.ring_timeout == 30


def test_urgent_three_way_override(windowed: Router) -> None:
    decision = windowed.route("12345", "legal", urgent=True, now=datetime(2025, 3, 3, 9, 0))
    assert (decision.action, decision.destination) == ("three_way", "110")


# -- feature codes and suggestions ---------------------------------------------------------


def test_feature_codes_complete_partial_and_unknown(router: Router) -> None:
    code = router.match_feature_code("*1")
    assert isinstance(code, FeatureCode)
    assert (code.action, code.destination, code.uris) == ("transfer", "110", PBX_110)
    three_way = router.match_feature_code("*2")
    assert isinstance(three_way, FeatureCode)
    assert (three_way.action, three_way.destination) == ("three_way", "110")
    to_12345 = router.match_feature_code("*3")
    assert isinstance(to_12345, FeatureCode)
    assert (to_12345.action, to_12345.destination) == ("transfer", "12345")
    cancel = router.match_feature_code("*0")
    assert isinstance(cancel, FeatureCode)
    assert (cancel.action, cancel.destination) == ("cancel", None)
    assert router.match_feature_code("*") == PARTIAL
    assert router.match_feature_code("") == PARTIAL
    assert router.match_feature_code("*9") is None
    assert router.match_feature_code("1") is None
    assert router.digit_timeout == 3.0


@pytest.mark.parametrize(
    ("text", "best"),
    [
        ("我家楼下有人打架斗殴", "public_order"),
        ("路口发生交通事故，两车追尾", "road_traffic"),
        ("小区电梯故障困了一上午，物业不管", "market"),
        ("工地夜间施工扰民，还有扬尘", "construction"),
        ("老板拖欠工资三个月了", "labour"),
        ("有人卖假烟", "tobacco"),
        ("我们小区停电了", "power_repair"),
        ("钥匙丢了进不了门，想找人开锁", "locksmith"),
        ("想咨询法律援助和律师", "legal"),
        ("医院医疗纠纷", "health"),
        ("ＡＴＭ旁边有人被偷了钱包", "criminal"),
    ],
)
def test_suggest_ranks_the_obvious_category_first(router: Router, text: str, best: str) -> None:
    ranked = router.suggest(text)
    assert ranked, text
    assert ranked[0][0] == best, ranked


def test_suggest_counts_hits_and_ignores_unrelated_text(router: Router) -> None:
    ranked = dict(router.suggest("违章停车，占道经营，垃圾没人清运"))
    assert ranked["city_appearance"] == 3
    assert router.suggest("你好，请问今天天气怎么样") == []
    assert len(router.suggest("打架 违章停车 停电", limit=2)) == 2


def test_routing_is_fast(router: Router) -> None:
    """Well under 50 µs per decision (bench/bench_routing.py measures it properly)."""
    pairs = [(o, c) for o in DESKS for c in router.categories]
    per_call = timeit.timeit(lambda: [router.route(o, c) for o, c in pairs], number=20) / (
        20 * len(pairs)
    )
    assert per_call < 50e-6


def test_unchecked_plan_with_a_gap_keeps_the_call_at_first_contact() -> None:
    """The checker refuses such plans; the router still never leaves a caller without a route."""
    import tomllib

    from bridge.dialplan.schema import DialPlan

    text = (ROOT / "tests" / "data" / "dialplans" / "coverage.toml").read_text(encoding="utf-8")
    gappy = Router(DialPlan.model_validate(tomllib.loads(text)))
    outside = gappy.route("12345", "legal", now=datetime(2025, 3, 2, 10, 0))
    assert (outside.action, outside.destination, outside.rule) == ("keep", "12345", "first-contact")
    inside = gappy.route("12345", "legal", now=datetime(2025, 3, 3, 10, 0))
    assert (inside.action, inside.destination) == ("three_way", "12348")
    assert gappy.route("110", "police").action == "keep"
