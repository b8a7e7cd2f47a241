"""Map pydantic validation errors on TOML data back to ``FILE:LINE: message``.

tomllib returns plain dicts with no positions, so we locate a dotted path (``sidecar.tokens[1]
.role``) by scanning the text for table headers and keys. It is a best-effort locator: it
understands ``[table]``, ``[[array.of.tables]]`` and ``key = value`` lines (dotted keys
included), which is what admins write; anything it cannot place is reported on the nearest
enclosing table, or line 1.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import ValidationError

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\".' ]+?)\s*=")

Path = Sequence[str | int]


def _split_key(text: str) -> list[str]:
    return [part.strip().strip("\"'") for part in text.split(".")]


def locate(text: str, path: Path) -> int:
    """The 1-based line that best matches ``path`` in the TOML ``text``."""
    best_line = 1
    best_len = -1
    table: list[str | int] = []
    array_counts: dict[tuple[str | int, ...], int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            names: list[str | int] = list(_split_key(header.group(2)))
            if header.group(1) == "[[":
                key = tuple(names)
                index = array_counts.get(key, -1) + 1
                array_counts[key] = index
                names.append(index)
            table = _with_indices(names, array_counts)
            full = table
        else:
            key_match = _KEY.match(line)
            if not key_match or line.lstrip().startswith("#"):
                continue
            full = [*table, *_split_key(key_match.group(1))]
        matched = _common_prefix(full, path)
        if matched > best_len or (matched == best_len and matched == len(full)):
            if matched == best_len and len(full) > matched:
                continue
            best_len = matched
            best_line = lineno
            if matched == len(path):
                return lineno
    return best_line


def _with_indices(
    names: list[str | int], counts: dict[tuple[str | int, ...], int]
) -> list[str | int]:
    """Insert the current index of every enclosing array of tables (``[[a]]`` then ``[a.b]``)."""
    out: list[str | int] = []
    for i, name in enumerate(names):
        out.append(name)
        prefix = tuple(names[: i + 1])
        if (
            isinstance(name, str)
            and prefix in counts
            and i + 1 < len(names)
            and not isinstance(names[i + 1], int)
        ):
            out.append(counts[prefix])
    return out


def _common_prefix(a: Sequence[str | int], b: Sequence[str | int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def format_validation_errors(filename: str, text: str, exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        loc = [part for part in error["loc"] if isinstance(part, str | int)]
        dotted = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in loc)
        dotted = dotted.replace(".[", "[")
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{filename}:{locate(text, loc)}: {dotted}: {message}")
    return lines
