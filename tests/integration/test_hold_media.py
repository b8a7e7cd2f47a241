"""Audio survives hold and resume through a real call (issue: hold and resume, commit 1e0922b).

SIPp carries the signalling: the caller puts the callee on hold with a re-INVITE ``a=sendonly``
and resumes it with ``a=sendrecv``. Each party's audio is a Python RTP socket named in SIPp's SDP
(``-key audio_port``) sending its own tone all along, so what each one hears before, during and
after the hold is checked by FFT.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from integration.bridge_under_test import BridgeUnderTest
from integration.media_peers import call_through_bridge, caller_at_port
from integration.test_media_calls import Received, RtpPeer, call_of, endpoint, rtp_peer
from peers.ports import PortAllocator
from peers.process import wait_until
from peers.sipp import SippRun

from bridge.media import g711

pytestmark = pytest.mark.peers("sipp")

BridgeFactory = Callable[..., Awaitable[BridgeUnderTest]]
CALLER_TONE, CALLEE_TONE = 1000.0, 1600.0
PHASE_MS = 2000
"""Each of the caller scenario's pauses: talking, on hold, resumed (then BYE)."""
WINDOW = 20
"""Packets (0.4 s, the hold tone's first burst) whose audio one check analyses."""
SETTLE = 5
"""Packets skipped after a phase starts: what was in flight before it."""


async def audio_from(
    peer: RtpPeer, start: int, *, what: str, within: float = 3.0
) -> list[Received]:
    """The WINDOW packets ``peer`` receives from its ``start``-th on, once they have come."""
    await wait_until(lambda: len(peer.received) >= start + WINDOW, within=within, what=what)
    return peer.received[start : start + WINDOW]


async def test_both_parties_hear_each_other_again_after_hold_and_resume(
    bridge: BridgeFactory, sipp: Callable[..., SippRun], tmp_path: Path, ports: PortAllocator
) -> None:
    caller_rtp, caller_port = await rtp_peer(ports, codec=g711.PCMA, frequency=CALLER_TONE)
    callee_rtp, callee_port = await rtp_peer(ports, codec=g711.PCMA, frequency=CALLEE_TONE)
    callee = sipp(
        "uas_hold_at_port", name="held-callee", timeout=15, keys={"audio_port": str(callee_port)}
    )
    caller = caller_at_port(
        tmp_path,
        ports,
        caller_port,
        "uac_hold_at_port",
        name="holding-caller",
        duration_ms=PHASE_MS,
        timeout=15,
    )
    service, calls = await call_through_bridge(bridge, caller, callee)
    phase = PHASE_MS / 1000
    try:
        call = call_of(service, await calls.answered())
        callee_leg = call.legs[call.callee_leg]
        caller_media = endpoint(call, call.caller_leg)
        callee_media = endpoint(call, call.callee_leg)
        # Both parties talk for the whole call, on hold or not.
        caller_rtp.stream((caller_media.host, caller_media.port))
        callee_rtp.stream((callee_media.host, callee_media.port))

        # 1. Talking: each hears the other.
        heard_by_caller = await audio_from(caller_rtp, SETTLE, what="the caller hears the callee")
        heard_by_callee = await audio_from(callee_rtp, SETTLE, what="the callee hears the caller")
        assert not callee_leg.held, "the hold came before both parties were heard"
        assert caller_rtp.heard(heard_by_caller) == pytest.approx(CALLEE_TONE, abs=25)
        assert callee_rtp.heard(heard_by_callee) == pytest.approx(CALLER_TONE, abs=25)

        # 2. On hold: the callee hears the bridge's hold tone, a new source toward it whose
        # first packet carries the marker bit, and not the caller any more.
        talked = len(callee_rtp.received)
        await wait_until(
            lambda: callee_leg.held,
            within=phase + 3,
            what="the caller's hold re-INVITE (a=sendonly) reaches the bridge",
            process=caller.process,
        )
        await wait_until(
            lambda: any(p.marker for p in callee_rtp.received[talked:]),
            within=2,
            what="the held callee's audio switches to the hold tone",
        )
        hold_start = next(
            i for i in range(talked, len(callee_rtp.received)) if callee_rtp.received[i].marker
        )
        on_hold = await audio_from(
            callee_rtp, hold_start, what="the held callee hears the hold tone"
        )
        assert {p.payload_type for p in on_hold} == {g711.PCMA}
        hold_tone = callee_rtp.heard(on_hold)
        assert hold_tone != pytest.approx(CALLER_TONE, abs=50), "the held callee hears the caller"
        assert hold_tone != pytest.approx(CALLEE_TONE, abs=50), "the held callee hears itself"

        # 3. Resumed: each hears the other again (before 1e0922b, neither heard anything).
        await wait_until(
            lambda: not callee_leg.held,
            within=phase + 3,
            what="the caller's resume re-INVITE (a=sendrecv) reaches the bridge",
            process=caller.process,
        )
        caller_resumed, callee_resumed = len(caller_rtp.received), len(callee_rtp.received)
        heard_by_caller = await audio_from(
            caller_rtp, caller_resumed + SETTLE, what="the caller hears the callee after the resume"
        )
        heard_by_callee = await audio_from(
            callee_rtp, callee_resumed + SETTLE, what="the callee hears the caller after the resume"
        )
        assert caller_rtp.heard(heard_by_caller) == pytest.approx(CALLEE_TONE, abs=25)
        assert callee_rtp.heard(heard_by_callee) == pytest.approx(CALLER_TONE, abs=25)

        (await caller.wait()).assert_ok(successful=1)
        (await callee.wait()).assert_ok(successful=1)
        await service.wait_idle()
    finally:
        caller.kill()
        caller_rtp.close()
        callee_rtp.close()
