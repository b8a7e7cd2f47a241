"""Lines of TOML keys, so that an error about ``rules[3].to`` can say ``example.toml:57``.

tomllib returns plain dicts without positions. This module walks the same text once more and
records the line where every path starts: table headers (``[a.b]``), arrays of tables
(``[[rules]]`` gives ``("rules", 0)``, ``("rules", 1)`` ...; ``[[features.codes]]`` gives
``("features", "codes", 0)``), keys, dotted keys, inline tables and the elements of arrays, even
when an array spans many lines. It runs only on text that tomllib has already accepted, so it
trusts the syntax and need not report errors of its own.
"""

from __future__ import annotations

import contextlib
import tomllib
from collections.abc import Sequence

PathPart = str | int
Path = tuple[PathPart, ...]

_BARE_KEY = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_SCALAR_END = frozenset(",]}\n#")


class LineMap:
    """The first line of every key path in one TOML document."""

    def __init__(self, text: str) -> None:
        self._lines: dict[Path, int] = {}
        with contextlib.suppress(IndexError):  # text tomllib rejected: keep what was placed
            _Scanner(text, self._lines).run()

    def line_of(self, path: Sequence[PathPart]) -> int:
        """The line of ``path``, else of its longest known prefix, else 1."""
        key = tuple(path)
        while key:
            line = self._lines.get(key)
            if line is not None:
                return line
            key = key[:-1]
        return 1


class _Scanner:
    def __init__(self, text: str, lines: dict[Path, int]) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.lines = lines
        self.array_lengths: dict[Path, int] = {}

    def run(self) -> None:
        table: Path = ()
        while True:
            self._skip_blank(newlines=True)
            if self.pos >= len(self.text):
                return
            if self.text.startswith("[[", self.pos):
                self.pos += 2
                table = self._array_table(self._key())
                self._expect("]]")
            elif self.text[self.pos] == "[":
                self.pos += 1
                table = self._resolve(self._key(), array_item=False)
                self._record(table)
                self._expect("]")
            else:
                self._key_value(table)

    def _array_table(self, keys: list[str]) -> Path:
        array = self._resolve(keys, array_item=True)
        index = self.array_lengths.get(array, 0)
        self.array_lengths[array] = index + 1
        self._record(array)
        self._record((*array, index))
        return (*array, index)

    def _resolve(self, keys: list[str], *, array_item: bool) -> Path:
        """Insert the current index after every enclosing array of tables.

        ``[[a]]`` then ``[a.b]`` means the table ``b`` of the *last* element of ``a``.
        """
        out: list[PathPart] = []
        for i, key in enumerate(keys):
            out.append(key)
            last = i == len(keys) - 1
            length = self.array_lengths.get(tuple(out))
            if length is not None and not (last and array_item):
                out.append(length - 1)
        return tuple(out)

    def _key_value(self, table: Path) -> None:
        start_line = self.line
        path = (*table, *self._key())
        self._record(path, start_line)
        self._skip_blank()
        self._expect("=")
        self._value(path)

    def _value(self, path: Path) -> None:
        self._skip_blank()
        text = self.text
        if text.startswith('"""', self.pos) or text.startswith("'''", self.pos):
            self._multiline_string(text[self.pos : self.pos + 3])
        elif text[self.pos] in "\"'":
            self._string()
        elif text[self.pos] == "[":
            self._array(path)
        elif text[self.pos] == "{":
            self._inline_table(path)
        else:
            start = self.pos
            while self.pos < len(text) and text[self.pos] not in _SCALAR_END:
                self.pos += 1
            if self.pos == start:  # never loop in place, whatever the text
                self.pos += 1

    def _array(self, path: Path) -> None:
        self.pos += 1
        index = 0
        while True:
            self._skip_blank(newlines=True)
            if self.text[self.pos] == "]":
                self.pos += 1
                return
            self._record((*path, index))
            self._value((*path, index))
            index += 1
            self._skip_blank(newlines=True)
            if self.text[self.pos] == ",":
                self.pos += 1

    def _inline_table(self, path: Path) -> None:
        self.pos += 1
        while True:
            self._skip_blank(newlines=True)
            if self.text[self.pos] == "}":
                self.pos += 1
                return
            self._key_value(path)
            self._skip_blank(newlines=True)
            if self.text[self.pos] == ",":
                self.pos += 1

    def _key(self) -> list[str]:
        keys: list[str] = []
        while True:
            self._skip_blank()
            ch = self.text[self.pos]
            if ch in "\"'":
                start = self.pos
                self._string()
                keys.append(_decode_string(self.text[start : self.pos]))
            else:
                start = self.pos
                while self.text[self.pos] in _BARE_KEY:
                    self.pos += 1
                keys.append(self.text[start : self.pos])
            self._skip_blank()
            if self.pos < len(self.text) and self.text[self.pos] == ".":
                self.pos += 1
                continue
            return keys

    def _string(self) -> None:
        quote = self.text[self.pos]
        self.pos += 1
        while self.text[self.pos] != quote:
            if quote == '"' and self.text[self.pos] == "\\":
                self.pos += 1
            self.pos += 1
        self.pos += 1

    def _multiline_string(self, quotes: str) -> None:
        self.pos += 3
        while not self.text.startswith(quotes, self.pos):
            ch = self.text[self.pos]
            if ch == "\n":
                self.line += 1
            elif ch == "\\" and quotes == '"""':
                self.pos += 1
                if self.text[self.pos] == "\n":
                    self.line += 1
            self.pos += 1
        self.pos += 3
        while self.text.startswith(quotes[0], self.pos):  # up to two quotes may close the value
            self.pos += 1

    def _skip_blank(self, *, newlines: bool = False) -> None:
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch in " \t\r":
                self.pos += 1
            elif ch == "#":
                while self.pos < len(text) and text[self.pos] != "\n":
                    self.pos += 1
            elif ch == "\n" and newlines:
                self.pos += 1
                self.line += 1
            else:
                return

    def _expect(self, token: str) -> None:
        self._skip_blank()
        self.pos += len(token)

    def _record(self, path: Path, line: int | None = None) -> None:
        for depth in range(1, len(path) + 1):
            self.lines.setdefault(path[:depth], self.line if line is None else line)


def _decode_string(quoted: str) -> str:
    """Decode a quoted key with tomllib itself, so every escape means what TOML says."""
    value = tomllib.loads(f"k = {quoted}")["k"]
    assert isinstance(value, str)
    return value
