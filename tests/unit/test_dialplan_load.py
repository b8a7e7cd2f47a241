"""Loading dial plans: the shipped plans are valid; bad plans give FILE:LINE: message."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.dialplan import load_file, load_text
from bridge.dialplan.loader import load_bytes
from bridge.dialplan.locate import LineMap

ROOT = Path(__file__).resolve().parents[2]
PLANS = ROOT / "dialplans"
BAD = ROOT / "tests" / "data" / "dialplans"
BAD_PLANS = sorted(BAD.glob("*.toml"))


@pytest.mark.parametrize("name", ["example.toml", "minimal.toml"])
def test_shipped_plans_are_valid(name: str) -> None:
    result = load_file(PLANS / name)
    assert result.problems == ()
    assert result.ok
    assert len(result.sha256) == 64


def test_every_bad_plan_has_its_golden_output() -> None:
    assert len(BAD_PLANS) >= 10
    for plan in BAD_PLANS:
        assert plan.with_suffix(".expected").exists(), plan.name


@pytest.mark.parametrize("plan", BAD_PLANS, ids=lambda p: p.stem)
def test_golden_error_messages(plan: Path) -> None:
    result = load_bytes(plan.read_bytes(), plan.name)
    got = "".join(f"{problem}\n" for problem in result.problems)
    assert not result.ok
    assert got == plan.with_suffix(".expected").read_text(encoding="utf-8")


def test_error_points_at_the_offending_line_of_a_multiline_array() -> None:
    text = (
        "[[platforms]]\n"
        'key = "12345"\n'
        'label = "12345"\n'
        "desk = true\n"
        "[[categories]]\n"
        'key = "a"\n'
        'label = "A"\n'
        "[[rules]]\n"
        'from = "12345"\n'
        "categories = [\n"
        '  "a",\n'
        '  "b",   # a typo lives here\n'
        "]\n"
        'action = "keep"\n'
        "[overrides.urgent]\n"
        'to = "12345"\n'
    )
    result = load_text(text, "p.toml")
    assert [str(p) for p in result.problems] == [
        "p.toml:12: unknown category 'b'",
        "p.toml:16: platform '12345' has no trunk to call",
    ]


def test_bytes_that_are_not_utf8_are_reported_at_their_line() -> None:
    result = load_bytes(b'name = "x"\n\nlabel = "\xff"\n', "latin.toml")
    assert [str(p) for p in result.problems] == ["latin.toml:3: not valid UTF-8"]


def test_missing_file_is_a_problem_not_an_exception(tmp_path: Path) -> None:
    result = load_file(tmp_path / "nope.toml")
    assert not result.ok
    assert str(result.problems[0]).startswith(f"{tmp_path / 'nope.toml'}:1: cannot read")


def test_a_failed_load_has_no_router_or_plan() -> None:
    result = load_text("platforms = 3\n", "p.toml")
    assert result.router is None
    assert result.plan is None
    assert str(result.problems[0]).startswith("p.toml:1: platforms: ")


def test_line_map_places_tables_arrays_and_inline_tables() -> None:
    text = (
        "# comment\n"
        'name = "x"\n'
        "[[inbound]]\n"
        "called = { exact = '12345' }\n"
        "[[inbound]]\n"
        "calling = { regex = '''^(\\d+)$''',\n"
        "            rewrite = '\\1' }\n"
        'note = """\n'
        "two\n"
        'lines"""\n'
        "when = 'w'\n"
        "[[features.codes]]\n"
        "code = '*1'\n"
        "[[features.codes]]\n"
        "code = '*2'\n"
        '[platforms."quoted key"]\n'
        "a.b = 1\n"
    )
    lines = LineMap(text)
    assert lines.line_of(("name",)) == 2
    assert lines.line_of(("inbound", 0, "called", "exact")) == 4
    assert lines.line_of(("inbound", 1)) == 5
    assert lines.line_of(("inbound", 1, "calling", "rewrite")) == 7
    assert lines.line_of(("inbound", 1, "when")) == 11
    assert lines.line_of(("features", "codes", 1, "code")) == 15
    assert lines.line_of(("platforms", "quoted key", "a", "b")) == 17
    assert lines.line_of(("inbound", 1, "not there")) == 5
    assert lines.line_of(("nothing",)) == 1


def test_readme_documents_every_key_of_the_format() -> None:
    from pydantic import BaseModel

    from bridge.dialplan import schema

    readme = (PLANS / "README.md").read_text(encoding="utf-8")
    models = [
        value
        for value in vars(schema).values()
        if isinstance(value, type) and issubclass(value, BaseModel) and value is not BaseModel
    ]

    def documented(key: str) -> bool:
        forms = (f"`{key}`", f"\n{key} =", f"[{key}]", f"[[{key}]]", f".{key}]")
        return any(form in readme for form in forms)

    missing = [
        f"{model.__name__}.{field.alias or name}"
        for model in models
        for name, field in model.model_fields.items()
        if not documented(field.alias or name)
    ]
    assert missing == []
