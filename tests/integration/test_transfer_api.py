"""One-click transfer through the HTTP API with real SIPp peers (issue: transfer with ticket).

SIPp caller → bridge → SIPp "agent"; the agent's desktop asks for a transfer with a ticket; the
bridge rings a SIPp target that answers only if every ticket header is present, releases the
agent, and the ticket's link opens the ticket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from integration.bridge_under_test import (
    ADMIN_HEADERS,
    BridgeUnderTest,
    seat_group_plan,
    sipp_caller,
)
from integration.test_seats import first_request
from peers.baresip import Baresip
from peers.ports import PortAllocator
from peers.sipp import SippRun

pytestmark = pytest.mark.peers("sipp")

TARGET_PLATFORM = """
[[trunks]]
name = "target"
destinations = ["sip:12313@127.0.0.1:{port}"]
[[platforms]]
key = "12313"
label = "烟草专线"
trunk = "target"
"""

TICKET = {
    "origin": "110",
    "category": "criminal",
    "caller_number": "13800138000",
    "summary": "邻居家中传出呼救声",
    "location": "人民路 12 号",
    "urgent": True,
    "sending_seat": "agent2001",
}


async def setup(
    bridge: Callable[..., Awaitable[BridgeUnderTest]],
    sipp: Callable[..., SippRun],
    tmp_path: Path,
    ports: PortAllocator,
    target_scenario: str,
) -> tuple[BridgeUnderTest, SippRun, SippRun, SippRun, str]:
    agent = sipp("uas_basic", name="agent", timeout=20)
    target = sipp(target_scenario, name="target", timeout=20)
    caller = sipp_caller(tmp_path, ports, duration_ms=6000, timeout=20)
    service = await bridge(
        carrier_port=caller.port,
        pbx_ports=[agent.port],
        extra_plan=TARGET_PLATFORM.format(port=target.port),
    )
    calls = service.watch_calls()
    await agent.started()
    await target.started()
    caller.remote_args(service.sip_address).start()
    call_id = await calls.answered()
    return service, caller, agent, target, call_id


async def post_transfer(service: BridgeUnderTest, call_id: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{service.http_url}/api/v1/calls/{call_id}/transfer",
            json={"target": "12313", "mode": "blind", "ticket": TICKET},
            headers=ADMIN_HEADERS,
        ) as resp,
    ):
        assert resp.status == 202, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def test_api_transfer_carries_the_ticket_and_releases_the_agent(
    bridge: Callable[..., Awaitable[BridgeUnderTest]],
    sipp: Callable[..., SippRun],
    tmp_path: Path,
    ports: PortAllocator,
) -> None:
    service, caller, agent, target, call_id = await setup(
        bridge, sipp, tmp_path, ports, "uas_ticket"
    )
    try:
        reply = await post_transfer(service, call_id)
        ticket_id = reply["ticket"]["id"]
        (await agent.wait()).assert_ok(successful=1)  # the bridge hung up the agent
        (await caller.wait()).assert_ok(successful=1)  # the caller talked on, then hung up
        (await target.wait()).assert_ok(successful=1)
        seen = target.logged_headers()[1]
        assert seen["X-Ticket-Id"] == ticket_id
        assert seen["User-to-User"] == f"{ticket_id.encode().hex()};encoding=hex"
        assert seen["Priority"] == "emergency"
        url = seen["Call-Info"].split(">", 1)[0].lstrip("<")
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as resp:
                assert resp.status == 200
                fetched = await resp.json()
            assert fetched["ticket"]["id"] == ticket_id
            assert fetched["ticket"]["location"] == TICKET["location"]
            forged = url[:-1] + ("A" if url[-1] != "A" else "B")
            async with session.get(forged) as resp:
                assert resp.status == 401
        assert service.service is not None
        assert service.service.store is not None
        kinds = [e["kind"] for e in fetched["events"]]
        assert kinds[:2] == ["created", "transfer_requested"]
        assert "transferred" in kinds
    finally:
        caller.kill()


async def test_busy_target_leaves_the_caller_with_the_agent(
    bridge: Callable[..., Awaitable[BridgeUnderTest]],
    sipp: Callable[..., SippRun],
    tmp_path: Path,
    ports: PortAllocator,
) -> None:
    service, caller, agent, target, call_id = await setup(bridge, sipp, tmp_path, ports, "uas_busy")
    try:
        reply = await post_transfer(service, call_id)
        ticket_id = reply["ticket"]["id"]
        (await target.wait()).assert_ok(successful=1)
        # The caller stays with the agent and hangs up normally: both scenarios complete.
        (await caller.wait()).assert_ok(successful=1)
        (await agent.wait()).assert_ok(successful=1)
        await service.wait_idle()
        assert service.service is not None
        assert service.service.store is not None
        ticket = await service.service.store.get(ticket_id)
        assert ticket is not None
        assert ticket.state.value == "failed"
        assert ticket.failure_reason == "busy"
    finally:
        caller.kill()


@pytest.mark.peers("sipp", "baresip")
async def test_110_hands_a_non_police_request_to_a_12345_seat(
    bridge: Callable[..., Awaitable[BridgeUnderTest]],
    sipp: Callable[..., SippRun],
    baresip: Callable[..., Awaitable[Baresip]],
    tmp_path: Path,
    ports: PortAllocator,
) -> None:
    """110 → 12345: the 110 desk (SIPp) transfers by API; the 12345 seat (baresip) rings with
    the ticket on its INVITE and answers."""
    agent = sipp("uas_basic", name="desk-110", timeout=20)
    caller = sipp_caller(tmp_path, ports, duration_ms=6000, timeout=20)
    service = await bridge(
        carrier_port=caller.port,
        pbx_ports=[agent.port],
        extra_plan=seat_group_plan(["agent1001"]),
        digest_algorithms=["MD5"],
    )
    seat = await baresip(
        user="agent1001", registrar=service.sip_address, password="seat-secret-1001"
    )
    await seat.wait_event("REGISTER_OK", 5)
    calls = service.watch_calls()
    await agent.started()
    caller.remote_args(service.sip_address).start()
    try:
        call_id = await calls.answered()
        ticket = {**TICKET, "category": "market", "urgent": False, "summary": "电梯困人已脱困"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{service.http_url}/api/v1/calls/{call_id}/transfer",
                json={"target": "12345", "mode": "blind", "ticket": ticket},
                headers=ADMIN_HEADERS,
            ) as resp,
        ):
            assert resp.status == 202, await resp.text()
            ticket_id = (await resp.json())["ticket"]["id"]
        await seat.wait_event("CALL_ESTABLISHED", 10)
        (await agent.wait()).assert_ok(successful=1)
        (await caller.wait()).assert_ok(successful=1)
        invite = first_request(
            seat.log_path.read_text(encoding="utf-8", errors="replace"), "INVITE"
        )
        assert invite["X-Ticket-Id"] == ticket_id
        assert "Priority" not in invite
    finally:
        caller.kill()


async def test_a_restart_mid_transfer_keeps_the_ticket_and_its_events(
    bridge: Callable[..., Awaitable[BridgeUnderTest]],
    sipp: Callable[..., SippRun],
    tmp_path: Path,
    ports: PortAllocator,
) -> None:
    service, caller, _agent, target, call_id = await setup(
        bridge, sipp, tmp_path, ports, "uas_noanswer"
    )
    try:
        assert service.service is not None
        live = service.service.hub.subscribe(everything=True)
        reply = await post_transfer(service, call_id)
        ticket_id = reply["ticket"]["id"]

        async def ringing() -> None:
            while True:
                message = (await live.get()).event
                if message.get("type") == "ticket" and message.get("kind") == "ringing":
                    return

        await asyncio.wait_for(ringing(), 10)  # the target's 180 is stored on the ticket
        await service.stop()  # the process goes away mid-transfer
        await service.start()  # and comes back on the same storage
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{service.http_url}/api/v1/tickets/{ticket_id}", headers=ADMIN_HEADERS
            ) as resp,
        ):
            assert resp.status == 200
            body = await resp.json()
        kinds = [e["kind"] for e in body["events"]]
        # Stopping the bridge ended the call, which the ticket records as a failed transfer.
        assert kinds[:3] == ["created", "transfer_requested", "ringing"]
        assert kinds[3:] in ([], ["failed"])
        assert body["ticket"]["summary"] == TICKET["summary"]
    finally:
        caller.kill()
        target.kill()
