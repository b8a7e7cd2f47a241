"""A minimal SIP user agent for driving load: raw SIP text over UDP, one socket per peer.

The benches play the bridge's callers, desks and targets with this instead of the bridge's own
SIP stack (``bridge.sip``), deliberately: a bench that parsed and built its messages with the code
under test would measure the bridge with itself, and a fault shared by both sides would go unseen.
It knows only what the peers need (a loose parser, request and response text, kernel receive
timestamps); it is no general SIP implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

HOST = "127.0.0.1"
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python does not name it


# -- a tiny SIP text layer ------------------------------------------------------------------

COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "c": "content-type"}


@dataclass(slots=True)
class Message:
    first: str
    headers: dict[str, str]
    vias: list[str]
    body: str

    @property
    def is_request(self) -> bool:
        return not self.first.startswith("SIP/2.0")

    @property
    def method(self) -> str:
        return self.first.split(" ", 1)[0]

    @property
    def status(self) -> int:
        return int(self.first.split(" ", 2)[1])

    @property
    def cseq(self) -> tuple[int, str]:
        number, method = self.headers["cseq"].split()
        return int(number), method

    @property
    def call_id(self) -> str:
        return self.headers["call-id"]

    @property
    def branch(self) -> str:
        return param(self.vias[0], "branch") if self.vias else ""

    def get(self, name: str) -> str:
        return self.headers.get(name, "")


def parse(data: bytes) -> Message:
    text = data.decode("utf-8", "replace")
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers: dict[str, str] = {}
    vias: list[str] = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        key = COMPACT.get(key, key)
        value = value.strip()
        if key == "via":
            vias.extend(v.strip() for v in value.split(","))
        headers.setdefault(key, value)
    return Message(first=lines[0], headers=headers, vias=vias, body=body)


def param(value: str, name: str) -> str:
    for part in value.split(";")[1:]:
        key, _, found = part.partition("=")
        if key.strip().lower() == name:
            return found.strip()
    return ""


def uri_of(name_addr: str) -> str:
    if "<" in name_addr:
        return name_addr.split("<", 1)[1].split(">", 1)[0]
    return name_addr.split(";", 1)[0].strip()


def user_of(name_addr: str) -> str:
    uri = uri_of(name_addr)
    return uri.split(":", 1)[1].split("@", 1)[0] if "@" in uri else ""


def build(first: str, headers: list[tuple[str, str]], body: str = "") -> bytes:
    lines = [first, *(f"{name}: {value}" for name, value in headers)]
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def response(
    request: Message,
    status: int,
    reason: str,
    *,
    to_tag: str,
    body: str = "",
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    to = request.get("to")
    if ";tag=" not in to:
        to = f"{to};tag={to_tag}"
    headers = [("Via", via) for via in request.vias]
    headers += [("From", request.get("from")), ("To", to), ("Call-ID", request.call_id)]
    headers += [("CSeq", request.get("cseq")), *extra]
    if body:
        headers.append(("Content-Type", "application/sdp"))
    return build(f"SIP/2.0 {status} {reason}", headers, body)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


# -- peers ----------------------------------------------------------------------------------


Handler = Callable[[Message, tuple[str, int], int], None]


class Endpoint:
    """One UDP socket read with the kernel's receive timestamps (SO_TIMESTAMPNS)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, handler: Handler | None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self.handler = handler
        self.loop = loop
        loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data, ancillary, _flags, addr = self.sock.recvmsg(65535, socket.CMSG_SPACE(16))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            stamp = time.time_ns()
            for level, kind, raw in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= 16:
                    seconds, nanos = struct.unpack("qq", raw[:16])
                    stamp = seconds * 1_000_000_000 + nanos
            if self.handler is None:
                continue
            try:
                message = parse(data)
            except (ValueError, IndexError, KeyError):
                continue
            self.handler(message, addr, stamp)

    def send(self, data: bytes, addr: tuple[str, int]) -> int:
        sent_at = time.time_ns()
        with contextlib.suppress(BlockingIOError):
            self.sock.sendto(data, addr)
        return sent_at

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


@dataclass(slots=True, kw_only=True)
class Dialog:
    """The UAS side's view of a dialog the bridge opened (agent and target legs)."""

    call_id: str
    local: str  # our To value with our tag: From of our requests
    remote: str  # the bridge's From value: To of our requests
    remote_uri: str
    cseq: int = 0
