"""``bridge dialplan check|route|diff|suggest`` as an admin runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "dialplans" / "example.toml")
MINIMAL = str(ROOT / "dialplans" / "minimal.toml")
BAD = ROOT / "tests" / "data" / "dialplans"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(["dialplan", *argv])
    return status, capsys.readouterr().out


def test_check_valid_plans(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = run(capsys, "check", EXAMPLE, MINIMAL)
    assert status == 0
    assert out.splitlines() == [
        f"{EXAMPLE}: ok (9 platforms, 31 categories, 11 rules, 4 inbound rules, 5 feature codes)",
        f"{MINIMAL}: ok (2 platforms, 2 categories, 2 rules, 1 inbound rule, 2 feature codes)",
    ]


def test_check_prints_file_line_message_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    bad = BAD / "references.toml"
    status, out = run(capsys, "check", EXAMPLE, str(bad))
    assert status == 1
    lines = out.splitlines()
    assert lines[0].startswith(f"{EXAMPLE}: ok")
    expected = bad.with_suffix(".expected").read_text(encoding="utf-8").splitlines()
    assert lines[1:] == [f"{BAD}/{line}" for line in expected]


def test_route_prints_the_decision(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = run(capsys, "route", EXAMPLE, "--from", "12345", "--category", "criminal")
    assert status == 0
    assert out.splitlines()[:5] == [
        "action:      transfer",
        "destination: 110 (110 报警服务台)",
        "number:      110",
        "uris:        sip:110@127.0.0.1:5072, sip:110@127.0.0.1:5080",
        "ring:        15s",
    ]
    assert out.splitlines()[5].startswith("reason:      rules[0] 'A: 12345 → 110' (example.toml:")


def test_route_urgent_and_unresolved(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = run(
        capsys, "route", EXAMPLE, "--from", "12345", "--category", "market", "--urgent"
    )
    assert status == 0
    assert "action:      transfer" in out
    assert "destination: 110 (110 报警服务台)" in out
    status, out = run(capsys, "route", EXAMPLE, "--from", "110")
    assert status == 0
    assert "action:      keep" in out
    assert "first-contact responsibility keeps it at 110" in out


def test_route_guide_says_the_number(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = run(capsys, "route", EXAMPLE, "--from", "110", "--category", "water_rescue")
    assert status == 0
    assert "action:      guide" in out
    assert "number:      12395" in out
    assert "say:         水上遇险请拨打 12395。" in out


def test_route_at_a_given_time(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    plan = (ROOT / "dialplans" / "minimal.toml").read_text(encoding="utf-8")
    plan = plan.replace(
        "[[rules]]\n",
        '[[time_windows]]\nname = "office"\ndays = ["mon"]\nhours = ["09:00-17:00"]\n\n'
        '[[rules]]\nfrom = "12345"\ncategories = "police"\naction = "three_way"\n'
        'to = "110"\nwhen = "office"\n\n[[rules]]\n',
        1,
    )
    path = tmp_path / "windowed.toml"
    path.write_text(plan, encoding="utf-8")
    args = ["route", str(path), "--from", "12345", "--category", "police", "--at"]
    assert run(capsys, *args, "2025-03-03T10:00")[1].startswith("action:      three_way")
    assert run(capsys, *args, "2025-03-03T18:00")[1].startswith("action:      transfer")
    assert run(capsys, *args, "2025-03-03T02:00+00:00")[1].startswith("action:      three_way")


def test_route_unknown_names_fail(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = run(capsys, "route", EXAMPLE, "--from", "12345", "--category", "crimnal")
    assert (status, out) == (1, "error: unknown category 'crimnal'\n")
    status, out = run(capsys, "route", EXAMPLE, "--from", "119", "--category", "criminal")
    assert status == 1
    assert out.startswith("error: unknown origin '119'")


def test_route_on_a_bad_plan_prints_its_errors(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = run(capsys, "route", str(BAD / "no_urgent.toml"), "--from", "12345")
    assert status == 1
    assert out.startswith(f"{BAD / 'no_urgent.toml'}:1: no urgent route")


def test_diff_same_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "diff", EXAMPLE, EXAMPLE) == (0, "no routing changes\n")


def test_diff_lists_changes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = (ROOT / "dialplans" / "example.toml").read_text(encoding="utf-8")
    new = tmp_path / "new.toml"
    new.write_text(
        text.replace(
            'categories = ["tobacco"]\naction = "guide"\nto = "12313"',
            'categories = ["tobacco"]\naction = "transfer"\nto = "12313"',
        ),
        encoding="utf-8",
    )
    status, out = run(capsys, "diff", EXAMPLE, str(new))
    assert status == 0
    assert out.splitlines() == [
        "from 12345, tobacco (烟草警情): guide to 12313 (ring 12313)"
        " → transfer to 12313 via sip:12313@127.0.0.1:5073 (ring 20s)",
        "from 110, tobacco (烟草警情): guide to 12313 (ring 12313)"
        " → transfer to 12313 via sip:12313@127.0.0.1:5073 (ring 20s)",
        "2 routing changes",
    ]


def test_diff_with_a_bad_plan_fails(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = run(capsys, "diff", EXAMPLE, str(BAD / "syntax.toml"))
    assert status == 1
    assert out == f"{BAD / 'syntax.toml'}:9: TOML syntax: Illegal character '\\n'\n"


def test_suggest_ranks_categories(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = run(capsys, "suggest", EXAMPLE, "楼下有人打架斗殴，还有人违章停车")
    assert status == 0
    assert out.splitlines() == [
        "  2  public_order (治安类警情): 打架、斗殴",
        "  1  city_appearance (市容管理): 违章停车",
    ]


def test_suggest_without_a_match(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = run(capsys, "suggest", EXAMPLE, "你好")
    assert status == 0
    assert "no category matches" in out


def test_dialplan_without_a_command_shows_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dialplan"]) == 2
    assert "usage:" in capsys.readouterr().out
