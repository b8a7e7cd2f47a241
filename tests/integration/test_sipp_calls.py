"""Calls through the bridge between real SIPp peers on loopback (issue: SIP B2BUA service)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from integration.bridge_under_test import BridgeUnderTest
from peers.ports import PortAllocator
from peers.sipp import SippRun

from bridge.calls.call import CallEvent

pytestmark = pytest.mark.peers("sipp")

BridgeFactory = Callable[..., Awaitable[BridgeUnderTest]]


def prepare_caller(scenario: str, tmp_path: Path, ports: PortAllocator, **kwargs: Any) -> SippRun:
    """A SIPp UAC not started yet: its port must be in the dial plan as the carrier trunk."""
    kwargs.setdefault("service", "110")
    return SippRun(scenario, workdir=tmp_path, allocator=ports, name=f"caller-{scenario}", **kwargs)


async def run_pair(
    bridge: BridgeFactory,
    sipp: Callable[..., SippRun],
    tmp_path: Path,
    ports: PortAllocator,
    *,
    caller: str,
    callee: str,
    calls: int = 1,
    caller_kwargs: dict[str, Any] | None = None,
    callee_kwargs: dict[str, Any] | None = None,
    bridge_kwargs: dict[str, Any] | None = None,
) -> tuple[BridgeUnderTest, SippRun, SippRun]:
    uas = sipp(callee, calls=calls, name=f"callee-{callee}", **(callee_kwargs or {}))
    uac = prepare_caller(caller, tmp_path, ports, calls=calls, **(caller_kwargs or {}))
    service = await bridge(carrier_port=uac.port, pbx_ports=[uas.port], **(bridge_kwargs or {}))
    await uas.started()
    uac.remote_args(service.sip_address)
    uac.start()
    return service, uac, uas


async def test_200_calls_through_the_bridge_all_succeed(
    bridge: BridgeFactory, sipp: Callable[..., SippRun], tmp_path: Path, ports: PortAllocator
) -> None:
    service, uac, uas = await run_pair(
        bridge,
        sipp,
        tmp_path,
        ports,
        caller="uac",
        callee="uas",
        calls=200,
        caller_kwargs={"rate": 50, "timeout": 40, "trace_messages": False},
        callee_kwargs={"timeout": 40, "trace_messages": False},
    )
    try:
        (await uac.wait()).assert_ok(successful=200)
        (await uas.wait()).assert_ok(successful=200)
        await service.wait_idle()
        assert service.engine is not None
        assert service.engine.media.relay is not None
        assert service.engine.media.relay.pool.in_use == 0, "every media port went back"
    finally:
        uac.kill()


async def test_cancel_before_answer_reaches_the_callee(
    bridge: BridgeFactory, sipp: Callable[..., SippRun], tmp_path: Path, ports: PortAllocator
) -> None:
    _service, uac, uas = await run_pair(
        bridge, sipp, tmp_path, ports, caller="uac_cancel", callee="uas_noanswer"
    )
    try:
        (await uac.wait()).assert_ok(successful=1)
        (await uas.wait()).assert_ok(successful=1)
    finally:
        uac.kill()


async def test_cancel_before_the_callee_rings_waits_for_its_180_not_the_caller(
    bridge: BridgeFactory, sipp: Callable[..., SippRun], tmp_path: Path, ports: PortAllocator
) -> None:
    """RFC 3261 §9.1 end to end: the caller CANCELs while the callee has sent nothing; the
    caller has its 487 within a second (uac_cancel_early), the callee its CANCEL only after its
    180 1.5 s later (uas_late_ringing fails on a CANCEL before that)."""
    service, uac, uas = await run_pair(
        bridge,
        sipp,
        tmp_path,
        ports,
        caller="uac_cancel_early",
        callee="uas_late_ringing",
        caller_kwargs={"duration_ms": 200},
    )
    try:
        (await uac.wait()).assert_ok(successful=1)
        (await uas.wait()).assert_ok(successful=1)
        await service.wait_idle()
    finally:
        uac.kill()


async def test_bye_from_the_callee_ends_the_caller_leg(
    bridge: BridgeFactory, sipp: Callable[..., SippRun], tmp_path: Path, ports: PortAllocator
) -> None:
    _service, uac, uas = await run_pair(
        bridge, sipp, tmp_path, ports, caller="uac_recv_bye", callee="uas_bye"
    )
    try:
        (await uac.wait()).assert_ok(successful=1)
        (await uas.wait()).assert_ok(successful=1)
    finally:
        uac.kill()


async def test_a_call_without_media_is_hung_up_on_both_sides_at_the_media_timeout(
    bridge: BridgeFactory, sipp: Callable[..., SippRun], tmp_path: Path, ports: PortAllocator
) -> None:
    """SIPp sends no RTP: with ``[media] timeout_s = 1`` the bridge ends the answered call
    with a BYE to each side, as it would for a phone that lost power."""
    service, uac, uas = await run_pair(
        bridge,
        sipp,
        tmp_path,
        ports,
        caller="uac_recv_bye",
        callee="uas_basic",
        caller_kwargs={"timeout": 8},  # SIPp fails if no BYE comes by then
        callee_kwargs={"timeout": 8},
        bridge_kwargs={"media_extra": "timeout_s = 1"},
    )
    assert service.engine is not None
    events: list[CallEvent] = []
    service.engine.event_listeners.append(events.extend)
    try:
        (await uac.wait()).assert_ok(successful=1)
        (await uas.wait()).assert_ok(successful=1)
        await service.wait_idle()
        hangups = [e.data["reason"] for e in events if e.kind == "hangup"]
        assert hangups == ["media timeout"]
    finally:
        uac.kill()


async def test_a_delayed_offer_is_answered_in_the_ack_and_the_call_completes(
    bridge: BridgeFactory, sipp: Callable[..., SippRun], tmp_path: Path, ports: PortAllocator
) -> None:
    """The caller's INVITE has no SDP (RFC 3261 §13.2.1): SIPp checks that the 200 carries
    an offer and answers it in the ACK; the bridge keeps the call up until the caller's BYE."""
    service, uac, uas = await run_pair(
        bridge,
        sipp,
        tmp_path,
        ports,
        caller="uac_delayed_offer",
        callee="uas_basic",
        caller_kwargs={"duration_ms": 500},
    )
    assert service.engine is not None
    events: list[CallEvent] = []
    service.engine.event_listeners.append(events.extend)
    try:
        (await uac.wait()).assert_ok(successful=1)
        (await uas.wait()).assert_ok(successful=1)
        await service.wait_idle()
        assert "no_answer_in_ack" not in [e.kind for e in events]
    finally:
        uac.kill()


async def test_hold_and_resume_reinvites_cross_the_bridge(
    bridge: BridgeFactory, sipp: Callable[..., SippRun], tmp_path: Path, ports: PortAllocator
) -> None:
    _service, uac, uas = await run_pair(
        bridge, sipp, tmp_path, ports, caller="uac_hold", callee="uas_hold"
    )
    try:
        (await uac.wait()).assert_ok(successful=1)
        (await uas.wait()).assert_ok(successful=1)
    finally:
        uac.kill()


async def test_ten_percent_packet_loss_still_completes_every_call(
    bridge: BridgeFactory, sipp: Callable[..., SippRun], tmp_path: Path, ports: PortAllocator
) -> None:
    _service, uac, uas = await run_pair(
        bridge,
        sipp,
        tmp_path,
        ports,
        caller="uac",
        callee="uas_lossy",
        calls=20,
        # 10 % loss both ways on both trunks: the bridge's retransmissions and the peers' must
        # recover every call. The callee is uas_lossy, not SIPp's built-in uas, which aborts a
        # call when the bridge correctly retransmits an INVITE whose 180 and 200 were both lost
        # (the bridge then fails the caller's call with a 480 after Timer B).
        caller_kwargs={"rate": 10, "timeout": 60, "extra_args": ["-lost", "10"]},
        callee_kwargs={"timeout": 60, "extra_args": ["-lost", "10"]},
        bridge_kwargs={"t1_ms": 100},
    )
    try:
        (await uac.wait()).assert_ok(successful=20)
        (await uas.wait()).assert_ok(successful=20)
    finally:
        uac.kill()


async def test_busy_callee_gives_the_caller_486(
    bridge: BridgeFactory, sipp: Callable[..., SippRun], tmp_path: Path, ports: PortAllocator
) -> None:
    _service, uac, _uas = await run_pair(
        bridge, sipp, tmp_path, ports, caller="uac_busy", callee="uas_busy"
    )
    try:
        (await uac.wait()).assert_ok(successful=1)
    finally:
        uac.kill()


async def test_trunk_down_gives_a_clean_failure(
    bridge: BridgeFactory, tmp_path: Path, ports: PortAllocator
) -> None:
    uac = prepare_caller("uac_unavailable", tmp_path, ports, timeout=20)
    dead_port = ports.port()  # nothing listens here
    service = await bridge(carrier_port=uac.port, pbx_ports=[dead_port], t1_ms=50)
    uac.remote_args(service.sip_address)
    uac.start()
    try:
        (await uac.wait()).assert_ok(successful=1)
        await service.wait_idle()
    finally:
        uac.kill()


async def test_refused_tcp_destination_fails_over_at_once(
    bridge: BridgeFactory, sipp: Callable[..., SippRun], tmp_path: Path, ports: PortAllocator
) -> None:
    """RFC 3261 §18.4: the trunk's first destination is TCP and refuses the connection; the
    transport tells the transaction, and the call goes on to the second destination (a SIPp
    UAS) at once, where it would otherwise wait out Timer B (64*T1 = 32 s)."""
    refused = ports.port()  # nothing listens here
    uas = sipp("uas_basic", name="callee-uas_basic")
    uac = prepare_caller("uac_basic", tmp_path, ports)
    service = await bridge(
        carrier_port=uac.port,
        pbx_ports=[uas.port],
        pbx_uris=[f"sip:110@127.0.0.1:{refused};transport=tcp"],
    )
    assert service.engine is not None
    events: list[CallEvent] = []
    service.engine.event_listeners.append(events.extend)
    calls = service.watch_calls()
    await uas.started()
    uac.remote_args(service.sip_address)
    uac.start()
    try:
        await calls.answered(within=8.0)
        assert calls.by_destination == {f"127.0.0.1:{uas.port}": 1}
        failovers = [e.data for e in events if e.kind == "failover"]
        assert failovers == [{"status": 503, "leg": "b1", "reason": "Unreachable"}]
        (await uac.wait()).assert_ok(successful=1)
        (await uas.wait()).assert_ok(successful=1)
    finally:
        uac.kill()


async def test_refused_tcp_trunk_fails_the_caller_at_once(
    bridge: BridgeFactory, tmp_path: Path, ports: PortAllocator
) -> None:
    """With no destination left the caller hears 503 as soon as the connection is refused:
    SIPp's own timeout (5 s) is far below Timer B."""
    uac = prepare_caller("uac_unavailable", tmp_path, ports, timeout=5)
    refused = ports.port()
    service = await bridge(
        carrier_port=uac.port,
        pbx_ports=[],
        pbx_uris=[f"sip:110@127.0.0.1:{refused};transport=tcp"],
    )
    uac.remote_args(service.sip_address)
    uac.start()
    try:
        (await uac.wait()).assert_ok(successful=1)
        await service.wait_idle(within=2.0)
    finally:
        uac.kill()


async def test_calls_over_the_rate_limit_are_refused_at_once_but_not_calls_to_110(
    bridge: BridgeFactory, sipp: Callable[..., SippRun], tmp_path: Path, ports: PortAllocator
) -> None:
    """``[sip] max_call_rate``: three calls to the 12315 hotline in a burst, one admitted (its
    trunk refuses the connection: 503), two refused by the limit with 503 and Retry-After; then
    a call to 110 within the same seconds is put through to the 110 desk all the same."""
    refused_trunk = ports.port()  # nothing listens here
    uas = sipp("uas_basic", name="callee-uas_basic")
    burst = prepare_caller(
        "uac_unavailable", tmp_path, ports, calls=3, rate=50, timeout=10, service="12315"
    )
    emergency = prepare_caller("uac_basic", tmp_path, ports)
    extra_plan = (
        f'[[trunks]]\nname = "carrier-2"\ndestinations = ["sip:c@127.0.0.1:{emergency.port}"]\n'
        '[[trunks]]\nname = "pbx-12315"\n'
        f'destinations = ["sip:12315@127.0.0.1:{refused_trunk};transport=tcp"]\n'
        '[[platforms]]\nkey = "12315"\nlabel = "12315 消费者投诉"\ntrunk = "pbx-12315"\n'
        '[[inbound]]\nname = "to 12315"\ncalled = { exact = "12315" }\nplatform = "12315"\n'
    )
    service = await bridge(
        carrier_port=burst.port,
        pbx_ports=[uas.port],
        extra_plan=extra_plan,
        sip_extra="max_call_rate = 0.2",  # one call per 5 s
    )
    assert service.engine is not None
    events: list[CallEvent] = []
    service.engine.event_listeners.append(events.extend)
    await uas.started()
    burst.remote_args(service.sip_address)
    emergency.remote_args(service.sip_address)
    burst.start()
    try:
        (await burst.wait()).assert_ok(successful=3)
        refusals = [e.data["reason"] for e in events if e.kind == "refused"]
        assert refusals == ["call rate limit 0.2/s reached"] * 2
        assert burst.message_file.read_text(errors="replace").count("Retry-After: ") == 2
        emergency.start()
        (await emergency.wait()).assert_ok(successful=1)
        (await uas.wait()).assert_ok(successful=1)
        assert [e.kind for e in events].count("refused") == 2
    finally:
        burst.kill()
        emergency.kill()
