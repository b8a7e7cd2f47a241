"""Agent seats through the bridge with real softphones: digest-authenticated registration, then
calls from the carrier trunk routed by the dial plan to the seat group (issue: agent seats).

SIPp and baresip 1.0 answer the first digest challenge they get and know only MD5, so their
bridges offer MD5 alone. pyVoIP always answers with MD5 (RFC 2069 style, no qop); as both
default challenges (SHA-256, MD5) carry the same nonce, it registers with the default pair.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from integration.bridge_under_test import BridgeUnderTest, seat_group_plan
from peers.baresip import Baresip
from peers.ports import PortAllocator
from peers.pyvoip_seat import PyVoIPSeat
from peers.sipp import SippRun

BridgeFactory = Callable[..., Awaitable[BridgeUnderTest]]
BaresipFactory = Callable[..., Awaitable[Baresip]]
SeatFactory = Callable[..., Awaitable[PyVoIPSeat]]

SEAT = "agent1001"
PASSWORD = "seat-secret-1001"


def carrier_caller(
    tmp_path: Path, ports: PortAllocator, scenario: str = "uac_basic", **kwargs: Any
) -> SippRun:
    """A SIPp UAC calling 12345, not started yet: its port is the carrier trunk in the plan."""
    return SippRun(
        scenario,
        workdir=tmp_path,
        allocator=ports,
        name="carrier-caller",
        service="12345",
        calls=1,
        **kwargs,
    )


def first_request(sip_trace: str, method: str) -> dict[str, str]:
    """Headers of the first `method` request in a peer's SIP trace (one header per line)."""
    lines = sip_trace.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{method} sip:"))
    headers: dict[str, str] = {}
    for line in lines[start + 1 :]:
        name, colon, value = line.partition(":")
        if not colon:
            break
        headers.setdefault(name.strip(), value.strip())
    return headers


def responses_received(message_log: str) -> list[tuple[str, int]]:
    """(CSeq, status) of each response in SIPp's -trace_msg log, in order of arrival."""
    found = []
    for block in re.split(r"^-{20,}.*$", message_log, flags=re.MULTILINE):
        head = [line for line in block.splitlines() if line.strip()]
        if len(head) < 2 or not head[0].startswith("UDP message received"):
            continue
        status = re.match(r"SIP/2\.0 (\d{3}) ", head[1])
        cseq = re.search(r"^CSeq:\s*(.+?)\s*$", block, flags=re.MULTILINE)
        if status and cseq:
            found.append((cseq.group(1), int(status.group(1))))
    return found


@pytest.mark.peers("sipp", "baresip")
async def test_baresip_seat_registers_and_answers_a_call_to_12345(
    bridge: BridgeFactory, baresip: BaresipFactory, tmp_path: Path, ports: PortAllocator
) -> None:
    caller = carrier_caller(tmp_path, ports, duration_ms=1000, timeout=15)
    service = await bridge(
        carrier_port=caller.port,
        pbx_ports=[ports.port()],
        extra_plan=seat_group_plan([SEAT]),
        digest_algorithms=["MD5"],  # baresip 1.0 answers only an MD5-only challenge
    )
    phone = await baresip(user=SEAT, registrar=service.sip_address, password=PASSWORD)
    await phone.wait_event("REGISTER_OK", 5)
    [binding] = service.bindings(SEAT)
    assert binding.source[1] == phone.sip_port

    caller.remote_args(service.sip_address).start()
    established = await phone.wait_event("CALL_ESTABLISHED", 10)
    assert established["direction"] == "incoming"
    (await caller.wait()).assert_ok(successful=1)
    closed = await phone.wait_event("CALL_CLOSED", 5)
    assert closed["id"] == established["id"]
    await service.wait_idle()


@pytest.mark.peers("sipp", "pyVoIP")
async def test_pyvoip_seat_registers_and_answers_a_call_to_12345(
    bridge: BridgeFactory, pyvoip_seat: SeatFactory, tmp_path: Path, ports: PortAllocator
) -> None:
    caller = carrier_caller(tmp_path, ports, duration_ms=1000, timeout=15)
    service = await bridge(
        carrier_port=caller.port, pbx_ports=[ports.port()], extra_plan=seat_group_plan([SEAT])
    )
    seat = await pyvoip_seat(server_port=service.sip_port, username=SEAT, password=PASSWORD)
    [binding] = service.bindings(SEAT)
    assert binding.source[1] == seat.sip_port

    caller.remote_args(service.sip_address).start()
    answered = await seat.wait_for("call_answered", 10)
    (await caller.wait()).assert_ok(successful=1)
    ended = await seat.wait_for("call_ended", 5)
    assert ended.call_id == answered.call_id
    await service.wait_idle()


@pytest.mark.peers("sipp", "pyVoIP")
async def test_pyvoip_seat_hangs_up_and_the_caller_gets_bye(
    bridge: BridgeFactory, pyvoip_seat: SeatFactory, tmp_path: Path, ports: PortAllocator
) -> None:
    """pyVoIP's BYE reuses the Via (our sent-by, the INVITE's branch) of the INVITE it got."""
    caller = carrier_caller(tmp_path, ports, "uac_recv_bye", timeout=15)
    service = await bridge(
        carrier_port=caller.port, pbx_ports=[ports.port()], extra_plan=seat_group_plan([SEAT])
    )
    seat = await pyvoip_seat(server_port=service.sip_port, username=SEAT, password=PASSWORD)
    caller.remote_args(service.sip_address).start()
    answered = await seat.wait_for("call_answered", 10)
    await seat.hangup(answered.call_id)
    (await caller.wait()).assert_ok(successful=1)
    await service.wait_idle()
    assert service.engine is not None
    assert service.engine.core.counters.unknown_dialog == 0


@pytest.mark.peers("sipp")
@pytest.mark.parametrize(("password", "accepted"), [(PASSWORD, True), ("not-the-password", False)])
async def test_register_needs_the_seat_password(
    bridge: BridgeFactory,
    sipp: Callable[..., SippRun],
    ports: PortAllocator,
    password: str,
    accepted: bool,
) -> None:
    service = await bridge(
        carrier_port=ports.port(),
        pbx_ports=[ports.port()],
        digest_algorithms=["MD5"],  # SIPp answers the first challenge and knows only MD5
    )
    registering = sipp(
        "uac_register",
        remote=service.sip_address,
        service=SEAT,
        keys={"expires": "300"},
        extra_args=["-au", SEAT, "-ap", password],
        timeout=10,
    )
    result = await registering.wait()
    assert result.ok is accepted, result.report
    answers = responses_received(registering.message_file.read_text(encoding="utf-8"))
    if accepted:
        assert answers == [("1 REGISTER", 401), ("2 REGISTER", 200)], result.report
        [binding] = service.bindings(SEAT)
        assert binding.source == ("127.0.0.1", registering.port)
    else:
        # The REGISTER with the wrong credentials was challenged again, not accepted.
        assert answers[:2] == [("1 REGISTER", 401), ("2 REGISTER", 401)], result.report
        assert service.bindings(SEAT) == []


@pytest.mark.peers("baresip")
async def test_baresip_with_a_wrong_password_never_registers(
    bridge: BridgeFactory, baresip: BaresipFactory, ports: PortAllocator
) -> None:
    service = await bridge(
        carrier_port=ports.port(), pbx_ports=[ports.port()], digest_algorithms=["MD5"]
    )
    phone = await baresip(user=SEAT, registrar=service.sip_address, password="not-the-password")
    failed = await phone.wait_event("REGISTER_FAIL", 5)
    assert "401" in str(failed.get("param")), failed
    assert "REGISTER_OK" not in phone.event_types()
    assert service.bindings(SEAT) == []


@pytest.mark.peers("sipp", "baresip")
async def test_baresip_seat_registered_over_tcp_is_rung_over_tcp(
    bridge: BridgeFactory, baresip: BaresipFactory, tmp_path: Path, ports: PortAllocator
) -> None:
    caller = carrier_caller(tmp_path, ports, duration_ms=500, timeout=15)
    service = await bridge(
        carrier_port=caller.port,
        pbx_ports=[ports.port()],
        extra_plan=seat_group_plan([SEAT]),
        digest_algorithms=["MD5"],
    )
    phone = await baresip(
        user=SEAT, registrar=f"{service.sip_address};transport=tcp", password=PASSWORD
    )
    await phone.wait_event("REGISTER_OK", 5)
    [binding] = service.bindings(SEAT)
    assert binding.transport.upper() == "TCP"

    caller.remote_args(service.sip_address).start()  # the caller itself speaks UDP
    established = await phone.wait_event("CALL_ESTABLISHED", 10)
    (await caller.wait()).assert_ok(successful=1)
    closed = await phone.wait_event("CALL_CLOSED", 5)
    assert closed["id"] == established["id"]
    await service.wait_idle()
    # The seat must be told to stay on TCP: our Via, and the Contact it sends its in-dialog
    # requests to (it shares one port between UDP and TCP, so the call alone proves little).
    invite = first_request(phone.log_path.read_text(encoding="utf-8", errors="replace"), "INVITE")
    assert invite["Contact"].endswith(";transport=tcp>"), invite
    assert invite["Via"].startswith("SIP/2.0/TCP "), invite


@pytest.mark.peers("sipp", "pyVoIP")
async def test_caller_cancels_while_the_pyvoip_seat_rings(
    bridge: BridgeFactory, pyvoip_seat: SeatFactory, tmp_path: Path, ports: PortAllocator
) -> None:
    """pyVoIP answers CANCEL with 200 but never sends 487 for the INVITE it was ringing for."""
    caller = carrier_caller(tmp_path, ports, "uac_cancel", duration_ms=300, timeout=15)
    service = await bridge(
        carrier_port=caller.port,
        pbx_ports=[ports.port()],
        extra_plan=seat_group_plan([SEAT]),
        t1_ms=100,
    )
    seat = await pyvoip_seat(
        server_port=service.sip_port, username=SEAT, password=PASSWORD, answer=False
    )
    caller.remote_args(service.sip_address).start()
    (await caller.wait()).assert_ok(successful=1)
    cancelled = await seat.wait_for("call_cancelled", 5)
    # Nothing answers the INVITE now: the bridge ends it after 64*T1 (RFC 3261 §9.1).
    await service.wait_idle(64 * 0.1 + 2)
    assert cancelled.call_id in seat.phone.calls, "the seat, not the bridge, ended the INVITE"


@pytest.mark.peers("sipp", "pyVoIP")
async def test_seat_answering_after_the_cancel_is_acked_and_hung_up(
    bridge: BridgeFactory, pyvoip_seat: SeatFactory, tmp_path: Path, ports: PortAllocator
) -> None:
    """Unpatched pyVoIP still answers a call it got a CANCEL for (§9.1's race, made certain):
    the bridge must ACK that 200 and send BYE, not leave the seat in a call nobody is on."""
    caller = carrier_caller(tmp_path, ports, "uac_cancel", duration_ms=300, timeout=15)
    service = await bridge(
        carrier_port=caller.port, pbx_ports=[ports.port()], extra_plan=seat_group_plan([SEAT])
    )
    seat = await pyvoip_seat(
        server_port=service.sip_port, username=SEAT, password=PASSWORD, answer=False
    )
    caller.remote_args(service.sip_address).start()
    (await caller.wait()).assert_ok(successful=1)
    cancelled = await seat.wait_for("call_cancelled", 5)
    await asyncio.to_thread(seat.answer_call, seat.phone.calls[cancelled.call_id])
    await seat.wait_for("call_answered", 5)
    ended = await seat.wait_for("call_ended", 5)
    assert ended.call_id == cancelled.call_id
    await service.wait_idle(5)


@pytest.mark.peers("sipp", "baresip", "pyVoIP")
async def test_seat_group_fails_over_from_a_declining_seat_to_the_next(
    bridge: BridgeFactory,
    baresip: BaresipFactory,
    pyvoip_seat: SeatFactory,
    tmp_path: Path,
    ports: PortAllocator,
) -> None:
    second = "agent1002"
    caller = carrier_caller(tmp_path, ports, duration_ms=500, timeout=15)
    service = await bridge(
        carrier_port=caller.port,
        pbx_ports=[ports.port()],
        extra_plan=seat_group_plan([SEAT, second]),
        seat_credentials={SEAT: PASSWORD, second: "seat-secret-1002"},
        digest_algorithms=["MD5"],
    )
    phone = await baresip(
        user=SEAT, registrar=service.sip_address, password=PASSWORD, answermode="manual"
    )
    await phone.wait_event("REGISTER_OK", 5)
    seat = await pyvoip_seat(
        server_port=service.sip_port, username=second, password="seat-secret-1002"
    )

    caller.remote_args(service.sip_address).start()
    await phone.wait_event("CALL_INCOMING", 5)
    await phone.hangup()  # declines the ringing call
    answered = await seat.wait_for("call_answered", 10)
    (await caller.wait()).assert_ok(successful=1)
    ended = await seat.wait_for("call_ended", 5)
    assert ended.call_id == answered.call_id
    assert "CALL_ESTABLISHED" not in phone.event_types()
    await service.wait_idle()
