"""SIP URIs and the address forms built on them (RFC 3261 §19.1, §20.10, §25.1).

URIs are kept as parsed, immutable values; ``str()`` gives the wire form back. User parts and
parameters are stored unescaped, because comparisons (§19.1.4) happen on unescaped values.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from urllib.parse import quote, unquote

from bridge.sip.errors import RemoteProtocolError

# RFC 3261 §25.1: characters allowed unescaped in the user part and in parameters.
_USER_SAFE = "-_.!~*'()&=+$,;?/"
_PARAM_SAFE = "-_.!~*'()[]/:&+$"
_HDR_SAFE = "-_.!~*'()[]/?:+$"

Params = tuple[tuple[str, str | None], ...]


def parse_params(text: str, *, unescape: bool = True) -> Params:
    """Parse ``;name=value;flag`` (leading ``;`` optional). Names are lower-cased (§7.3.1)."""
    out: list[tuple[str, str | None]] = []
    for raw in split_quoted(text, ";"):
        item = raw.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not name:
            raise RemoteProtocolError(f"empty parameter name in {text!r}")
        if sep:
            value = value.strip()
            out.append((name, unquote(value) if unescape else value))
        else:
            out.append((name, None))
    return tuple(out)


def format_params(params: Params, safe: str = _PARAM_SAFE) -> str:
    parts = []
    for name, value in params:
        if value is None:
            parts.append(f";{name}")
        elif value.startswith('"'):
            parts.append(f";{name}={value}")
        else:
            parts.append(f";{name}={quote(value, safe=safe)}")
    return "".join(parts)


def split_quoted(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes and angle brackets."""
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
        raise RemoteProtocolError(f"unterminated quoted string in {text!r}")
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

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or not scheme or not scheme[0].isalpha():
            raise RemoteProtocolError(f"not a URI: {text!r}")
        if any(ch in text for ch in " \t\r\n<>\""):
            raise RemoteProtocolError(f"illegal character in URI {text!r}")
        if scheme not in ("sip", "sips"):
            return cls(scheme=scheme, opaque=rest)
        rest, qmark, hdrs = rest.partition("?")
        userinfo, at, hostpart = rest.rpartition("@")
        if not at:
            hostpart = rest
        user: str | None = None
        password: str | None = None
        if at:
            u, pc, pw = userinfo.partition(":")
            user = unquote(u)
            password = unquote(pw) if pc else None
        hostport, _, param_text = hostpart.partition(";")
        host, port = _split_hostport(hostport, text)
        params = parse_params(param_text) if param_text else ()
        headers: Params = ()
        if qmark:
            pairs = []
            for item in hdrs.split("&"):
                name, _, value = item.partition("=")
                pairs.append((unquote(name), unquote(value)))
            headers = tuple(pairs)
        return cls(
            scheme=scheme,
            user=user,
            password=password,
            host=host.lower(),
            port=port,
            params=params,
            headers=headers,
        )

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(quote(self.user, safe=_USER_SAFE))
            if self.password is not None:
                out.append(":" + quote(self.password, safe=_USER_SAFE))
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(format_params(self.params))
        if self.headers:
            out.append("?")
            out.append(
                "&".join(
                    f"{quote(k, safe=_HDR_SAFE)}={quote(v or '', safe=_HDR_SAFE)}"
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


def _split_hostport(hostport: str, whole: str) -> tuple[str, int | None]:
    if not hostport:
        raise RemoteProtocolError(f"URI without host: {whole!r}")
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise RemoteProtocolError(f"unterminated IPv6 reference in {whole!r}")
        host, tail = hostport[: end + 1], hostport[end + 1 :]
        port_text = tail[1:] if tail.startswith(":") else None
        if tail and port_text is None:
            raise RemoteProtocolError(f"junk after IPv6 host in {whole!r}")
    else:
        host, colon, port_text_raw = hostport.partition(":")
        port_text = port_text_raw if colon else None
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise RemoteProtocolError(f"bad port in {whole!r}")
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
        text = text.strip()
        if not text:
            raise RemoteProtocolError("empty address")
        lt = _find_unquoted(text, "<")
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise RemoteProtocolError(f"unterminated <> in {text!r}")
            display = _parse_display_name(text[:lt].strip())
            uri = SipUri.parse(text[lt + 1 : gt])
            params = parse_params(text[gt + 1 :].strip(), unescape=False)
            if text[gt + 1 :].strip() and not text[gt + 1 :].strip().startswith(";"):
                raise RemoteProtocolError(f"junk after address in {text!r}")
            return cls(uri=uri, display_name=display, params=params)
        if text.startswith('"'):
            raise RemoteProtocolError(f"display name without <uri> in {text!r}")
        uri_text, _, param_text = text.partition(";")
        if any(ch in uri_text.strip() for ch in " \t"):
            raise RemoteProtocolError(f"whitespace inside addr-spec {text!r}")
        if "?" in uri_text or "," in uri_text:
            raise RemoteProtocolError(f"addr-spec with headers or commas must use <>: {text!r}")
        return cls(uri=SipUri.parse(uri_text), params=parse_params(param_text, unescape=False))

    def __str__(self) -> str:
        display = ""
        if self.display_name:
            escaped = self.display_name.replace("\\", "\\\\").replace('"', '\\"')
            display = f'"{escaped}" '
        return f"{display}<{self.uri}>{format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        return get_param(self.params, "tag")

    def with_tag(self, tag: str) -> NameAddr:
        return replace(self, params=with_param(self.params, "tag", tag))

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)


def _find_unquoted(text: str, ch: str) -> int:
    quoted = False
    i = 0
    while i < len(text):
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
        raise RemoteProtocolError(f"unterminated quoted string in {text!r}")
    return -1


_TOKEN_EXTRA = set("-.!%*_+`'~")


def is_token(text: str) -> bool:
    """RFC 3261 §25.1 ``token``."""
    return bool(text) and all(c.isascii() and (c.isalnum() or c in _TOKEN_EXTRA) for c in text)


def _parse_display_name(text: str) -> str | None:
    if not text:
        return None
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"'):
            raise RemoteProtocolError(f"bad quoted display name {text!r}")
        inner = text[1:-1]
        out = []
        i = 0
        while i < len(inner):
            c = inner[i]
            if c == "\\" and i + 1 < len(inner):
                i += 1
                c = inner[i]
            elif c == '"':
                raise RemoteProtocolError(f"stray quote in display name {text!r}")
            out.append(c)
            i += 1
        return "".join(out)
    words = text.split()
    if not all(is_token(w) for w in words):
        raise RemoteProtocolError(f"display name must be tokens or quoted: {text!r}")
    return " ".join(words)
