"""SIP requests and responses: parse and serialise (RFC 3261 §7, §20, §25).

The parser is strict where RFC 4475 asks an element to reject a message (start-line spacing,
scalar ranges, CSeq/method mismatch, missing mandatory headers, malformed From/To/Via) and
tolerant where it asks for tolerance (LWS and line folding, compact names, case, unknown
headers kept verbatim). It raises :class:`RemoteProtocolError` carrying the status to answer
with, so the transport can answer a bad request without knowing why it was bad.

Only the headers every layer needs (Via, From, To, Call-ID, CSeq, Max-Forwards,
Content-Length) are checked eagerly; the rest are kept as text and parsed when read, so a
message costs a few microseconds however many headers it carries. Semantic checks that need
local policy (Require, Date, Contact syntax, URI scheme) live in :mod:`bridge.sip.checks`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain, groupby
from operator import itemgetter

from bridge.sip.errors import LocalProtocolError, RemoteProtocolError
from bridge.sip.headers import (
    ADDRESS_LIST_HEADERS,
    JOINED_LIST_HEADERS,
    LIST_HEADERS,
    CSeq,
    Headers,
    Via,
    _wire_name_cache,
    cseq_method,
    header_name_from_wire,
    split_list_value,
    validate_via,
)
from bridge.sip.uri import TOKEN_CHARS, NameAddr, SipUri, is_token, validate_name_addr

SIP_VERSION = "SIP/2.0"
MAX_MESSAGE_SIZE = 65535

REASONS = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


# §8.1.1: a request is unusable without these; §8.2.6.2: a response echoes them.
MANDATORY_REQUEST_HEADERS = ("To", "From", "CSeq", "Call-ID", "Via")
_SINGLE_HEADERS = frozenset(
    {"To", "From", "CSeq", "Call-ID", "Max-Forwards", "Content-Length", "Content-Type"}
)
# §25.1 callid = word ["@" word]
_CALL_ID_CHARS = TOKEN_CHARS + '()<>:\\"/[]?{}@'
MAX_FORWARDS_LIMIT = 255


@dataclass(slots=True, kw_only=True)
class _Message:
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> CSeq:
        value = self.headers.get("CSeq")
        if value is None:
            raise RemoteProtocolError("missing CSeq")
        return CSeq.parse(value)

    @property
    def from_(self) -> NameAddr:
        return _name_addr(self.headers, "From")

    @property
    def to(self) -> NameAddr:
        return _name_addr(self.headers, "To")

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        value = self.headers.get("Via")
        if value is None:
            raise RemoteProtocolError("missing Via")
        return Via.parse(value)

    @property
    def contact(self) -> NameAddr | None:
        """The first Contact; None when absent or the REGISTER wildcard ``*`` (§10.2.2)."""
        value = self.headers.get("Contact")
        if value is None or value == "*":
            return None
        return NameAddr.parse(value)

    @property
    def contacts(self) -> list[NameAddr]:
        return [NameAddr.parse(v) for v in self.headers.get_all("Contact") if v != "*"]

    @property
    def routes(self) -> list[NameAddr]:
        return [NameAddr.parse(v) for v in self.headers.get_all("Route")]

    @property
    def record_routes(self) -> list[NameAddr]:
        return [NameAddr.parse(v) for v in self.headers.get_all("Record-Route")]

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        return None if value is None else _max_forwards(value)

    @property
    def content_type(self) -> str:
        value = self.headers.get("Content-Type") or ""
        return value.split(";", 1)[0].strip().lower()

    def option_tags(self, name: str) -> frozenset[str]:
        """The option tags of Require, Proxy-Require, Supported or Unsupported (§19.2)."""
        return frozenset(v for v in self.headers.get_all(name) if v)

    def _serialise(self, start_line: str) -> bytes:
        """One header per line in stored order, option-tag lists joined on one line, and a
        Content-Length that always matches the body (§20.14)."""
        lines = [start_line]
        length_line: str | None = f"Content-Length: {len(self.body)}"
        for name, group in groupby(self.headers, itemgetter(0)):
            if name in JOINED_LIST_HEADERS:
                values = [value for _, value in group]
                if "" in values:
                    lines += [f"{name}: {value}" for value in values]
                else:
                    lines.append(f"{name}: {', '.join(values)}")
            elif name == "Content-Length":
                if length_line is not None:
                    lines.append(length_line)
                    length_line = None
            else:
                lines += [f"{name}: {value}" for _, value in group]
        if length_line is not None:
            lines.append(length_line)
        lines.append("\r\n")
        head = "\r\n".join(lines)
        if head.count("\n") != len(lines) or head.count("\r") != len(lines):
            raise LocalProtocolError("line break inside a start line or header value")
        return head.encode("utf-8") + self.body


def _name_addr(headers: Headers, name: str) -> NameAddr:
    value = headers.get(name)
    if value is None:
        raise RemoteProtocolError(f"missing {name}")
    return NameAddr.parse(value)


def _max_forwards(value: str) -> int:
    if not value.isascii() or not value.isdigit() or int(value) > MAX_FORWARDS_LIMIT:
        raise RemoteProtocolError(f"bad Max-Forwards {value[:20]!r}")
    return int(value)


@dataclass(slots=True, kw_only=True)
class Request(_Message):
    method: str
    uri: SipUri

    def __bytes__(self) -> bytes:
        return self._serialise(f"{self.method} {self.uri} {self.version}")

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} call_id={self.call_id!r}>"


@dataclass(slots=True, kw_only=True)
class Response(_Message):
    status: int
    reason: str = ""

    def __bytes__(self) -> bytes:
        reason = self.reason or REASONS.get(self.status, "")
        return self._serialise(f"{self.version} {self.status} {reason}")

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} call_id={self.call_id!r}>"


Message = Request | Response


def parse_message(
    data: bytes, *, stream: bool = False, max_size: int = MAX_MESSAGE_SIZE
) -> Message:
    """Parse one whole message.

    With ``stream=False`` (UDP) the datagram is the frame and Content-Length may only shorten
    it (§18.3: bytes past it are discarded, RFC 4475 §3.1.1.8; a body shorter than it is an
    error, §3.1.2.2). With ``stream=True`` the caller already framed the message with
    :class:`StreamFramer` and Content-Length is mandatory.
    """
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")  # §7.5: CRLFs before the start line are ignored
    head_end = data.find(b"\r\n\r\n", 0, max_size)
    if len(data) > max_size:
        if head_end >= 0:
            raise RemoteProtocolError("message body too large", status=413, reason=REASONS[413])
        raise RemoteProtocolError("message too large", status=513, reason=REASONS[513])
    raw_head = data[:head_end]
    body_start = head_end + 4
    try:
        head = raw_head.decode("utf-8")
    except UnicodeDecodeError:
        head = raw_head.decode("latin-1")
    lines = head.split("\r\n")
    if head_end < 0 or head.count("\n") >= len(lines) or head.count("\r") >= len(lines):
        # Not the plain CRLF layout: bare LF line ends (tolerated), or stray CR/LF (not).
        lines, body_start = _split_lenient(data, max_size)
    start = lines[0]
    is_response = start[:4].upper() == "SIP/"
    request_line = None if is_response else _REQUEST_LINES.get(start) or _request_line(start)
    try:
        groups = [_LINE_CACHE.get(line) or _header_line(line) for line in lines[1:]]
    except RemoteProtocolError:
        # Folded lines (§7.3.1) are rare: unfold only when a line failed on its own.
        unfolded = _unfold(lines)
        if len(unfolded) == len(lines):
            raise
        lines = unfolded
        groups = [_LINE_CACHE.get(line) or _header_line(line) for line in lines[1:]]
    items = list(chain.from_iterable(groups))
    first = dict(items)
    singles = [item for item in items if item[0] in _SINGLE_HEADERS]
    if len(singles) != len(_SINGLE_HEADERS.intersection(first)):
        _raise_duplicate(items)
    if not first.keys() >= _MANDATORY_SET:
        missing = [name for name in MANDATORY_REQUEST_HEADERS if name not in first]
        raise RemoteProtocolError(f"missing mandatory headers: {', '.join(missing)}")
    body = _frame_body(first.get("Content-Length"), data[body_start:], stream=stream)
    headers = Headers.from_canonical(items)
    if request_line is None:
        return _parse_status_line(start, headers, body)
    method = request_line[0]
    if first["CSeq"].split()[1] != method:
        raise RemoteProtocolError("CSeq method does not match the request method")
    return Request(method=method, uri=request_line[1], headers=headers, body=body)


# Whole header lines that recur from message to message (``Max-Forwards: 70``, a peer's
# ``Allow`` and ``User-Agent``) map straight to their parsed items. Lines that are new in
# every message (Via branch, tags, Call-ID, CSeq) are not stored. A line is checked before
# it is stored, so a hit needs no further check.
_LINE_CACHE: dict[str, tuple[tuple[str, str], ...]] = {}
_LINE_CACHE_LIMIT = 2048
_UNCACHED_LINES = frozenset({"Via", "From", "To", "Call-ID", "CSeq"})
_MANDATORY_SET = frozenset(MANDATORY_REQUEST_HEADERS)


def _check_call_id(value: str) -> None:
    if not value or value.strip(_CALL_ID_CHARS):
        raise RemoteProtocolError("bad Call-ID")


# The headers every layer reads are checked as soon as their line is read (§8.1.1, §20).
_CHECKS: dict[str, Callable[[str], object]] = {
    "Via": validate_via,
    "From": validate_name_addr,
    "To": validate_name_addr,
    "Call-ID": _check_call_id,
    "CSeq": cseq_method,
    "Max-Forwards": _max_forwards,
}


def _header_line(line: str) -> tuple[tuple[str, str], ...]:
    raw_name, colon, value = line.partition(":")
    if not colon:
        raise RemoteProtocolError("malformed header line (no colon)")
    name = _wire_name_cache.get(raw_name) or header_name_from_wire(raw_name)
    value = value.strip(" \t")
    check = _CHECKS.get(name)
    if name not in LIST_HEADERS:
        if check is not None:
            check(value)
        result: tuple[tuple[str, str], ...] = ((name, value),)
    elif "," in value:
        parts = split_list_value(value, allow_empty=name not in ADDRESS_LIST_HEADERS)
        if check is not None:
            for part in parts:
                check(part)
        result = tuple((name, part) for part in parts)
    elif value or name not in ADDRESS_LIST_HEADERS:
        if check is not None:
            check(value)
        result = ((name, value),)
    else:
        raise RemoteProtocolError(f"empty {name} header")
    if name not in _UNCACHED_LINES and len(line) <= 256:
        if len(_LINE_CACHE) >= _LINE_CACHE_LIMIT:
            _LINE_CACHE.clear()
        _LINE_CACHE[line] = result
    return result


def _raise_duplicate(items: list[tuple[str, str]]) -> None:
    names = [name for name, _ in items]
    for name in sorted(_SINGLE_HEADERS.intersection(names)):
        if names.count(name) > 1:
            raise RemoteProtocolError(f"more than one {name} header")


def _split_lenient(data: bytes, max_size: int) -> tuple[list[str], int]:
    """Lines of a header block that ends lines with bare LF (tolerated, as RFC 3261 §7.5
    readers commonly do); a CR or LF anywhere but at a line end is an error."""
    head_end = data.find(b"\r\n\r\n", 0, max_size)
    lf_end = data.find(b"\n\n", 0, head_end if head_end >= 0 else max_size)
    if lf_end >= 0:
        head_end, sep_len = lf_end, 2
    elif head_end >= 0:
        sep_len = 4
    else:
        raise RemoteProtocolError("no end of headers" if data else "empty message")
    raw_head = data[:head_end]
    try:
        head = raw_head.decode("utf-8")
    except UnicodeDecodeError:
        head = raw_head.decode("latin-1")
    head = head.replace("\r\n", "\n")
    if "\r" in head:
        raise RemoteProtocolError("bare CR in header block")
    return head.split("\n"), head_end + sep_len


def _unfold(lines: list[str]) -> list[str]:
    """Join continuation lines (§7.3.1): a line starting with SP/HT continues the last one."""
    out: list[str] = []
    for line in lines:
        if line[:1] not in (" ", "\t"):
            out.append(line)
        elif len(out) > 1:
            out[-1] = out[-1].rstrip(" \t") + " " + line.strip(" \t")
        else:
            raise RemoteProtocolError("continuation line without a header")
    return out


def _frame_body(length_text: str | None, body: bytes, *, stream: bool) -> bytes:
    if length_text is None:
        if stream:
            raise RemoteProtocolError("Content-Length is required over a stream transport")
        return body
    if not length_text.isascii() or not length_text.isdigit():
        raise RemoteProtocolError(f"bad Content-Length {length_text[:20]!r}")
    length = int(length_text)
    if length > len(body):
        raise RemoteProtocolError("Content-Length larger than the message")
    return body[:length] if length < len(body) else body


# Request lines repeat (a trunk's INVITEs, in-dialog requests to one Contact).
_REQUEST_LINES: dict[str, tuple[str, SipUri]] = {}


def _request_line(start: str) -> tuple[str, SipUri]:
    parts = start.split(" ")
    if len(parts) != 3 or not all(parts):
        raise RemoteProtocolError("malformed request line")
    method, uri_text, version = parts
    if not is_token(method):
        raise RemoteProtocolError(f"bad method {method[:40]!r}")
    if version.upper() != SIP_VERSION:
        if version[:4].upper() == "SIP/":
            raise RemoteProtocolError(
                f"unsupported version {version[:20]!r}", status=505, reason=REASONS[505]
            )
        raise RemoteProtocolError("malformed request line")
    if uri_text.startswith("<"):
        raise RemoteProtocolError("Request-URI enclosed in <>")
    uri = SipUri.parse(uri_text)
    if uri.headers:
        raise RemoteProtocolError("Request-URI carries escaped headers")
    if len(_REQUEST_LINES) >= _LINE_CACHE_LIMIT:
        _REQUEST_LINES.clear()
    _REQUEST_LINES[start] = (method, uri)
    return method, uri


def _parse_status_line(start: str, headers: Headers, body: bytes) -> Response:
    version, _, rest = start.partition(" ")
    code, _, reason = rest.partition(" ")
    if version.upper() != SIP_VERSION:
        raise RemoteProtocolError(
            f"unsupported version {version[:20]!r}", status=505, reason=REASONS[505]
        )
    if len(code) != 3 or not code.isascii() or not code.isdigit() or not 100 <= int(code) <= 699:
        raise RemoteProtocolError(f"bad status code {code[:20]!r}")
    return Response(status=int(code), reason=reason, headers=headers, body=body)


class StreamFramer:
    """Cuts a TCP byte stream into messages by Content-Length (§18.3).

    Bytes accumulate until a whole message is present; a header block longer than
    ``max_size`` without an end is an error, so a stalled or hostile peer cannot grow the
    buffer without bound. After a :class:`RemoteProtocolError` the stream has lost its
    framing and the connection must be closed (RFC 4475 §3.1.2.3).

    CRLFs between messages are skipped (§7.5). A double CRLF is an RFC 5626 §4.4.1 keep-alive
    ping: :meth:`take_pongs` says how many single-CRLF pongs the caller owes the peer.
    """

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buffer = bytearray()
        self._scanned = 0
        self._crlf_run = 0
        self._pongs = 0
        self.max_size = max_size

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        buffer = self._buffer
        while True:
            if buffer[:1] == b"\r":
                self._skip_keepalives()
            end = buffer.find(b"\r\n\r\n", max(self._scanned - 3, 0))
            if end < 0:
                self._scanned = max(len(buffer), 1) if buffer else 0
                if len(buffer) > self.max_size:
                    self._fail()
                    raise RemoteProtocolError(
                        "header block too large", status=513, reason=REASONS[513]
                    )
                return frames
            try:
                length = _content_length(bytes(buffer[:end]))
            except RemoteProtocolError:
                self._fail()
                raise
            total = end + 4 + length
            if total > self.max_size:
                self._fail()
                raise RemoteProtocolError("message too large", status=413, reason=REASONS[413])
            if len(buffer) < total:
                self._scanned = end + 1
                return frames
            frames.append(bytes(buffer[:total]))
            del buffer[:total]
            self._scanned = 0
            self._crlf_run = 0

    def take_pongs(self) -> int:
        """Keep-alive pings seen since the last call; answer each with one CRLF."""
        pongs, self._pongs = self._pongs, 0
        return pongs

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def _skip_keepalives(self) -> None:
        buffer = self._buffer
        skipped = 0
        while buffer[skipped : skipped + 2] == b"\r\n":
            skipped += 2
        if skipped:
            del buffer[:skipped]
            self._scanned = 0
            self._crlf_run += skipped // 2
            self._pongs += self._crlf_run // 2
            self._crlf_run %= 2

    def _fail(self) -> None:
        self._buffer.clear()
        self._scanned = 0


def _content_length(head: bytes) -> int:
    found: int | None = None
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.rstrip(b" \t").lower() in (b"content-length", b"l"):
            text = value.strip(b" \t")
            if not text.isdigit() or len(text) > 10:
                raise RemoteProtocolError(f"bad Content-Length {text[:20]!r}")
            if found is not None and found != int(text):
                raise RemoteProtocolError("conflicting Content-Length headers")
            found = int(text)
    if found is None:
        raise RemoteProtocolError("Content-Length is required over a stream transport")
    return found


def make_response(
    request: Request, status: int, reason: str | None = None, *, to_tag: str | None = None
) -> Response:
    """Build a response to ``request`` (§8.2.6.2): Via, From, Call-ID and CSeq are copied; the
    To tag is added unless the request already had one (or the status is 100, §8.2.6.2)."""
    headers = Headers()
    for via in request.headers.get_all("Via"):
        headers.add("Via", via)
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = request.headers.get(name)
        if value is not None:
            headers.add(name, value)
    if to_tag is not None and status != 100:
        to = request.to
        if to.tag is None:
            headers.set("To", str(to.with_tag(to_tag)))
    return Response(status=status, reason=reason or REASONS.get(status, ""), headers=headers)


def error_response(
    data: bytes, error: RemoteProtocolError, *, to_tag: str | None = None
) -> Response | None:
    """The response owed for bytes :func:`parse_message` rejected, or None when nothing may
    be sent: the bytes were a response or an ACK (§17.1.1.3, neither is answered), or no Via
    is readable to address the answer (§18.2.2).

    Via, From, To, Call-ID and CSeq are echoed exactly as received, as §8.2.6.2 asks (even a
    Via the parser refused: RFC 4475 §3.1.2.1 still expects a 400), so the peer can match the
    error to its transaction.
    """
    head = data[:MAX_MESSAGE_SIZE].lstrip(b"\r\n")
    for separator in (b"\r\n\r\n", b"\n\n"):
        head = head.split(separator, 1)[0]
    lines = _unfold_leniently(head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n"))
    method = lines[0].split(" ", 1)[0]
    if method[:4].upper() == "SIP/" or method == "ACK":
        return None
    echoed: dict[str, list[str]] = {}
    for line in lines[1:]:
        raw_name, colon, value = line.partition(":")
        try:
            name = header_name_from_wire(raw_name)
        except RemoteProtocolError:
            continue
        value = value.strip(" \t")
        if colon and name in MANDATORY_REQUEST_HEADERS and value and value.isprintable():
            echoed.setdefault(name, []).append(value)
    if "Via" not in echoed:
        return None
    headers = Headers.from_canonical([("Via", via) for via in echoed["Via"]])
    for name in ("From", "To", "Call-ID", "CSeq"):
        values = echoed.get(name)
        if values:
            headers.add(name, values[0])
    if to_tag is not None and error.status != 100:
        try:
            to = NameAddr.parse(headers.get("To") or "")
        except RemoteProtocolError:
            to = None
        if to is not None and to.tag is None:
            headers.set("To", str(to.with_tag(to_tag)))
    return Response(
        status=error.status, reason=REASONS.get(error.status, error.reason), headers=headers
    )


def _unfold_leniently(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t") and out:
            out[-1] = out[-1].rstrip(" \t") + " " + line.strip(" \t")
        else:
            out.append(line)
    return out
