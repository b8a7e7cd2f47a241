"""Screen pop: the receiving platform's desk sees the ticket on the events WebSocket as the
transferred call rings, and the sending seat follows the transfer's progress.

SIPp caller → bridge → SIPp "agent" (110 desk); the agent's desktop transfers the call through
the API to a SIPp target platform (12313) that rings (180) and then answers when the ticket
headers are present. Each desk subscribes with its own token, as a desktop does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from integration.bridge_under_test import BridgeUnderTest, sipp_caller
from peers.ports import PortAllocator
from peers.sipp import SippRun

from bridge.simpeers.desk import ScreenPop

pytestmark = pytest.mark.peers("sipp")

POP_WITHIN = 5.0
"""Seconds from the transfer request to the screen pop: a desk must see it while it rings."""

SENDING_SEAT = "agent2001"
TARGET_PEER = {"token": "peer-12313-token-0123456", "name": "12313", "role": "peer"}
BYSTANDER_PEER = {"token": "peer-12345-token-0123456", "name": "12345", "role": "peer"}
SEAT_AGENT = {
    "token": "agent-2001-token-0123456",
    "name": SENDING_SEAT,
    "role": "agent",
    "seat": SENDING_SEAT,
    "platform": "110",
}

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
    "summary": "有人在小区门口兜售假烟",
    "location": "解放路 3 号",
    "urgent": True,
    "sending_seat": SENDING_SEAT,
}


async def post_transfer(service: BridgeUnderTest, call_id: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{service.http_url}/api/v1/calls/{call_id}/transfer",
            json={"target": "12313", "mode": "blind", "ticket": TICKET},
            headers={"Authorization": f"Bearer {SEAT_AGENT['token']}"},
        ) as resp,
    ):
        assert resp.status == 202, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def test_the_target_desk_sees_the_ticket_while_it_rings_and_the_seat_follows(
    bridge: Callable[..., Awaitable[BridgeUnderTest]],
    sipp: Callable[..., SippRun],
    tmp_path: Path,
    ports: PortAllocator,
) -> None:
    agent = sipp("uas_basic", name="agent", timeout=20)
    target = sipp("uas_ticket", name="target", timeout=20)
    caller = sipp_caller(tmp_path, ports, duration_ms=5000, timeout=20)
    service = await bridge(
        carrier_port=caller.port,
        pbx_ports=[agent.port],
        extra_plan=TARGET_PLATFORM.format(port=target.port),
        tokens=[TARGET_PEER, BYSTANDER_PEER, SEAT_AGENT],
    )
    calls = service.watch_calls()
    pops: list[ScreenPop] = []
    try:
        # Each desk subscribes with its own token; the bridge confirms each filter first.
        target_desk = await ScreenPop.open(
            service.http_url, TARGET_PEER["token"], platform="12313", within=POP_WITHIN
        )
        pops.append(target_desk)
        assert target_desk.subscribed["platforms"] == ["12313"]
        seat_desk = await ScreenPop.open(
            service.http_url, SEAT_AGENT["token"], seat=SENDING_SEAT, within=POP_WITHIN
        )
        pops.append(seat_desk)
        assert seat_desk.subscribed["seats"] == [SENDING_SEAT]
        bystander = await ScreenPop.open(
            service.http_url, BYSTANDER_PEER["token"], platform="12345", within=POP_WITHIN
        )
        pops.append(bystander)

        await agent.started()
        await target.started()
        caller.remote_args(service.sip_address).start()
        call_id = await calls.answered()

        reply = await post_transfer(service, call_id)
        ticket_id = reply["ticket"]["id"]
        # What goes wrong with the caller after the transfer (a refused resume) reaches the
        # ticket's sending seat as well.
        assert service.engine is not None
        assert service.engine.core.calls[call_id].agent_seat == SENDING_SEAT

        ringing = await target_desk.wait_for("ringing", ticket_id, POP_WITHIN)
        assert ringing is not None, target_desk.tickets
        popped = ringing["ticket"]
        assert popped["state"] == "ringing"
        assert popped["destination"] == "12313"
        assert popped["summary"] == TICKET["summary"]
        assert popped["location"] == TICKET["location"]
        assert popped["urgent"] is True
        assert ringing["event"]["kind"] == "ringing"

        # The sending seat follows every step of its transfer, in order.
        done = await seat_desk.wait_for("transferred", ticket_id, POP_WITHIN)
        assert done is not None, seat_desk.tickets
        kinds = seat_desk.kinds(ticket_id)
        assert kinds.index("transfer_requested") < kinds.index("ringing")
        assert kinds.index("ringing") < kinds.index("transferred")
        assert await target_desk.wait_for("transferred", ticket_id, POP_WITHIN) is not None

        # The desk that rang is the one the INVITE reached with this ticket.
        (await target.wait()).assert_ok(successful=1)
        assert target.logged_headers()[1]["X-Ticket-Id"] == ticket_id
        (await agent.wait()).assert_ok(successful=1)
        (await caller.wait()).assert_ok(successful=1)
        # A platform the ticket does not concern saw none of it.
        assert bystander.kinds(ticket_id) == []
    finally:
        caller.kill()
        for pop in pops:
            await pop.close()


async def test_a_peer_cannot_follow_another_platform(
    bridge: Callable[..., Awaitable[BridgeUnderTest]],
    ports: PortAllocator,
) -> None:
    service = await bridge(
        carrier_port=ports.port(), pbx_ports=[ports.port()], tokens=[BYSTANDER_PEER]
    )
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await ScreenPop.open(
            service.http_url, BYSTANDER_PEER["token"], platform="12313", within=POP_WITHIN
        )
    assert refused.value.status == 403
