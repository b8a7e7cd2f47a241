"""Header names and the structured headers the core reads on every message.

Names are case-insensitive and have compact forms (RFC 3261 §7.3.3); we store the canonical
spelling so lookups are a plain dict hit. Headers whose grammar is a comma-separated list
(§7.3.1) are split into one value per entry at parse time, so ``Via: a, b`` and two ``Via``
lines mean the same thing to the rest of the stack.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from bridge.sip.errors import RemoteProtocolError
from bridge.sip.uri import Params, format_params, get_param, parse_params, split_quoted, with_param

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


class Headers:
    """An ordered multi-map of header name to raw value, names stored canonically."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in items]

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
        key = canonical_name(name)
        for n, v in self._items:
            if n == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        key = canonical_name(name)
        return [v for n, v in self._items if n == key]

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def prepend(self, name: str, value: str) -> None:
        """Insert before the first header of this name (a new top Via, §18.1.1)."""
        key = canonical_name(name)
        for i, (n, _) in enumerate(self._items):
            if n == key:
                self._items.insert(i, (key, value))
                return
        self._items.insert(0, (key, value))

    def set(self, name: str, value: str) -> None:
        """Replace every header of this name by one value, kept at the first one's place."""
        key = canonical_name(name)
        for i, (n, _) in enumerate(self._items):
            if n == key:
                self._items[i] = (key, value)
                self._items[i + 1 :] = [it for it in self._items[i + 1 :] if it[0] != key]
                return
        self._items.append((key, value))

    def remove(self, name: str) -> None:
        key = canonical_name(name)
        self._items = [it for it in self._items if it[0] != key]

    def remove_first(self, name: str) -> str | None:
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


def split_list_value(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quotes and <> (§7.3.1)."""
    return [part.strip() for part in split_quoted(value, ",") if part.strip()]


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
        text = text.strip()
        proto_end = _skip_sent_protocol(text)
        sent_protocol = text[:proto_end]
        parts = [p.strip() for p in sent_protocol.split("/")]
        if len(parts) != 3 or not all(parts):
            raise RemoteProtocolError(f"bad Via sent-protocol in {text!r}")
        rest = text[proto_end:].strip()
        sent_by, _, param_text = rest.partition(";")
        sent_by = sent_by.strip()
        if not sent_by or " " in sent_by:
            raise RemoteProtocolError(f"bad Via sent-by in {text!r}")
        host, port = _split_sent_by(sent_by, text)
        params = parse_params(param_text, unescape=False) if param_text else ()
        return cls(
            transport=parts[2].upper(),
            host=host,
            port=port,
            params=params,
            protocol=f"{parts[0]}/{parts[1]}",
        )

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"

    @property
    def branch(self) -> str | None:
        return get_param(self.params, "branch")

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def with_param(self, name: str, value: str | None) -> Via:
        return replace(self, params=with_param(self.params, name, value))


def _skip_sent_protocol(text: str) -> int:
    """Index just past ``SIP / 2.0 / UDP`` (LWS allowed around the slashes, §25.1)."""
    slashes = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "/":
            slashes += 1
        elif ch in " \t" and slashes == 2:
            j = i
            while j < n and text[j] in " \t":
                j += 1
            if j < n and text[j] != "/" and text[i - 1] not in "/ \t":
                return i
        i += 1
    raise RemoteProtocolError(f"bad Via header {text!r}")


def _split_sent_by(sent_by: str, whole: str) -> tuple[str, int | None]:
    if sent_by.startswith("["):
        end = sent_by.find("]")
        if end < 0:
            raise RemoteProtocolError(f"bad IPv6 sent-by in {whole!r}")
        host, tail = sent_by[: end + 1], sent_by[end + 1 :]
        port_text = tail[1:].strip() if tail.startswith(":") else ""
    else:
        host, _, port_text = sent_by.partition(":")
    host = host.strip()
    port_text = port_text.strip()
    if not host:
        raise RemoteProtocolError(f"Via without host: {whole!r}")
    if not port_text:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise RemoteProtocolError(f"bad Via port in {whole!r}")
    return host, int(port_text)


MAX_CSEQ = 2**31 - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class CSeq:
    """§20.16: the sequence number must be below 2**31."""

    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise RemoteProtocolError(f"bad CSeq {text!r}")
        seq = int(parts[0])
        if seq > MAX_CSEQ:
            raise RemoteProtocolError(f"CSeq number too large: {parts[0]}")
        return cls(seq=seq, method=parts[1])

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"
