"""SIP over UDP and TCP on one address: the only place SIP meets asyncio.

The transport hands raw frames up with their source and transport name and sends frames down to
an address; it knows nothing of SIP beyond framing TCP streams (RFC 3261 §18.3). A TCP peer that
sends half a message and stalls keeps only its own buffer; it is closed after ``idle_timeout``.

A destination it cannot reach is reported up by address and transport name (§18.4: the transport
informs the transaction layer), which is how the transaction layer indexes what it sends: every
transaction sending there fails at once instead of waiting out Timer B or F (§17.1.1.2).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.sip.errors import RemoteProtocolError
from bridge.sip.message import MAX_MESSAGE_SIZE, StreamFramer

log = logging.getLogger("bridge.transport")

Address = tuple[str, int]
FrameHandler = Callable[[bytes, Address, str], None]
ErrorHandler = Callable[[Address, str], None]


@dataclass
class TransportStats:
    udp_in: int = 0
    udp_out: int = 0
    tcp_in: int = 0
    tcp_out: int = 0
    oversize: int = 0
    framing_errors: int = 0
    send_errors: int = 0
    tcp_connections: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.owner.stats.udp_in += 1
        if len(data) > self.owner.max_size:
            self.owner.stats.oversize += 1
            return
        self.owner.on_frame(data, (str(addr[0]), int(addr[1])), "UDP")

    def error_received(self, exc: Exception) -> None:
        """An ICMP error (port unreachable) or a failed ``sendto``: counted, not reported.

        §18.4 asks for it to be reported up, but asyncio hands over only the exception, not
        the address of the datagram that drew it, and one socket sends to every peer: there
        is no telling which transactions it concerns. Over UDP the client transactions'
        Timers B and F (64*T1) end them anyway, and the TU reads that as a 408 (§8.1.3.1)."""
        self.owner.stats.send_errors += 1


class _TcpConnection(asyncio.Protocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner
        self.framer = StreamFramer(owner.max_size)
        self.transport: asyncio.Transport | None = None
        self.peer: Address = ("", 0)
        self.idle_handle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1]))
        self.owner.tcp[self.peer] = self
        self.owner.stats.tcp_connections += 1
        self._arm_idle()

    def _arm_idle(self) -> None:
        if self.idle_handle is not None:
            self.idle_handle.cancel()
        loop = asyncio.get_running_loop()
        self.idle_handle = loop.call_later(self.owner.idle_timeout, self._idle)

    def _idle(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.owner.stats.tcp_in += 1
        self._arm_idle()
        try:
            frames = self.framer.feed(data)
        except RemoteProtocolError:
            self.owner.stats.framing_errors += 1
            if self.transport is not None:
                self.transport.close()
            return
        pongs = self.framer.take_pongs()
        if pongs and self.transport is not None:
            # RFC 5626 §4.4.1: a double-CRLF ping is answered with a single-CRLF pong.
            self.transport.write(b"\r\n" * pongs)
        for frame in frames:
            self.owner.on_frame(frame, self.peer, "TCP")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle_handle is not None:
            self.idle_handle.cancel()
        if self.owner.tcp.get(self.peer) is self:
            del self.owner.tcp[self.peer]
        self.owner.stats.tcp_connections -= 1


class SipTransport:
    """UDP socket and TCP listener bound to the same host and port."""

    def __init__(
        self,
        on_frame: FrameHandler,
        *,
        max_size: int = MAX_MESSAGE_SIZE,
        idle_timeout: float = 300.0,
        on_error: ErrorHandler | None = None,
    ) -> None:
        """``on_error(destination, transport)``: frames to ``destination`` were lost because
        it could not be reached (a TCP connection refused or failed)."""
        self.on_frame = on_frame
        self.on_error = on_error
        self.max_size = max_size
        self.idle_timeout = idle_timeout
        self.stats = TransportStats()
        self.tcp: dict[Address, _TcpConnection] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._connecting: dict[Address, asyncio.Future[_TcpConnection]] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self.local: Address = ("", 0)

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(host, port))
        self._udp = udp
        bound = udp.get_extra_info("sockname")
        self.local = (str(bound[0]), int(bound[1]))
        self._server = await loop.create_server(
            lambda: _TcpConnection(self), host=host, port=self.local[1], reuse_address=True
        )

    def send(
        self, data: bytes, destination: Address, transport: str, fallback: Address | None = None
    ) -> None:
        """``fallback``: for a TCP response, where to connect if the connection keyed by
        ``destination`` (the request's source) has closed (RFC 3261 §18.2.2)."""
        if transport == "TCP":
            self._send_tcp(data, destination, fallback)
            return
        if self._udp is None:
            return
        self.stats.udp_out += 1
        try:
            self._udp.sendto(data, destination)
        except OSError:
            self.stats.send_errors += 1

    def _open(self, address: Address | None) -> _TcpConnection | None:
        conn = self.tcp.get(address) if address is not None else None
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            return conn
        return None

    def _send_tcp(self, data: bytes, destination: Address, fallback: Address | None) -> None:
        conn = self._open(destination) or self._open(fallback)
        if conn is not None and conn.transport is not None:
            self.stats.tcp_out += 1
            conn.transport.write(data)
            return
        # The loop keeps only a weak reference to a task: without ours a connect could be
        # collected half-way and its frame silently lost.
        send = self._connect_and_send(data, fallback or destination, destination)
        task = asyncio.get_running_loop().create_task(send)
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _connect_and_send(self, data: bytes, target: Address, destination: Address) -> None:
        """Connect to ``target``, then send; frames for a target already being connected to
        wait for that connection. A failed connect is reported once for ``target``, by the
        task that tried it: the transaction layer fails everything sending there in one go,
        so the frames that waited on it need no report of their own. A frame that stood for
        another ``destination`` (a response whose connection had closed) is reported for that
        one too, which is what its transaction is known by."""
        loop = asyncio.get_running_loop()
        pending = self._connecting.get(target)
        connecting = pending is None
        try:
            if pending is None:
                pending = loop.create_future()
                self._connecting[target] = pending
                try:
                    _, proto = await loop.create_connection(
                        lambda: _TcpConnection(self), host=target[0], port=target[1]
                    )
                    pending.set_result(proto)
                except OSError as exc:
                    pending.set_exception(exc)
                    pending.exception()  # mark retrieved: other waiters re-raise it themselves
                    raise
                finally:
                    self._connecting.pop(target, None)
            conn = await pending
        except OSError:
            self.stats.send_errors += 1
            if self.on_error is not None:
                if connecting:
                    self.on_error(target, "TCP")
                if destination != target:
                    self.on_error(destination, "TCP")
            return
        if conn.transport is not None:
            self.stats.tcp_out += 1
            conn.transport.write(data)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            self._server.close()
        for conn in list(self.tcp.values()):
            if conn.transport is not None:
                conn.transport.close()
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
