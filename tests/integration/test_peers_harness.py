"""The peer harness itself, peer to peer with no bridge in between.

Every custom SIPp scenario meets its counterpart here, so when a bridge test using one of them
fails, the scenario is known to be good and the bridge is what to look at. baresip and pyVoIP
are driven against SIPp the way bridge tests will drive them.
"""

from __future__ import annotations

import random
import shutil
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from peers import availability
from peers.baresip import Baresip
from peers.ports import HOST, PortAllocator, is_bound
from peers.pyvoip_seat import PyVoIPSeat
from peers.sipp import SippRun

SippFactory = Callable[..., SippRun]
BaresipFactory = Callable[..., Awaitable[Baresip]]
SeatFactory = Callable[..., Awaitable[PyVoIPSeat]]

TICKET_KEYS = {
    "ticket_id": "T-20240611-0042",
    "ticket_url": "http://127.0.0.1:8080/api/v1/tickets/T-20240611-0042?token=abc.def",
    "ticket_uui": "542d32303234303631312d30303432",
    "referred_by": "sip:agent7@127.0.0.1",
    "priority": "emergency",
}


async def run_pair(
    sipp: SippFactory,
    uas_scenario: str,
    uac_scenario: str,
    *,
    calls: int = 2,
    uas: dict[str, Any] | None = None,
    uac: dict[str, Any] | None = None,
) -> tuple[SippRun, Any, SippRun, Any]:
    server = sipp(uas_scenario, calls=calls, timeout=10, **(uas or {}))
    await server.started()
    client = sipp(
        uac_scenario, remote=server.address, calls=calls, timeout=10, duration_ms=50, **(uac or {})
    )
    client_result = await client.wait()
    server_result = await server.wait()
    return server, server_result, client, client_result


# -- harness plumbing (no peers needed) -----------------------------------------------------


def test_allocated_ports_are_distinct_and_bindable_on_udp_and_tcp() -> None:
    allocator = PortAllocator(seed=1)
    singles = allocator.ports(20)
    media = allocator.block(4, align=2)
    issued = [*singles, *range(media, media + 4)]
    assert len(set(issued)) == len(issued)
    assert media % 2 == 0
    for port in issued:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(socket.AF_INET, kind) as sock:
                sock.bind((HOST, port))


def test_a_small_fragmented_range_still_yields_its_last_block_and_takes_back_released_ones() -> (
    None
):
    low = 24000 + 64 * random.randrange(100)
    allocator = PortAllocator(low, low + 64, seed=2)
    firsts = {allocator.block(8, align=8) for _ in range(8)}
    assert firsts == set(range(low, low + 64, 8))
    with pytest.raises(RuntimeError, match="no block of 8 free ports"):
        allocator.block(8, align=8)
    allocator.release(low + 16, 8)
    assert allocator.block(8, align=8) == low + 16


def test_many_single_ports_leave_room_for_large_blocks() -> None:
    """A full suite hands out thousands of single ports and never takes them back; a media
    worker bridge still needs 256 ports in a row."""
    low = 24000 + 512 * random.randrange(8)
    allocator = PortAllocator(low, low + 1024, seed=3)
    for _ in range(400):
        allocator.port()
    first = allocator.block(256, align=2)
    allocator.release(first, 256)
    assert allocator.block(256, align=2) >= low


def test_is_bound_sees_a_udp_socket_without_touching_it(ports: PortAllocator) -> None:
    port = ports.port()
    assert not is_bound(port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, port))
        assert is_bound(port)
        assert not is_bound(port, "tcp")


def test_missing_peer_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.skip.Exception, match="sip-tester"):
        availability.require_peer("sipp")


def test_missing_peer_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="CI=true requires every SIP peer"):
        availability.require_peer("baresip")


# -- SIPp scenarios, pairwise ---------------------------------------------------------------


@pytest.mark.peers("sipp")
@pytest.mark.parametrize(
    ("uas_scenario", "uac_scenario"),
    [
        ("uas_basic", "uac_basic"),
        ("uas_noanswer", "uac_cancel"),
        ("uas_busy", "uac_busy"),
        ("uas_bye", "uac_recv_bye"),
    ],
)
async def test_scenario_pair_completes_every_call(
    sipp: SippFactory, uas_scenario: str, uac_scenario: str
) -> None:
    _, server_result, _, client_result = await run_pair(sipp, uas_scenario, uac_scenario)
    client_result.assert_ok(successful=2)
    server_result.assert_ok(successful=2)


@pytest.mark.peers("sipp")
async def test_hold_and_resume_are_answered_with_mirrored_directions(sipp: SippFactory) -> None:
    server, server_result, client, client_result = await run_pair(sipp, "uas_hold", "uac_hold")
    client_result.assert_ok(successful=2)
    server_result.assert_ok(successful=2)
    assert client.logged_headers()[1]["Hold-answer"] == "a=recvonly"
    offers = [line.split(": ", 1)[1] for line in server.logged().splitlines()]
    assert offers.count("a=sendonly") == 2
    assert offers.count("a=sendrecv") == 2


@pytest.mark.peers("sipp")
async def test_ticket_target_answers_and_logs_every_ticket_header(sipp: SippFactory) -> None:
    server, server_result, _, client_result = await run_pair(
        sipp, "uas_ticket", "uac_ticket", uac={"keys": TICKET_KEYS}
    )
    client_result.assert_ok(successful=2)
    server_result.assert_ok(successful=2)
    seen = server.logged_headers()[1]
    assert seen["X-Ticket-Id"] == TICKET_KEYS["ticket_id"]
    assert seen["Call-Info"] == f"<{TICKET_KEYS['ticket_url']}>;purpose=ticket"
    assert seen["User-to-User"] == f"{TICKET_KEYS['ticket_uui']};encoding=hex"
    assert seen["Referred-By"] == f"<{TICKET_KEYS['referred_by']}>"
    assert seen["Priority"] == "emergency"


@pytest.mark.peers("sipp")
async def test_ticket_target_rejects_a_call_without_ticket(sipp: SippFactory) -> None:
    server, server_result, _, client_result = await run_pair(
        sipp, "uas_ticket", "uac_basic", calls=1
    )
    assert client_result.returncode == 1
    assert "400 Missing Ticket Headers" in client_result.report
    assert server_result.returncode == 1, server_result.report
    assert server_result.stats is not None
    assert server_result.stats.failure_reasons() == {"FailedCallRejected": 1}
    assert server.logged_headers()[1]["X-Ticket-Id"] == ""


@pytest.mark.peers("sipp")
@pytest.mark.parametrize(("password", "registered"), [("s3cret", True), ("wrong", False)])
async def test_registrar_checks_digest_credentials(
    sipp: SippFactory, password: str, registered: bool
) -> None:
    server, server_result, _, client_result = await run_pair(
        sipp,
        "uas_register",
        "uac_register",
        calls=1,
        uas={"keys": {"auth_user": "agent1", "auth_password": "s3cret"}},
        uac={
            "service": "agent1",
            "keys": {"expires": "60"},
            "extra_args": ["-au", "agent1", "-ap", password],
        },
    )
    assert client_result.ok is registered, client_result.report
    assert server_result.ok is registered, server_result.report
    assert server.logged_headers()[1]["Expires"] == "60"


@pytest.mark.peers("sipp")
async def test_global_timeout_is_a_failure_with_the_reason(sipp: SippFactory) -> None:
    idle = sipp("uas_basic", calls=1, timeout=1)
    result = await idle.wait()
    assert result.returncode == 255
    assert "fatal error or global timeout" in result.report


@pytest.mark.peers("sipp")
async def test_wait_kills_sipp_that_outlives_the_wait(sipp: SippFactory) -> None:
    idle = await sipp("uas_basic", calls=1, timeout=30).started()
    result = await idle.wait(0.2)
    assert result.returncode is None
    assert "killed after the wait timed out" in result.report
    assert idle.process is not None
    assert idle.process.returncode is not None


# -- baresip ------------------------------------------------------------------------------


@pytest.mark.peers("sipp", "baresip")
async def test_baresip_dials_sipp_and_hangs_up(sipp: SippFactory, baresip: BaresipFactory) -> None:
    callee = await sipp("uas_basic", calls=1, timeout=10).started()
    phone = await baresip(lifetime=15)
    await phone.dial(f"sip:12345@{callee.address}")
    established = await phone.wait_event("CALL_ESTABLISHED", 5)
    assert established["direction"] == "outgoing"
    await phone.hangup()
    await phone.wait_event("CALL_CLOSED", 5)
    (await callee.wait()).assert_ok(successful=1)


@pytest.mark.peers("sipp", "baresip")
async def test_baresip_auto_answers_and_survives_rfc4733_digits(
    sipp: SippFactory, baresip: BaresipFactory
) -> None:
    phone = await baresip(lifetime=15)
    caller = sipp("uac_basic", remote=phone.address, service=phone.user, calls=1, duration_ms=1500)
    established = await phone.wait_event("CALL_ESTABLISHED", 5)
    assert established["direction"] == "incoming"
    await phone.sndcode("123#")
    assert "Active calls (1)" in await phone.listcalls()
    (await caller.wait()).assert_ok(successful=1)
    closed = await phone.wait_event("CALL_CLOSED", 5)
    assert closed["id"] == established["id"]


@pytest.mark.peers("sipp", "baresip")
async def test_baresip_in_manual_mode_rings_until_accepted(
    sipp: SippFactory, baresip: BaresipFactory
) -> None:
    phone = await baresip(lifetime=15, answermode="manual")
    caller = sipp("uac_basic", remote=phone.address, service=phone.user, calls=1)
    incoming = await phone.wait_event("CALL_INCOMING", 5)
    assert "CALL_ESTABLISHED" not in phone.event_types()
    await phone.accept()
    established = await phone.wait_event("CALL_ESTABLISHED", 5)
    assert established["id"] == incoming["id"]
    (await caller.wait()).assert_ok(successful=1)


@pytest.mark.peers("sipp", "baresip")
async def test_baresip_blind_transfer_sends_refer_and_leaves(
    sipp: SippFactory, baresip: BaresipFactory
) -> None:
    callee = await sipp("uas_refer", calls=1, timeout=10).started()
    phone = await baresip(lifetime=15)
    await phone.dial(f"sip:12345@{callee.address}")
    await phone.wait_event("CALL_ESTABLISHED", 5)
    await phone.transfer("sip:110@127.0.0.1:5999")
    closed = await phone.wait_event("CALL_CLOSED", 5)
    assert closed["param"] == "Call transfered"
    (await callee.wait()).assert_ok(successful=1)
    refer = callee.logged_headers()[1]
    assert refer["Refer-To"] == "sip:110@127.0.0.1:5999"  # no angle brackets
    assert refer["Referred-By"] == ""  # baresip sends none


@pytest.mark.peers("sipp", "baresip")
@pytest.mark.parametrize(
    ("password", "outcome"), [("pw7", "REGISTER_OK"), ("bad", "REGISTER_FAIL")]
)
async def test_baresip_registers_with_digest(
    sipp: SippFactory, baresip: BaresipFactory, password: str, outcome: str
) -> None:
    registrar = await sipp(
        "uas_register", calls=1, timeout=10, keys={"auth_user": "agent7", "auth_password": "pw7"}
    ).started()
    phone = await baresip(
        user="agent7", lifetime=15, registrar=registrar.address, password=password
    )
    await phone.wait_event(outcome, 5)
    await phone.stop()
    result = await registrar.wait()
    assert result.ok is (outcome == "REGISTER_OK"), result.report


# -- pyVoIP ---------------------------------------------------------------------------------


@pytest.mark.peers("sipp", "pyVoIP")
async def test_pyvoip_seat_registers_answers_and_unregisters(
    sipp: SippFactory, pyvoip_seat: SeatFactory
) -> None:
    registrar = await sipp(
        "uas_register_call",
        calls=2,  # the registration (then a call to the seat), and the unregistration
        timeout=15,
        duration_ms=300,
        keys={"auth_user": "seat1", "auth_password": "pw1"},
    ).started()
    seat = await pyvoip_seat(server_port=registrar.port, username="seat1", password="pw1")
    answered = await seat.wait_for("call_answered", 5)
    ended = await seat.wait_for("call_ended", 5)
    assert ended.call_id == answered.call_id
    await seat.stop()
    (await registrar.wait()).assert_ok(successful=2)
    registrations = registrar.logged_headers()
    assert registrations[1]["Contact"] == seat.contact
    assert registrations[2]["Expires"] == "0"
