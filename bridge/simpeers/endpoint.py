"""One UDP socket driving the project's own sans-IO SIP stack, for a simulated peer.

The same pattern as the bridge's engine, at the size of one phone: every datagram is parsed
and fed to a :class:`~bridge.sip.transaction.TransactionLayer` with the loop's time, whatever
the layer queued is sent at once, and one timer stays armed at the layer's next deadline. So
the simulated peers retransmit, absorb retransmissions and ACK 2xx responses exactly as RFC 3261
§17 says, through code the bridge itself runs, and every message crosses a real socket.

A request the peer sends returns a future for its final response; provisional responses go to
an optional callback. A timeout or transport error resolves the future with the 408 or 503
the TU must act on (§8.1.3.1), so callers only ever see responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable

from bridge.sip import transaction as tx
from bridge.sip.errors import RemoteProtocolError
from bridge.sip.message import Message, Request, Response, make_response, parse_message

Address = tuple[str, int]
RequestHandler = Callable[[Request, Address, str | None], None]
"""(request, source, server key): the key is None for an ACK, which has no transaction."""
ProvisionalHandler = Callable[[Response], None]


def new_tag() -> str:
    return secrets.token_hex(4)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(8)}@{host}"


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.endpoint._on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        self.endpoint.send_errors += 1


class SipEndpoint:
    """A SIP user agent's transport and transaction layer on one UDP address."""

    def __init__(self, host: str = "127.0.0.1", *, t1: float = 0.5) -> None:
        self.host = host
        self.txl = tx.TransactionLayer(t1=t1)
        self.on_request: RequestHandler = self._refuse
        self.on_stray_2xx: Callable[[Response], None] = lambda response: None
        self.send_errors = 0
        self.parse_errors = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pending: dict[str, tuple[asyncio.Future[Response], ProvisionalHandler | None]] = {}
        self.port = 0

    async def start(self, port: int) -> None:
        """Bind ``port`` on our host (0: any free port); OSError when it is taken."""
        self._loop = asyncio.get_running_loop()
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Socket(self), local_addr=(self.host, port)
        )
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])

    @property
    def local(self) -> Address:
        return self.host, self.port

    def via(self) -> str:
        """A top Via for a new request of ours, with a fresh branch (§8.1.1.7)."""
        return f"SIP/2.0/UDP {self.host}:{self.port};branch={tx.new_branch()};rport"

    def contact(self, user: str) -> str:
        return f"<sip:{user}@{self.host}:{self.port}>"

    # -- sending -----------------------------------------------------------------------------

    def send_request(
        self,
        request: Request,
        destination: Address,
        on_provisional: ProvisionalHandler | None = None,
    ) -> tuple[str, asyncio.Future[Response]]:
        """Start a client transaction; returns its key and a future for the final response."""
        loop = self._running_loop()
        future: asyncio.Future[Response] = loop.create_future()
        key = self.txl.send_request(request, destination, "UDP", loop.time())
        self._pending[key] = (future, on_provisional)
        self._flush()
        return key, future

    def respond(self, server_key: str, response: Response) -> None:
        self.txl.send_response(server_key, response, self._running_loop().time())
        self._flush()

    def reply(
        self, server_key: str, request: Request, status: int, *, to_tag: str | None = None
    ) -> None:
        self.respond(server_key, make_response(request, status, to_tag=to_tag or new_tag()))

    def send_ack(self, client_key: str | None, ack: Request, destination: Address) -> None:
        self.txl.send_ack(client_key, ack, destination, "UDP")
        self._flush()

    def send_stateless(self, message: Message, destination: Address) -> None:
        self.txl.send_stateless(message, destination, "UDP")
        self._flush()

    # -- receiving ---------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, source: Address) -> None:
        try:
            message = parse_message(data)
            events = self.txl.receive(message, source, "UDP", self._running_loop().time())
        except RemoteProtocolError:
            self.parse_errors += 1
            return
        for event in events:
            self._dispatch(event)
        self._flush()

    def _dispatch(self, event: tx.Event) -> None:
        if isinstance(event, tx.RequestReceived):
            self.on_request(event.request, event.source, event.server_key)
        elif isinstance(event, tx.ResponseReceived):
            if event.client_key is None:
                self.on_stray_2xx(event.response)
            else:
                self._settle(event.client_key, event.response)
        elif isinstance(event, tx.ClientTimeout):
            self._settle(event.client_key, make_response(event.request, 408))
        elif isinstance(event, tx.ClientTransportError):
            self._settle(event.client_key, make_response(event.request, 503))

    def _settle(self, key: str, response: Response) -> None:
        pending = self._pending.get(key)
        if pending is None:
            return
        future, on_provisional = pending
        if response.status < 200:
            if on_provisional is not None:
                on_provisional(response)
            return
        del self._pending[key]
        if not future.done():
            future.set_result(response)

    def _refuse(self, request: Request, source: Address, server_key: str | None) -> None:
        if server_key is not None:
            self.reply(server_key, request, 501)

    # -- time and output ---------------------------------------------------------------------

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("endpoint not started")
        return self._loop

    def _flush(self) -> None:
        for out in self.txl.take_outgoing():
            if self._transport is not None and not self._transport.is_closing():
                self._transport.sendto(out.data, out.destination)
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.txl.next_deadline()
        if deadline is None or (self._timer_at is not None and self._timer_at <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._running_loop().call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        for event in self.txl.handle_timers(self._running_loop().time()):
            self._dispatch(event)
        self._flush()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()
        for future, _ in self._pending.values():
            with contextlib.suppress(asyncio.InvalidStateError):
                future.cancel()
        self._pending.clear()
