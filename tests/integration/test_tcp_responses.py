"""TCP responses through real loopback sockets (RFC 3261 §18.2.2): over the connection the
request came on while it is open, else to the Via's ``received`` address and sent-by port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable

from peers.process import wait_until

from bridge.transport import Address, SipTransport

REQUEST = (
    b"OPTIONS sip:bridge@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5099;branch=z9hG4bK1\r\n"
    b"Call-ID: tcp-fallback\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)
WITHIN = 3.0


async def until(condition: Callable[[], bool], within: float = WITHIN) -> None:
    await wait_until(condition, within=within, what="the phone's side saw it")


class Phone:
    """A phone's TCP listener (its sent-by port) and the connection it sent a request on."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[bytes] = asyncio.Queue()
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        data = await reader.read(65535)
        await self.accepted.put(data)
        writer.close()

    async def listen(self) -> Address:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[:2]  # type: ignore[no-any-return]


async def request_then_hang_up(
    transport: SipTransport, frames: list[Address]
) -> tuple[Address, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(*transport.local)
    writer.write(REQUEST)
    await writer.drain()
    await until(lambda: bool(frames))
    return frames[0], reader, writer


@contextlib.asynccontextmanager
async def bridge_side() -> AsyncIterator[
    tuple[SipTransport, list[Address], list[tuple[Address, str]]]
]:
    """The bridge's transport on 127.0.0.1, with the sources of the frames it received and
    the destinations it reported unreachable."""
    frames: list[Address] = []
    errors: list[tuple[Address, str]] = []
    transport = SipTransport(
        lambda _data, source, _t: frames.append(source),
        on_error=lambda where, t: errors.append((where, t)),
    )
    await transport.start("127.0.0.1", 0)
    try:
        yield transport, frames, errors
    finally:
        await transport.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_response_uses_the_open_connection_then_the_sent_by_port_once_it_closed() -> None:
    phone = Phone()
    try:
        async with bridge_side() as (transport, frames, errors):
            sent_by = await phone.listen()
            source, reader, writer = await request_then_hang_up(transport, frames)
            transport.send(b"SIP/2.0 100 Trying\r\n\r\n", source, "TCP", fallback=sent_by)
            trying = await asyncio.wait_for(reader.readexactly(22), WITHIN)
            assert trying == b"SIP/2.0 100 Trying\r\n\r\n"
            assert phone.connections == 0

            writer.close()
            await until(lambda: source not in transport.tcp)
            transport.send(b"SIP/2.0 200 OK\r\n\r\n", source, "TCP", fallback=sent_by)
            assert await asyncio.wait_for(phone.accepted.get(), WITHIN) == b"SIP/2.0 200 OK\r\n\r\n"
            assert phone.connections == 1
            assert errors == []
    finally:
        if phone.server is not None:
            phone.server.close()


async def test_a_refused_fallback_is_reported_for_the_connection_its_transaction_knows() -> None:
    async with bridge_side() as (transport, frames, errors):
        source, _reader, writer = await request_then_hang_up(transport, frames)
        writer.close()
        await until(lambda: source not in transport.tcp)
        dead = ("127.0.0.1", closed_port())
        transport.send(b"SIP/2.0 200 OK\r\n\r\n", source, "TCP", fallback=dead)
        await until(lambda: len(errors) == 2)
        assert sorted(errors) == sorted([(dead, "TCP"), (source, "TCP")])
