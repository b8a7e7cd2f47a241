"""Load a dial plan: TOML → schema → whole-plan checks → :class:`Router`, or errors with lines.

Every problem comes back as ``FILE:LINE: message``, the format editors and CI logs already
understand: TOML syntax errors at the line tomllib reports, schema errors at the line of the
offending key or table, whole-plan findings at the line of the reference they are about.
Loading never raises for a bad plan; it returns a :class:`LoadResult` without a router.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from pydantic import ValidationError

from bridge.dialplan.checks import check_plan
from bridge.dialplan.locate import LineMap, Path
from bridge.dialplan.router import Router
from bridge.dialplan.schema import PATTERN_HINTS, DialPlan

_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column \d+|end of document)\)$")


@dataclass(frozen=True, slots=True)
class Problem:
    filename: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.line}: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadResult:
    filename: str
    sha256: str
    """Digest of the file's bytes, for the audit trail of reloads."""
    problems: tuple[Problem, ...]
    router: Router | None

    @property
    def ok(self) -> bool:
        return self.router is not None

    @property
    def plan(self) -> DialPlan | None:
        return self.router.plan if self.router is not None else None


def load_file(path: str | FsPath) -> LoadResult:
    filename = str(path)
    try:
        data = FsPath(path).read_bytes()
    except OSError as exc:
        return _failed(filename, "", [Problem(filename, 1, f"cannot read: {exc.strerror}")])
    return load_bytes(data, filename)


def load_bytes(data: bytes, filename: str) -> LoadResult:
    digest = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return _failed(filename, digest, [Problem(filename, line, "not valid UTF-8")])
    return load_text(text, filename, sha256=digest)


def load_text(text: str, filename: str = "<plan>", *, sha256: str | None = None) -> LoadResult:
    digest = sha256 or hashlib.sha256(text.encode("utf-8")).hexdigest()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return _failed(filename, digest, [_syntax_problem(filename, text, str(exc))])
    lines = LineMap(text)
    try:
        plan = DialPlan.model_validate(raw)
    except ValidationError as exc:
        problems = [
            Problem(filename, lines.line_of(path), message)
            for path, message in _schema_findings(exc, raw)
        ]
        return _failed(filename, digest, problems)
    findings = check_plan(plan, lines.line_of)
    if findings:
        problems = [Problem(filename, lines.line_of(p), m) for p, m in findings]
        return _failed(filename, digest, problems)
    router = Router(plan, filename=FsPath(filename).name, lines=lines)
    return LoadResult(filename=filename, sha256=digest, problems=(), router=router)


def _failed(filename: str, digest: str, problems: Sequence[Problem]) -> LoadResult:
    ordered = tuple(sorted(dict.fromkeys(problems), key=lambda p: p.line))
    return LoadResult(filename=filename, sha256=digest, problems=ordered, router=None)


def _syntax_problem(filename: str, text: str, message: str) -> Problem:
    found = _TOML_POSITION.search(message)
    if found is None:
        return Problem(filename, 1, f"TOML syntax: {message}")
    line = int(found.group(1)) if found.group(1) else max(1, text.count("\n"))
    return Problem(filename, line, f"TOML syntax: {message[: found.start()]}")


def _schema_findings(exc: ValidationError, raw: dict[str, Any]) -> list[tuple[Path, str]]:
    errors = exc.errors(include_url=False)
    paths = [
        _real_prefix(raw, tuple(p for p in e["loc"] if isinstance(p, str | int))) for e in errors
    ]
    findings: list[tuple[Path, str]] = []
    for error, path in zip(errors, paths, strict=True):
        kind = error["type"]
        if kind == "too_short" and any(
            len(p) > len(path) and p[: len(path)] == path for p in paths
        ):
            continue  # "too few items" only because its items failed: those errors say why
        if kind == "extra_forbidden":
            message = f"unknown key {path[-1]!r}" + _in(path[:-1])
        elif kind == "missing":
            message = f"missing key {path[-1]!r}" + _in(path[:-1])
        elif kind == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") in (
            PATTERN_HINTS
        ):
            hint = PATTERN_HINTS[error["ctx"]["pattern"]]
            message = f"{dotted(path)}: {error['input']!r} {hint}"
        else:
            text = str(error["msg"]).removeprefix("Value error, ")
            message = f"{dotted(path)}: {text}" if path else text
        findings.append((path, message))
    return findings


def _real_prefix(raw: Any, path: Path) -> Path:
    """Drop the parts pydantic adds to a location that are not in the file (union tags)."""
    kept: list[str | int] = []
    node = raw
    for part in path:
        in_dict = isinstance(node, dict) and isinstance(part, str) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str):
            kept.append(part)  # a missing key: name it, then stop
            break
        else:
            break
        kept.append(part)
    return tuple(kept)


def dotted(path: Path) -> str:
    """``("rules", 3, "to")`` → ``rules[3].to``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _in(table: Path) -> str:
    return f" in {dotted(table)}" if table else " at top level"
