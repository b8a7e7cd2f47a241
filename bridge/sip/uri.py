"""SIP URIs and the address forms built on them (RFC 3261 §19.1, §20.10, §25.1).

URIs are kept as parsed, immutable values; ``str()`` gives the wire form back. User parts and
URI parameters are stored unescaped, because comparisons (§19.1.4) happen on unescaped values;
header parameters (``;tag=``, ``;branch=``) are stored as sent, because for them ``%`` is an
ordinary token character (RFC 4475 §3.1.1.5).

Parsing is memoised by text: the values are immutable, and the same From, To or Via string is
read several times while one message travels through the stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from urllib.parse import quote, unquote

from bridge.sip.errors import RemoteProtocolError

# §25.1: characters allowed unescaped in the user part, the password, parameters and headers.
_USER_SAFE = "-_.!~*'()&=+$,;?/"
_PASSWORD_SAFE = "-_.!~*'()&=+$,"
_PARAM_SAFE = "-_.!~*'()[]/:&+$"
_HDR_SAFE = "-_.!~*'()[]/?:+$"

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
TOKEN_CHARS = _ALNUM + "-.!%*_+`'~"
_SCHEME_CHARS = _ALNUM + "+-."
_HOST_CHARS = _ALNUM + "-._"
_IPV6_CHARS = "0123456789abcdefABCDEF:."
_HEX = "0123456789abcdefABCDEF"
# Generic parameter values are token / host / quoted-string (§25.1 gen-value); IPv6 hosts
# appear bracketed (maddr) or bare (Via received, RFC 5118 §4.5).
_GEN_VALUE_CHARS = TOKEN_CHARS + ":[]"
# Inside a sip: URI nothing outside the unreserved/reserved/escaped sets may appear raw.
_URI_FORBIDDEN = frozenset(' \t\r\n<>"{}|\\^`' + "".join(map(chr, range(32))) + "\x7f")
_OTHER_URI_FORBIDDEN = frozenset(' \t\r\n<>"' + "".join(map(chr, range(32))) + "\x7f")

Params = tuple[tuple[str, str | None], ...]

# Regular shapes of the common forms, written as subsets of what the full parsers below
# accept. Validating a message only needs a yes/no, and one compiled match answers that for
# ``"Alice" <sip:alice@example.com>;tag=x`` far faster than building the objects; anything
# unusual (LWS, IPv6, URI headers, odd ports) falls through to the full parser, which is the
# authority and produces the error text.
_TOKEN_RE = r"[A-Za-z0-9\-.!%*_+`'~]++"
_QUOTED_RE = r'"(?:[^"\\]++|\\[\s\S])*+"'
_ESCAPED_RE = r"%[0-9A-Fa-f]{2}"
_PORT_RE = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3})"
_HOST_RE = r"[A-Za-z0-9._-]++"
_URI_PARAM_RE = rf"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]++|{_ESCAPED_RE})"
_GEN_PARAMS_RE = rf"(?:;{_TOKEN_RE}(?:=(?:[A-Za-z0-9\-.!%*_+`'~:\[\]]++|{_QUOTED_RE}))?)*+"


def _uri_re(*, in_brackets: bool) -> str:
    # Outside <> the URI ends at the first ';' and may hold no '?' or ',' (§20.10).
    user_chars, password_chars = ("&=+$,;?/", "&=+$,") if in_brackets else ("&=+$/", "&=+$")
    user = rf"(?:[A-Za-z0-9\-_.!~*'(){user_chars}]++|{_ESCAPED_RE})++"
    password = rf"(?:[A-Za-z0-9\-_.!~*'(){password_chars}]++|{_ESCAPED_RE})*+"
    params = rf"(?:;{_URI_PARAM_RE}++(?:={_URI_PARAM_RE}*+)?)*+" if in_brackets else ""
    return rf"sips?:(?:{user}(?::{password})?@)?{_HOST_RE}(?::{_PORT_RE})?{params}"


_PLAIN_NAME_ADDR = re.compile(
    rf"(?:(?:(?P<quoted>{_QUOTED_RE})|(?P<tokens>{_TOKEN_RE}(?: {_TOKEN_RE})*+)) ?)?"
    rf"<(?P<uri>{_uri_re(in_brackets=True)})>(?P<params>{_GEN_PARAMS_RE})"
    rf"|(?P<spec>{_uri_re(in_brackets=False)})(?P<spec_params>{_GEN_PARAMS_RE})"
)


def split_checked_params(text: str) -> Params:
    """Header parameters whose text already matched the plain shape (no LWS): the same
    result as :func:`parse_params` with ``unescape=False``, without re-checking."""
    if not text:
        return ()
    if '"' in text:
        return _parse_header_params(text)
    out: list[tuple[str, str | None]] = []
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        out.append((name.lower(), value if eq else None))
    return tuple(out)


def is_token(text: str) -> bool:
    """RFC 3261 §25.1 ``token`` (``str.strip`` with a character set runs in C)."""
    return bool(text) and not text.strip(TOKEN_CHARS)


def parse_params(text: str, *, unescape: bool = True) -> Params:
    """Parse ``;name=value;flag`` (leading ``;`` optional). Names are lower-cased (§7.3.1).

    With ``unescape`` (URI parameters, §19.1.1) names and values are %-decoded. Without it
    (header parameters, §25.1 generic-param) they are checked against the token / host /
    quoted-string grammar and kept verbatim. An empty parameter (``;;``) is a syntax error
    (RFC 4475 §3.1.2.1).
    """
    if unescape:
        body = text[1:] if text.startswith(";") else text
        return _parse_uri_params(body) if body else ()
    stripped = text.strip(" \t")
    if not stripped:
        return ()
    if not stripped.startswith(";"):
        text = ";" + stripped
    return _parse_header_params(text)


def _parse_uri_params(text: str) -> Params:
    out: list[tuple[str, str | None]] = []
    for item in text.split(";"):
        name, sep, value = item.partition("=")
        if not name:
            raise RemoteProtocolError("empty URI parameter")
        name = _unescape(name).lower()
        out.append((name, _unescape(value) if sep else None))
    return tuple(out)


@lru_cache(maxsize=4096)
def _parse_header_params(text: str) -> Params:
    text = text.strip(" \t")
    if not text:
        return ()
    if text[0] != ";":
        raise RemoteProtocolError("header parameters must start with ';'")
    items = text[1:].split(";") if '"' not in text else split_quoted(text[1:], ";")
    out: list[tuple[str, str | None]] = []
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip(" \t").lower()
        if not is_token(name):
            raise RemoteProtocolError("bad header parameter name")
        if not sep:
            out.append((name, None))
            continue
        value = value.strip(" \t")
        if value.startswith('"'):
            unquote_string(value)
        elif not value or value.strip(_GEN_VALUE_CHARS):
            raise RemoteProtocolError(f"bad value for header parameter {name[:40]!r}")
        out.append((name, value))
    return tuple(out)


def format_params(params: Params, safe: str = _PARAM_SAFE, *, escape: bool = True) -> str:
    """The wire form of parameters. Header parameters (tags, branches, ``+sip.instance``)
    want ``escape=False``: they are stored verbatim. With ``escape`` a value that starts
    with a quote is still written as is, for callers that pass quoted header values."""
    parts = []
    for name, value in params:
        if value is None:
            parts.append(f";{name}")
        elif not escape or value.startswith('"'):
            parts.append(f";{name}={value}")
        else:
            parts.append(f";{name}={_escape(value, safe)}")
    return "".join(parts)


def _format_uri_params(params: Params) -> str:
    """URI parameters are stored unescaped (§19.1.4), so every name and value is escaped."""
    parts = []
    for name, value in params:
        name = _escape(name, _PARAM_SAFE)
        parts.append(f";{name}" if value is None else f";{name}={_escape(value, _PARAM_SAFE)}")
    return "".join(parts)


def split_quoted(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes and angle brackets."""
    if '"' not in text and "<" not in text:
        return text.split(sep)
    out: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(depth - 1, 0)
        elif ch == sep and depth == 0:
            out.append(text[start:i])
            start = i + 1
        i += 1
    if quoted:
        raise RemoteProtocolError("unterminated quoted string")
    out.append(text[start:])
    return out


def get_param(params: Params, name: str) -> str | None:
    for key, value in params:
        if key == name:
            return value
    return None


def has_param(params: Params, name: str) -> bool:
    return any(key == name for key, _ in params)


def with_param(params: Params, name: str, value: str | None) -> Params:
    kept = tuple(p for p in params if p[0] != name)
    return (*kept, (name, value))


def without_param(params: Params, name: str) -> Params:
    return tuple(p for p in params if p[0] != name)


def _unescape(text: str) -> str:
    """%-decode (§25.1 ``escaped``); a ``%`` not followed by two hex digits is an error.

    Decoding is done once: ``%2541`` is ``%41``, not ``A`` (RFC 4475 §3.1.1.3). Octets that are
    not UTF-8 survive as surrogate escapes so that re-escaping gives the same bytes back.
    """
    if "%" not in text:
        return text
    i = text.find("%")
    while i >= 0:
        if len(text) < i + 3 or text[i + 1] not in _HEX or text[i + 2] not in _HEX:
            raise RemoteProtocolError("bad %-escape")
        i = text.find("%", i + 3)
    return unquote(text, errors="surrogateescape")


def _escape(text: str, safe: str) -> str:
    return quote(text, safe=safe, errors="surrogateescape")


@dataclass(frozen=True, slots=True, kw_only=True)
class SipUri:
    """A ``sip:``/``sips:`` URI (§19.1.1); other schemes keep their text in ``opaque``."""

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: Params = ()
    headers: Params = ()
    opaque: str | None = None
    # The wire form, computed on first use: parsed URIs are shared through the parse memo,
    # so a Request-URI is formatted once however often it is sent.
    _wire: str | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> SipUri:
        return _parse_uri(text.strip())

    def __str__(self) -> str:
        wire = self._wire
        if wire is None:
            wire = self._format()
            object.__setattr__(self, "_wire", wire)
        return wire

    def _format(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(_escape(self.user, _USER_SAFE))
            if self.password is not None:
                out.append(":" + _escape(self.password, _PASSWORD_SAFE))
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(_format_uri_params(self.params))
        if self.headers:
            out.append("?")
            out.append(
                "&".join(
                    f"{_escape(k, _HDR_SAFE)}={_escape(v or '', _HDR_SAFE)}"
                    for k, v in self.headers
                )
            )
        return "".join(out)

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    @property
    def transport(self) -> str:
        return (self.param("transport") or ("tls" if self.scheme == "sips" else "udp")).lower()

    @property
    def hostport(self) -> tuple[str, int]:
        return self.host, self.port or (5061 if self.scheme == "sips" else 5060)

    def with_(self, **changes: object) -> SipUri:
        return replace(self, **changes)  # type: ignore[arg-type]


@lru_cache(maxsize=4096)
def _parse_uri(text: str) -> SipUri:
    colon = text.find(":")
    scheme = text[:colon].lower()
    if colon <= 0 or not scheme[0].isalpha() or scheme.strip(_SCHEME_CHARS):
        raise RemoteProtocolError("not a URI")
    rest = text[colon + 1 :]
    if scheme not in ("sip", "sips"):
        if not rest or not _OTHER_URI_FORBIDDEN.isdisjoint(rest):
            raise RemoteProtocolError("illegal character in URI")
        return SipUri(scheme=scheme, opaque=rest)
    if not rest.isascii() or not _URI_FORBIDDEN.isdisjoint(rest):
        raise RemoteProtocolError("illegal character in URI")
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        qmark = rest.find("?")
        if 0 <= qmark < at:
            # '?' is legal in the user part (RFC 4475 §3.1.1.2); '@' is not legal after it,
            # so the last '@' ends the userinfo.
            at = rest.rfind("@")
        user_text, pc, password_text = rest[:at].partition(":")
        if not user_text:
            raise RemoteProtocolError("empty user part in URI")
        user = _unescape(user_text)
        password = _unescape(password_text) if pc else None
        rest = rest[at + 1 :]
    qmark = rest.find("?")
    header_text = None
    if qmark >= 0:
        rest, header_text = rest[:qmark], rest[qmark + 1 :]
    hostport, semi, param_text = rest.partition(";")
    host, port = split_hostport(hostport)
    params = _parse_uri_params(param_text) if semi else ()
    headers: Params = ()
    if header_text is not None:
        pairs: list[tuple[str, str | None]] = []
        for item in header_text.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq:
                raise RemoteProtocolError("bad header in URI")
            pairs.append((_unescape(name), _unescape(value)))
        headers = tuple(pairs)
    return SipUri(
        scheme=scheme,
        user=user,
        password=password,
        host=host.lower(),
        port=port,
        params=params,
        headers=headers,
    )


def split_hostport(hostport: str) -> tuple[str, int | None]:
    """``host[:port]`` with an IPv6 reference in brackets (§25.1, RFC 5118)."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 3 or hostport[1:end].strip(_IPV6_CHARS) or ":" not in hostport[1:end]:
            raise RemoteProtocolError("bad IPv6 reference")
        host, tail = hostport[: end + 1], hostport[end + 1 :]
        if tail and tail[0] != ":":
            raise RemoteProtocolError("junk after IPv6 reference")
        port_text = tail[1:] if tail else None
    else:
        host, colon, port_raw = hostport.partition(":")
        if not host or host.strip(_HOST_CHARS):
            raise RemoteProtocolError("bad host")
        port_text = port_raw if colon else None
    if port_text is None:
        return host, None
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise RemoteProtocolError("bad port")
    return host, int(port_text)


@dataclass(frozen=True, slots=True, kw_only=True)
class NameAddr:
    """``display-name <uri>;params`` or a bare addr-spec (§20.10, §25.1 name-addr / addr-spec).

    For a bare addr-spec, parameters after the URI belong to the header, not the URI (§20.10).
    """

    uri: SipUri
    display_name: str | None = None
    params: Params = field(default=())

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        return _parse_name_addr(text.strip(" \t"))

    def __str__(self) -> str:
        display = ""
        if self.display_name:
            display = f"{quote_string(self.display_name)} "
        return f"{display}<{self.uri}>{format_params(self.params, escape=False)}"

    @property
    def tag(self) -> str | None:
        return get_param(self.params, "tag")

    def with_tag(self, tag: str) -> NameAddr:
        # Built directly: dataclasses.replace is several times slower, and tags are added to
        # a few addresses of every call.
        return NameAddr(
            uri=self.uri, display_name=self.display_name, params=with_param(self.params, "tag", tag)
        )

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)


def validate_name_addr(text: str) -> None:
    """Raise :class:`RemoteProtocolError` unless ``text`` is a name-addr or addr-spec."""
    if _PLAIN_NAME_ADDR.fullmatch(text) is None:
        _parse_name_addr_fully(text)


@lru_cache(maxsize=4096)
def _parse_name_addr(text: str) -> NameAddr:
    plain = _PLAIN_NAME_ADDR.fullmatch(text)
    if plain is not None:
        spec = plain["spec"]
        if spec is not None:
            return NameAddr(uri=_parse_uri(spec), params=split_checked_params(plain["spec_params"]))
        quoted = plain["quoted"]
        return NameAddr(
            uri=_parse_uri(plain["uri"]),
            display_name=unquote_string(quoted) if quoted is not None else plain["tokens"],
            params=split_checked_params(plain["params"]),
        )
    return _parse_name_addr_fully(text)


def _parse_name_addr_fully(text: str) -> NameAddr:
    if not text:
        raise RemoteProtocolError("empty address")
    lt = _find_unquoted(text, "<") if '"' in text else text.find("<")
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            raise RemoteProtocolError("unterminated <> in address")
        display = _parse_display_name(text[:lt].strip(" \t"))
        # No LWS is allowed inside <> (RFC 4475 §3.1.2.14), so the URI text is not stripped.
        uri = _parse_uri(text[lt + 1 : gt])
        return NameAddr(uri=uri, display_name=display, params=_parse_header_params(text[gt + 1 :]))
    if text.startswith('"'):
        raise RemoteProtocolError("display name without <uri>")
    uri_text, semi, param_text = text.partition(";")
    uri_text = uri_text.rstrip(" \t")
    if "?" in uri_text or "," in uri_text:
        raise RemoteProtocolError("addr-spec with '?' or ',' needs <> (§20.10)")
    params = _parse_header_params(semi + param_text) if semi else ()
    return NameAddr(uri=_parse_uri(uri_text), params=params)


def quote_string(text: str) -> str:
    """A §25.1 quoted-string; control characters go out as quoted-pairs, as they came in."""
    out = text.replace("\\", "\\\\").replace('"', '\\"')
    if not out.isprintable():
        out = "".join(f"\\{c}" if c < " " or c == "\x7f" else c for c in out)
    return f'"{out}"'


def unquote_string(text: str) -> str:
    """The content of a §25.1 quoted-string (``text`` includes the quotes)."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise RemoteProtocolError("bad quoted string")
    inner = text[1:-1]
    if "\\" not in inner:
        if '"' in inner:
            raise RemoteProtocolError("stray quote in quoted string")
        return inner
    out = []
    i = 0
    n = len(inner)
    while i < n:
        c = inner[i]
        if c == "\\":
            i += 1
            if i == n:
                raise RemoteProtocolError("dangling backslash in quoted string")
            c = inner[i]
        elif c == '"':
            raise RemoteProtocolError("stray quote in quoted string")
        out.append(c)
        i += 1
    return "".join(out)


def _find_unquoted(text: str, ch: str) -> int:
    """Index of ``ch`` outside quoted strings; -1 if absent."""
    quoted = False
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == ch:
            return i
        i += 1
    if quoted:
        raise RemoteProtocolError("unterminated quoted string")
    return -1


def _parse_display_name(text: str) -> str | None:
    if not text:
        return None
    if text.startswith('"'):
        return unquote_string(text)
    words = text.split()
    if not all(is_token(w) for w in words):
        raise RemoteProtocolError("display name must be tokens or quoted")
    return " ".join(words)
