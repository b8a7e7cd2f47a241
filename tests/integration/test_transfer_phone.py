"""Transfers started from the agent's own phone (baresip): REFER and the DTMF transfer key.

SIPp caller → bridge → baresip seat (12345 desk); the seat hands the caller to a SIPp "110 PBX"
that answers only when every ticket header is present.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from integration.bridge_under_test import BridgeUnderTest, seat_group_plan
from peers.baresip import Baresip
from peers.ports import PortAllocator
from peers.sipp import SippRun

pytestmark = pytest.mark.peers("sipp", "baresip")

SEAT = "agent1001"
PASSWORD = "seat-secret-1001"
FEATURES = """
[features]
digit_timeout = 3.0
[[features.codes]]
code = "*1"
action = "transfer"
to = "110"
"""


async def call_reaches_seat(
    bridge: Callable[..., Awaitable[BridgeUnderTest]],
    baresip: Callable[..., Awaitable[Baresip]],
    sipp: Callable[..., SippRun],
    tmp_path: Path,
    ports: PortAllocator,
) -> tuple[BridgeUnderTest, SippRun, SippRun, Baresip]:
    pbx = sipp("uas_ticket", name="pbx-110", timeout=25)
    caller = SippRun(
        "uac_basic",
        workdir=tmp_path,
        allocator=ports,
        name="carrier-caller",
        service="12345",
        duration_ms=8000,
        timeout=25,
    )
    service = await bridge(
        carrier_port=caller.port,
        pbx_ports=[pbx.port],
        extra_plan=seat_group_plan([SEAT]) + FEATURES,
        digest_algorithms=["MD5"],
    )
    phone = await baresip(user=SEAT, registrar=service.sip_address, password=PASSWORD)
    await phone.wait_event("REGISTER_OK", 5)
    await pbx.started()
    caller.remote_args(service.sip_address).start()
    await phone.wait_event("CALL_ESTABLISHED", 10)
    return service, caller, pbx, phone


async def assert_transferred(service: BridgeUnderTest, caller: SippRun, pbx: SippRun) -> None:
    (await pbx.wait()).assert_ok(successful=1)
    (await caller.wait()).assert_ok(successful=1)
    seen = pbx.logged_headers()[1]
    assert seen["X-Ticket-Id"].startswith("T")
    assert "purpose=ticket" in seen["Call-Info"]
    assert SEAT in seen["Referred-By"]
    assert service.service is not None
    assert service.service.store is not None
    ticket = await service.service.store.get(seen["X-Ticket-Id"])
    assert ticket is not None
    assert ticket.state.value == "transferred"
    assert ticket.sending_seat == SEAT
    assert ticket.origin == "12345", "the ticket belongs to the desk that handed the caller over"
    await service.wait_idle()


async def test_refer_from_the_seat_hands_the_caller_to_110(
    bridge: Callable[..., Awaitable[BridgeUnderTest]],
    baresip: Callable[..., Awaitable[Baresip]],
    sipp: Callable[..., SippRun],
    tmp_path: Path,
    ports: PortAllocator,
) -> None:
    service, caller, pbx, phone = await call_reaches_seat(bridge, baresip, sipp, tmp_path, ports)
    try:
        await phone.transfer(f"sip:110@{service.sip_address}")
        await phone.wait_event("CALL_CLOSED", 10)  # baresip leaves after NOTIFY 200
        await assert_transferred(service, caller, pbx)
    finally:
        caller.kill()


async def test_transfer_key_hands_the_caller_to_110(
    bridge: Callable[..., Awaitable[BridgeUnderTest]],
    baresip: Callable[..., Awaitable[Baresip]],
    sipp: Callable[..., SippRun],
    tmp_path: Path,
    ports: PortAllocator,
) -> None:
    service, caller, pbx, phone = await call_reaches_seat(bridge, baresip, sipp, tmp_path, ports)
    try:
        await phone.sndcode("*1")
        await phone.wait_event("CALL_CLOSED", 10)  # the bridge releases the agent
        await assert_transferred(service, caller, pbx)
    finally:
        caller.kill()
