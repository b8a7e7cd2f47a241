"""SIP requests and responses: parse and serialise (RFC 3261 §7, §20, §25).

The parser is strict where RFC 4475 asks an element to reject a message (start-line spacing,
scalar ranges, CSeq/method mismatch, missing mandatory headers) and tolerant where it asks for
tolerance (LWS and line folding, compact names, case, unknown headers kept verbatim). It raises
:class:`RemoteProtocolError` carrying the status to answer with, so the transport can answer a
bad request without knowing why it was bad.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.sip.errors import RemoteProtocolError
from bridge.sip.headers import (
    LIST_HEADERS,
    CSeq,
    Headers,
    Via,
    canonical_name,
    split_list_value,
)
from bridge.sip.uri import NameAddr, SipUri, is_token

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

# §8.1.1: a request is unusable without these.
MANDATORY_REQUEST_HEADERS = ("To", "From", "CSeq", "Call-ID", "Via")
_SINGLE_HEADERS = ("To", "From", "CSeq", "Call-ID", "Max-Forwards", "Content-Length")


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
        value = self.headers.get("Contact")
        if value is None or value.strip() == "*":
            return None
        return NameAddr.parse(value)

    @property
    def content_type(self) -> str:
        value = self.headers.get("Content-Type") or ""
        return value.split(";", 1)[0].strip().lower()

    def _serialise(self, start_line: str) -> bytes:
        lines = [start_line]
        for name, value in self.headers:
            if name != "Content-Length":
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        lines.append("")
        lines.append("")
        return "\r\n".join(lines).encode("utf-8") + self.body


def _name_addr(headers: Headers, name: str) -> NameAddr:
    value = headers.get(name)
    if value is None:
        raise RemoteProtocolError(f"missing {name}")
    return NameAddr.parse(value)


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


def parse_message(data: bytes, *, stream: bool = False) -> Message:
    """Parse one whole message.

    With ``stream=False`` (UDP) the datagram is the frame and Content-Length may only shorten it
    (§18.3: bytes past it are discarded; a body shorter than it is an error). With
    ``stream=True`` the caller already framed the message with :class:`StreamFramer`.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise RemoteProtocolError("message too large", status=513)
    head_end = data.find(b"\r\n\r\n")
    sep_len = 4
    if head_end < 0:
        head_end = data.find(b"\n\n")
        sep_len = 2
    if head_end < 0:
        raise RemoteProtocolError("no end of headers")
    try:
        head = data[:head_end].decode("utf-8")
    except UnicodeDecodeError:
        head = data[:head_end].decode("latin-1")
    body = data[head_end + sep_len :]
    lines = _unfold(head)
    if not lines:
        raise RemoteProtocolError("empty message")
    start = lines[0]
    headers = Headers()
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not is_token(name):
            raise RemoteProtocolError(f"malformed header line {line[:60]!r}")
        cname = canonical_name(name)
        value = value.strip(" \t")
        if cname in LIST_HEADERS and not (cname == "Contact" and value == "*"):
            for part in split_list_value(value):
                headers.add(cname, part)
        else:
            headers.add(cname, value)
    body = _frame_body(headers, body, stream=stream)
    if start.startswith(SIP_VERSION + " ") or start.upper().startswith("SIP/"):
        message: Message = _parse_status_line(start, headers, body)
    else:
        message = _parse_request_line(start, headers, body)
    _check_common(message)
    return message


def _unfold(head: str) -> list[str]:
    """Join continuation lines (§7.3.1) and drop leading empty lines (§7.5)."""
    raw = head.replace("\r\n", "\n").split("\n")
    while raw and raw[0] == "":
        raw.pop(0)
    lines: list[str] = []
    for line in raw:
        if line[:1] in (" ", "\t") and lines:
            lines[-1] = lines[-1].rstrip(" \t") + " " + line.strip(" \t")
        else:
            lines.append(line)
    return lines


def _frame_body(headers: Headers, body: bytes, *, stream: bool) -> bytes:
    lengths = headers.get_all("Content-Length")
    if len(lengths) > 1:
        raise RemoteProtocolError("more than one Content-Length")
    if not lengths:
        if stream:
            raise RemoteProtocolError("Content-Length is required over a stream transport")
        return body
    text = lengths[0].strip()
    if not text.isdigit():
        raise RemoteProtocolError(f"bad Content-Length {text!r}")
    length = int(text)
    if length > len(body):
        raise RemoteProtocolError("Content-Length larger than the message")
    return body[:length]


def _parse_request_line(start: str, headers: Headers, body: bytes) -> Request:
    parts = start.split(" ")
    if len(parts) != 3 or not all(parts):
        raise RemoteProtocolError(f"malformed request line {start[:80]!r}")
    method, uri_text, version = parts
    if not is_token(method):
        raise RemoteProtocolError(f"bad method {method[:40]!r}")
    if version.upper() != SIP_VERSION:
        raise RemoteProtocolError(f"unsupported version {version!r}", status=505)
    if uri_text.startswith("<"):
        raise RemoteProtocolError("Request-URI enclosed in <>")
    uri = SipUri.parse(uri_text)
    if uri.headers:
        raise RemoteProtocolError("Request-URI carries escaped headers")
    request = Request(method=method, uri=uri, headers=headers, body=body)
    missing = [name for name in MANDATORY_REQUEST_HEADERS if name not in headers]
    if missing:
        raise RemoteProtocolError(f"missing mandatory headers: {', '.join(missing)}")
    cseq = request.cseq
    if cseq.method != method:
        raise RemoteProtocolError("CSeq method does not match the request method")
    max_forwards = headers.get("Max-Forwards")
    if max_forwards is not None and (
        not max_forwards.isdigit() or int(max_forwards) > 255
    ):
        raise RemoteProtocolError(f"bad Max-Forwards {max_forwards!r}")
    return request


def _parse_status_line(start: str, headers: Headers, body: bytes) -> Response:
    version, _, rest = start.partition(" ")
    code, _, reason = rest.partition(" ")
    if version.upper() != SIP_VERSION:
        raise RemoteProtocolError(f"unsupported version {version!r}", status=505)
    if len(code) != 3 or not code.isdigit() or not 100 <= int(code) <= 699:
        raise RemoteProtocolError(f"bad status code {code!r}")
    response = Response(status=int(code), reason=reason, headers=headers, body=body)
    response.cseq  # noqa: B018 - validates CSeq, which every response must carry
    return response


def _check_common(message: Message) -> None:
    for name in _SINGLE_HEADERS:
        if len(message.headers.get_all(name)) > 1:
            raise RemoteProtocolError(f"more than one {name} header")
    message.from_  # noqa: B018 - validates the address
    message.to  # noqa: B018
    for via in message.headers.get_all("Via"):
        Via.parse(via)


class StreamFramer:
    """Cuts a TCP byte stream into messages by Content-Length (§18.3).

    Bytes accumulate until a whole message is present; a header block longer than
    ``max_size`` without an end is an error, so a stalled or hostile peer cannot grow the
    buffer without bound.
    """

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buffer = bytearray()
        self.max_size = max_size

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        while True:
            # §7.5: CRLFs between messages (keep-alives, RFC 5626 §4.4.1) are skipped.
            while self._buffer[:2] == b"\r\n":
                del self._buffer[:2]
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self.max_size:
                    self._buffer.clear()
                    raise RemoteProtocolError("header block too large", status=513)
                return frames
            length = _content_length(bytes(self._buffer[:end]))
            total = end + 4 + length
            if total > self.max_size:
                self._buffer.clear()
                raise RemoteProtocolError("message too large", status=513)
            if len(self._buffer) < total:
                return frames
            frames.append(bytes(self._buffer[:total]))
            del self._buffer[:total]

    @property
    def pending(self) -> int:
        return len(self._buffer)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            text = value.strip()
            if not text.isdigit():
                raise RemoteProtocolError(f"bad Content-Length {text!r}")
            return int(text)
    raise RemoteProtocolError("Content-Length is required over a stream transport")


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
