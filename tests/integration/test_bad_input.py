"""Bad input from the network never stops the service (issue: SIP B2BUA, "Bad input")."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

from integration.bridge_under_test import BridgeUnderTest
from peers.ports import PortAllocator

OPTIONS = (
    "OPTIONS sip:bridge@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bK{branch}\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:bridge@127.0.0.1>\r\n"
    "Call-ID: probe-{branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)
TORTURE = Path(__file__).parent.parent / "data" / "rfc4475"


async def udp_exchange(sock: socket.socket, data: bytes, to: tuple[str, int]) -> bytes | None:
    loop = asyncio.get_running_loop()
    await loop.sock_sendto(sock, data, to)
    try:
        return await asyncio.wait_for(loop.sock_recv(sock, 65535), 2.0)
    except TimeoutError:
        return None


async def test_garbage_torture_and_oversize_then_still_serving(
    bridge: Callable[..., Awaitable[BridgeUnderTest]], ports: PortAllocator
) -> None:
    service = await bridge(carrier_port=ports.port(), pbx_ports=[ports.port()])
    target = ("127.0.0.1", service.sip_port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    port = sock.getsockname()[1]
    loop = asyncio.get_running_loop()
    try:
        for junk in (b"\x00" * 10, b"hello world", b"SIP/2.0 200 OK\r\n\r\n", b"\xff" * 9000):
            await loop.sock_sendto(sock, junk, target)
        for path in sorted(TORTURE.glob("*.invalid")):
            await loop.sock_sendto(sock, path.read_bytes(), target)
        await loop.sock_sendto(sock, b"INVITE " + b"x" * 65000, target)  # the largest datagram
        # Drain whatever the torture messages drew (400s and the like), then probe.
        while True:
            try:
                await asyncio.wait_for(loop.sock_recv(sock, 65535), 0.5)
            except TimeoutError:
                break
        reply = await udp_exchange(
            sock, OPTIONS.format(transport="UDP", port=port, branch="after").encode(), target
        )
        assert reply is not None
        assert reply.startswith(b"SIP/2.0 200 ")
        assert service.engine is not None
        assert service.engine.core.counters.parse_errors >= 4
    finally:
        sock.close()


async def test_stalled_tcp_peer_does_not_block_others(
    bridge: Callable[..., Awaitable[BridgeUnderTest]], ports: PortAllocator
) -> None:
    service = await bridge(carrier_port=ports.port(), pbx_ports=[ports.port()])
    stalled_reader, stalled = await asyncio.open_connection("127.0.0.1", service.sip_port)
    stalled.write(OPTIONS.format(transport="TCP", port=1, branch="half").encode()[:60])
    await stalled.drain()
    reader, writer = await asyncio.open_connection("127.0.0.1", service.sip_port)
    local_port = writer.get_extra_info("sockname")[1]
    try:
        writer.write(OPTIONS.format(transport="TCP", port=local_port, branch="whole").encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.startswith(b"SIP/2.0 200 ")
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.write(b"\r\n\r\n")  # RFC 5626 keep-alive ping
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
        # A message over the size limit on a stream closes that connection only.
        stalled.write(b"x" * 70000)
        await stalled.drain()
        assert await asyncio.wait_for(stalled_reader.read(), 5) == b""
    finally:
        writer.close()
        stalled.close()
