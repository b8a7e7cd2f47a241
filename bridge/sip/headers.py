"""Header names and the structured headers the core reads on every message.

Names are case-insensitive and have compact forms (RFC 3261 §7.3.3); we store the canonical
spelling so lookups are a plain dict hit. Headers whose grammar is a comma-separated list
(§7.3.1) are split into one value per entry at parse time, so ``Via: a, b`` and two ``Via``
lines mean the same thing to the rest of the stack.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from bridge.sip.errors import RemoteProtocolError
from bridge.sip.uri import (
    Params,
    format_params,
    get_param,
    is_token,
    parse_params,
    split_checked_params,
    split_hostport,
    split_quoted,
    with_param,
)

COMPACT_FORMS = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_SPECIAL_CASE = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "user-to-user": "User-to-User",
    "x-ticket-id": "X-Ticket-Id",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
}

# §7.3.1: headers whose values may be combined with commas (and so must be split).
LIST_HEADERS = frozenset(
    {
        "Via",
        "Route",
        "Record-Route",
        "Contact",
        "Allow",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Allow-Events",
        "Content-Encoding",
        "Content-Language",
        "In-Reply-To",
        "Alert-Info",
        "Error-Info",
        "Reason",
        "Warning",
        "Call-Info",
        "Path",
        "Service-Route",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
    }
)

# List headers whose entries are structured addresses: an empty entry there is a syntax error
# (RFC 4475 §3.1.2.1), whereas ``Allow: INVITE,,ACK`` is harmless and tolerated.
ADDRESS_LIST_HEADERS = frozenset(
    {"Via", "Route", "Record-Route", "Contact", "Path", "Service-Route", "P-Asserted-Identity"}
)

# Token and media-range lists go back on the wire as one comma-joined line.
JOINED_LIST_HEADERS = frozenset(
    {
        "Allow",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Allow-Events",
        "Content-Encoding",
        "Content-Language",
    }
)

_canonical_cache: dict[str, str] = {}


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name, expanding compact forms."""
    cached = _canonical_cache.get(name)
    if cached is not None:
        return cached
    lower = name.lower()
    if lower in COMPACT_FORMS:
        result = COMPACT_FORMS[lower]
    elif lower in _SPECIAL_CASE:
        result = _SPECIAL_CASE[lower]
    else:
        result = "-".join(part.capitalize() for part in lower.split("-"))
    if len(_canonical_cache) < 4096:
        _canonical_cache[name] = result
    return result


_wire_name_cache: dict[str, str] = {}


def header_name_from_wire(raw: str) -> str:
    """Canonical name for the text before a header's colon, which may carry trailing LWS
    (§7.3.1 HCOLON); anything but a token is a syntax error."""
    cached = _wire_name_cache.get(raw)
    if cached is not None:
        return cached
    name = raw.rstrip(" \t")
    if not is_token(name):
        raise RemoteProtocolError(f"malformed header name {name[:40]!r}")
    result = canonical_name(name)
    if len(_wire_name_cache) < 4096:
        _wire_name_cache[raw] = result
    return result


class Headers:
    """An ordered multi-map of header name to raw value, names stored canonically.

    The core asks each message for Call-ID, CSeq, From, To and Via many times over, so the first
    value of each name is indexed on the first :meth:`get` and the index dropped on any change.
    """

    __slots__ = ("_first", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in items]
        self._first: dict[str, str] | None = None

    @classmethod
    def from_canonical(cls, items: list[tuple[str, str]]) -> Headers:
        """Adopt ``items`` whose names are already canonical (the parser's fast path)."""
        new = cls()
        new._items = items
        return new

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical_name(name)
        return any(n == key for n, _ in self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def get(self, name: str, default: str | None = None) -> str | None:
        first = self._first
        if first is None:
            first = {}
            for n, v in self._items:
                if n not in first:
                    first[n] = v
            self._first = first
        return first.get(_canonical_cache.get(name) or canonical_name(name), default)

    def get_all(self, name: str) -> list[str]:
        key = canonical_name(name)
        return [v for n, v in self._items if n == key]

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))
        self._first = None

    def prepend(self, name: str, value: str) -> None:
        """Insert before the first header of this name (a new top Via, §18.1.1)."""
        self._first = None
        key = canonical_name(name)
        for i, (n, _) in enumerate(self._items):
            if n == key:
                self._items.insert(i, (key, value))
                return
        self._items.insert(0, (key, value))

    def set(self, name: str, value: str) -> None:
        """Replace every header of this name by one value, kept at the first one's place."""
        self._first = None
        key = canonical_name(name)
        for i, (n, _) in enumerate(self._items):
            if n == key:
                self._items[i] = (key, value)
                self._items[i + 1 :] = [it for it in self._items[i + 1 :] if it[0] != key]
                return
        self._items.append((key, value))

    def remove(self, name: str) -> None:
        self._first = None
        key = canonical_name(name)
        self._items = [it for it in self._items if it[0] != key]

    def remove_first(self, name: str) -> str | None:
        self._first = None
        key = canonical_name(name)
        for i, (n, v) in enumerate(self._items):
            if n == key:
                del self._items[i]
                return v
        return None

    def copy(self) -> Headers:
        new = Headers()
        new._items = list(self._items)
        return new


def split_list_value(value: str, *, allow_empty: bool = True) -> list[str]:
    """Split a comma-separated header value, respecting quotes and <> (§7.3.1).

    Empty entries are dropped, or rejected when ``allow_empty`` is false.
    """
    parts = [part.strip(" \t") for part in split_quoted(value, ",")]
    if "" in parts:
        if not allow_empty:
            raise RemoteProtocolError("empty list entry")
        parts = [part for part in parts if part]
    return parts


@dataclass(frozen=True, slots=True, kw_only=True)
class Via:
    """One Via entry (§20.42, §18.2.1 for ``received``, RFC 3581 for ``rport``)."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP/2.0"

    @classmethod
    def parse(cls, text: str) -> Via:
        return _parse_via(text.strip(" \t"))

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        params = format_params(self.params, escape=False)
        return f"{self.protocol}/{self.transport} {self.host}{port}{params}"

    @property
    def branch(self) -> str | None:
        return get_param(self.params, "branch")

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def with_param(self, name: str, value: str | None) -> Via:
        return Via(
            transport=self.transport,
            host=self.host,
            port=self.port,
            params=with_param(self.params, name, value),
            protocol=self.protocol,
        )


_PLAIN_VIA = re.compile(
    r"SIP/2\.0/(?P<transport>UDP|TCP|TLS|SCTP|WS|WSS) (?P<host>[A-Za-z0-9._-]++)"
    r"(?::(?P<port>[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}))?"
    r"(?P<params>(?:;[A-Za-z0-9\-.!%*_+`'~]++(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]++)?)*+)"
)


def validate_via(text: str) -> None:
    """Raise :class:`RemoteProtocolError` unless ``text`` is one via-parm. The common shape is
    recognised by one regex match (a subset of what :func:`_parse_via` accepts); the rest goes
    through the full parser."""
    if _PLAIN_VIA.fullmatch(text) is None:
        _parse_via_fully(text)


@lru_cache(maxsize=4096)
def _parse_via(text: str) -> Via:
    """``SIP / 2.0 / UDP host:port;params``; LWS may surround the slashes and the colon (§25.1)."""
    plain = _PLAIN_VIA.fullmatch(text)
    if plain is not None:
        port = plain["port"]
        return Via(
            transport=plain["transport"],
            host=plain["host"],
            port=int(port) if port else None,
            params=split_checked_params(plain["params"]),
        )
    return _parse_via_fully(text)


def _parse_via_fully(text: str) -> Via:
    if text.startswith("SIP/2.0/"):
        name, version = "SIP", "2.0"
        tail = text[8:]
    else:
        pieces = text.split("/", 2)
        if len(pieces) != 3:
            raise RemoteProtocolError("bad Via sent-protocol")
        name, version = pieces[0].strip(" \t"), pieces[1].strip(" \t")
        tail = pieces[2].lstrip(" \t")
        if not is_token(name) or not is_token(version):
            raise RemoteProtocolError("bad Via sent-protocol")
    end = 0
    n = len(tail)
    while end < n and tail[end] not in " \t":
        end += 1
    transport = tail[:end]
    if not is_token(transport):
        raise RemoteProtocolError("bad Via transport")
    sent_by, semi, param_text = tail[end:].partition(";")
    host, port = _split_sent_by(sent_by.strip(" \t"))
    params = parse_params(semi + param_text, unescape=False) if semi else ()
    return Via(
        transport=transport.upper(),
        host=host,
        port=port,
        params=params,
        protocol=f"{name}/{version}",
    )


def _split_sent_by(sent_by: str) -> tuple[str, int | None]:
    if " " in sent_by or "\t" in sent_by:
        # §25.1 COLON is SWS ":" SWS; any other LWS inside sent-by is an error.
        host, colon, port = sent_by.rpartition(":") if "]" not in sent_by else ("", "", "")
        if colon:
            sent_by = f"{host.rstrip(' ')}:{port.lstrip(' ')}"
    if not sent_by or " " in sent_by or "\t" in sent_by:
        raise RemoteProtocolError("bad Via sent-by")
    return split_hostport(sent_by)


MAX_CSEQ = 2**31 - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class CSeq:
    """§20.16: the sequence number must be below 2**31."""

    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        return _parse_cseq(text)

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


_PLAIN_CSEQ = re.compile(r"([1-9][0-9]{0,8}|0) ([A-Za-z0-9\-.!%*_+`'~]+)")


def cseq_method(text: str) -> str:
    """The method of a CSeq value, checking the whole value (§20.16)."""
    match = _PLAIN_CSEQ.fullmatch(text)
    return match[2] if match is not None else _parse_cseq(text).method


@lru_cache(maxsize=1024)
def _parse_cseq(text: str) -> CSeq:
    parts = text.split()
    if len(parts) != 2 or not parts[0].isascii() or not parts[0].isdigit():
        raise RemoteProtocolError("bad CSeq")
    if len(parts[0]) > 10 or int(parts[0]) > MAX_CSEQ:
        raise RemoteProtocolError(f"CSeq number too large: {parts[0][:40]}")
    if not is_token(parts[1]):
        raise RemoteProtocolError(f"bad CSeq method {parts[1][:40]!r}")
    return CSeq(seq=int(parts[0]), method=parts[1])
