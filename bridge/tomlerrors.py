"""Map pydantic validation errors on TOML data back to ``FILE:LINE: message``.

The line of each failing key comes from the dial plan's TOML line map, so the service config
and the dial plans report errors the same way.
"""

from __future__ import annotations

from pydantic import ValidationError

from bridge.dialplan.locate import LineMap


def format_validation_errors(filename: str, text: str, exc: ValidationError) -> list[str]:
    lines = LineMap(text)
    out = []
    for error in exc.errors():
        loc = [part for part in error["loc"] if isinstance(part, str | int)]
        dotted = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in loc)
        dotted = dotted.replace(".[", "[")
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        out.append(f"{filename}:{lines.line_of(loc)}: {dotted}: {message}")
    return out
