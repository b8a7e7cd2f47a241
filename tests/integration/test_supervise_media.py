"""A supervisor listens, whispers and barges into a real call (issue: supervisor modes).

SIPp carries the signalling of the caller, the agent and the supervisor's phone; each party's
audio is a Python RTP socket sending its own tone, so what each one hears is checked by FFT:
which of the other parties' tones are in its audio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from integration.bridge_under_test import ADMIN_HEADERS, BridgeUnderTest, CallWatcher
from integration.media_peers import answer_at_port, call_through_bridge, caller_at_port
from integration.test_media_calls import (
    RATE,
    Received,
    RtpPeer,
    caller_streaming,
    rtp_peer,
)
from peers.ports import PortAllocator
from peers.process import eventually, wait_until
from peers.sipp import SippRun

from bridge.media import g711
from bridge.sidecar.events import Subscription

pytestmark = pytest.mark.peers("sipp")

BridgeFactory = Callable[..., Awaitable[BridgeUnderTest]]
CALLER_TONE, AGENT_TONE, SUPERVISOR_TONE, TRAINER_TONE = 500.0, 1000.0, 2500.0, 1700.0
TONES = (CALLER_TONE, AGENT_TONE, SUPERVISOR_TONE, TRAINER_TONE)

SUPERVISOR_PLATFORM = """
[[trunks]]
name = "supervisors"
destinations = ["sip:9000@127.0.0.1:{port}"]
[[platforms]]
key = "12399"
label = "班长席"
trunk = "supervisors"
"""

TRAINER_PLATFORM = """
[[trunks]]
name = "trainers"
destinations = ["sip:9100@127.0.0.1:{port}"]
[[platforms]]
key = "12398"
label = "培训席"
trunk = "trainers"
"""


def tones_in(packets: list[Received]) -> set[float]:
    """Which of the parties' tones are in these packets' audio (each well above the g711
    quantisation noise: a tone is sent at amplitude 8000, heard ones measure about that)."""
    samples = np.concatenate([g711.decode(p.payload_type, p.payload) for p in packets])
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    amplitude = spectrum * 4 / len(samples)
    freqs = np.fft.rfftfreq(len(samples), 1 / RATE)
    return {tone for tone in TONES if amplitude[np.abs(freqs - tone) <= 10].max() > 1500}


async def post_supervise(
    service: BridgeUnderTest, call_id: str, mode: str, supervisor: str = "12399"
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{service.http_url}/api/v1/calls/{call_id}/supervise",
            json={"supervisor": supervisor, "mode": mode},
            headers=ADMIN_HEADERS,
        ) as resp,
    ):
        return resp.status, await resp.json()


async def get_call(service: BridgeUnderTest, call_id: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{service.http_url}/api/v1/calls/{call_id}", headers=ADMIN_HEADERS) as resp,
    ):
        assert resp.status == 200
        return dict((await resp.json())["call"])


async def call_event(live: Subscription, kind: str, within: float = 10.0) -> dict[str, Any]:
    async def next_one() -> dict[str, Any]:
        while True:
            message = (await live.get()).event
            if message.get("type") == "call" and message.get("kind") == kind:
                return dict(message)

    return await asyncio.wait_for(next_one(), within)


async def audit_until(
    service: BridgeUnderTest, call_id: str, kind: str, within: float = 5.0
) -> dict[str, dict[str, Any]]:
    """The call's audit entries by kind, once ``kind`` is among them. The audit log is
    written in timed batches that nothing signals, so it is asked until it has it."""
    by_kind: dict[str, dict[str, Any]] = {}
    async with aiohttp.ClientSession() as session:

        async def logged() -> bool:
            async with session.get(
                f"{service.http_url}/api/v1/audit",
                params={"subject": call_id},
                headers=ADMIN_HEADERS,
            ) as resp:
                entries = (await resp.json())["entries"]
            by_kind.update((entry["kind"], entry) for entry in entries)
            return kind in by_kind

        await eventually(logged, within=within, what=f"{kind} in the call's audit log")
    return by_kind


async def talking_and_watched(
    service: BridgeUnderTest, calls: CallWatcher, caller_rtp: RtpPeer, agent_rtp: RtpPeer
) -> tuple[str, Subscription]:
    """The answered call's caller and agent hear each other; its live events from now on."""
    call_id, _ = await caller_streaming(service, calls, caller_rtp)
    await wait_until(
        lambda: len(agent_rtp.received) >= 25 and len(caller_rtp.received) >= 25,
        within=5,
        what="caller and agent hear each other",
    )
    assert service.service is not None
    return call_id, service.service.hub.subscribe(everything=True)


async def heard_from_now(
    peers: dict[str, RtpPeer], codecs: dict[str, int]
) -> dict[str, set[float]]:
    """What each party hears over the next 0.8 s of its audio, after 0.4 s for the mixer's
    buffers to drain what was queued before."""
    start = {name: len(peer.audio(codecs[name])) for name, peer in peers.items()}
    await wait_until(
        lambda: all(len(p.audio(codecs[n])) >= start[n] + 60 for n, p in peers.items()),
        within=5,
        what="1.2 s more audio for every party",
    )
    return {
        name: tones_in(peer.audio(codecs[name])[start[name] + 20 : start[name] + 60])
        for name, peer in peers.items()
    }


async def test_supervisor_listens_then_whispers_then_barges(
    bridge: BridgeFactory, sipp: Callable[..., SippRun], tmp_path: Path, ports: PortAllocator
) -> None:
    caller_rtp, caller_port = await rtp_peer(ports, codec=g711.PCMA, frequency=CALLER_TONE)
    agent_rtp, agent_port = await rtp_peer(ports, codec=g711.PCMA, frequency=AGENT_TONE, reply=True)
    supervisor_rtp, supervisor_port = await rtp_peer(
        ports, codec=g711.PCMU, frequency=SUPERVISOR_TONE, reply=True
    )
    agent = answer_at_port(sipp, "agent", agent_port, g711.PCMA, timeout=30)
    supervisor = answer_at_port(sipp, "supervisor", supervisor_port, g711.PCMU, timeout=30)
    caller = caller_at_port(tmp_path, ports, caller_port, duration_ms=12000, timeout=30)
    plan = SUPERVISOR_PLATFORM.format(port=supervisor.port)
    service, calls = await call_through_bridge(bridge, caller, agent, supervisor, extra_plan=plan)
    peers = {"caller": caller_rtp, "agent": agent_rtp, "supervisor": supervisor_rtp}
    codecs = {"caller": g711.PCMA, "agent": g711.PCMA, "supervisor": g711.PCMU}
    try:
        call_id, live = await talking_and_watched(service, calls, caller_rtp, agent_rtp)

        status, body = await post_supervise(service, call_id, "listen")
        assert status == 202, body
        assert body["supervision"]["state"] == "ringing"
        joined = await call_event(live, "supervisor_joined")
        assert joined["data"]["mode"] == "listen"
        heard = await heard_from_now(peers, codecs)
        assert heard == {
            "caller": {AGENT_TONE},
            "agent": {CALLER_TONE},
            "supervisor": {CALLER_TONE, AGENT_TONE},
        }

        status, body = await post_supervise(service, call_id, "whisper")
        assert (status, body["supervision"]["mode"]) == (200, "whisper"), body
        await call_event(live, "supervise_mode_changed")
        heard = await heard_from_now(peers, codecs)
        assert heard == {
            "caller": {AGENT_TONE},
            "agent": {CALLER_TONE, SUPERVISOR_TONE},
            "supervisor": {CALLER_TONE, AGENT_TONE},
        }

        status, body = await post_supervise(service, call_id, "barge")
        assert (status, body["supervision"]["mode"]) == (200, "barge"), body
        heard = await heard_from_now(peers, codecs)
        assert heard == {
            "caller": {AGENT_TONE, SUPERVISOR_TONE},
            "agent": {CALLER_TONE, SUPERVISOR_TONE},
            "supervisor": {CALLER_TONE, AGENT_TONE},
        }
        assert {p.payload_type for p in supervisor_rtp.received} <= {g711.PCMU, 101}

        # The caller hangs up: the bridge hangs up the agent and the supervisor with it.
        (await caller.wait()).assert_ok(successful=1)
        (await agent.wait()).assert_ok(successful=1)
        (await supervisor.wait()).assert_ok(successful=1)
        left = await call_event(live, "supervisor_left")
        assert left["data"]["reason"] == "call ended"
        await service.wait_idle()
    finally:
        caller.kill()
        for peer in peers.values():
            peer.close()


async def test_two_supervisors_listen_and_barge_then_one_whispers(
    bridge: BridgeFactory, sipp: Callable[..., SippRun], tmp_path: Path, ports: PortAllocator
) -> None:
    """The 12345 supervisor listens, a trainer barges in: each hears the parties and whoever
    barges, no one hears the listener. The listener then whispers: only the agent hears it.
    The caller hanging up hangs up both."""
    caller_rtp, caller_port = await rtp_peer(ports, codec=g711.PCMA, frequency=CALLER_TONE)
    agent_rtp, agent_port = await rtp_peer(ports, codec=g711.PCMA, frequency=AGENT_TONE, reply=True)
    supervisor_rtp, supervisor_port = await rtp_peer(
        ports, codec=g711.PCMU, frequency=SUPERVISOR_TONE, reply=True
    )
    trainer_rtp, trainer_port = await rtp_peer(
        ports, codec=g711.PCMA, frequency=TRAINER_TONE, reply=True
    )
    agent = answer_at_port(sipp, "agent", agent_port, g711.PCMA, timeout=40)
    supervisor = answer_at_port(sipp, "supervisor", supervisor_port, g711.PCMU, timeout=40)
    trainer = answer_at_port(sipp, "trainer", trainer_port, g711.PCMA, timeout=40)
    caller = caller_at_port(tmp_path, ports, caller_port, duration_ms=14000, timeout=40)
    plan = SUPERVISOR_PLATFORM.format(port=supervisor.port) + TRAINER_PLATFORM.format(
        port=trainer.port
    )
    service, calls = await call_through_bridge(
        bridge, caller, agent, supervisor, trainer, extra_plan=plan
    )
    peers = {
        "caller": caller_rtp, "agent": agent_rtp, "supervisor": supervisor_rtp,
        "trainer": trainer_rtp,
    }  # fmt: skip
    codecs = {
        "caller": g711.PCMA, "agent": g711.PCMA, "supervisor": g711.PCMU, "trainer": g711.PCMA,
    }  # fmt: skip
    try:
        call_id, live = await talking_and_watched(service, calls, caller_rtp, agent_rtp)

        status, body = await post_supervise(service, call_id, "listen")
        assert status == 202, body
        joined = await call_event(live, "supervisor_joined")
        assert (joined["data"]["supervisor"], joined["data"]["leg"]) == ("12399", "s1")
        status, body = await post_supervise(service, call_id, "barge", supervisor="12398")
        assert (status, body["supervision"]["state"]) == (202, "ringing"), body
        joined = await call_event(live, "supervisor_joined")
        assert (joined["data"]["supervisor"], joined["data"]["leg"]) == ("12398", "s2")
        heard = await heard_from_now(peers, codecs)
        assert heard == {
            "caller": {AGENT_TONE, TRAINER_TONE},
            "agent": {CALLER_TONE, TRAINER_TONE},
            "supervisor": {CALLER_TONE, AGENT_TONE, TRAINER_TONE},
            "trainer": {CALLER_TONE, AGENT_TONE},
        }

        status, body = await post_supervise(service, call_id, "whisper")
        assert (status, body["supervision"]["mode"]) == (200, "whisper"), body
        heard = await heard_from_now(peers, codecs)
        assert heard == {
            "caller": {AGENT_TONE, TRAINER_TONE},
            "agent": {CALLER_TONE, TRAINER_TONE, SUPERVISOR_TONE},
            "supervisor": {CALLER_TONE, AGENT_TONE, TRAINER_TONE},
            "trainer": {CALLER_TONE, AGENT_TONE},
        }
        shown = (await get_call(service, call_id))["supervisions"]
        assert [(s["supervisor"], s["mode"], s["state"]) for s in shown] == [
            ("12399", "whisper", "joined"),
            ("12398", "barge", "joined"),
        ]

        # The caller hangs up: the bridge hangs up the agent and both supervisors with it.
        (await caller.wait()).assert_ok(successful=1)
        for phone in (agent, supervisor, trainer):
            (await phone.wait()).assert_ok(successful=1)
        left = [await call_event(live, "supervisor_left") for _ in range(2)]
        assert {(e["data"]["supervisor"], e["data"]["reason"]) for e in left} == {
            ("12399", "call ended"),
            ("12398", "call ended"),
        }
        await service.wait_idle()
    finally:
        caller.kill()
        for peer in peers.values():
            peer.close()


async def test_busy_supervisor_leaves_caller_and_agent_talking(
    bridge: BridgeFactory, sipp: Callable[..., SippRun], tmp_path: Path, ports: PortAllocator
) -> None:
    caller_rtp, caller_port = await rtp_peer(ports, codec=g711.PCMA, frequency=CALLER_TONE)
    agent_rtp, agent_port = await rtp_peer(ports, codec=g711.PCMA, frequency=AGENT_TONE, reply=True)
    agent = answer_at_port(sipp, "agent", agent_port, g711.PCMA, timeout=20)
    supervisor = sipp("uas_busy", name="busy-supervisor", timeout=20)
    caller = caller_at_port(tmp_path, ports, caller_port, duration_ms=5000, timeout=20)
    plan = SUPERVISOR_PLATFORM.format(port=supervisor.port)
    service, calls = await call_through_bridge(bridge, caller, agent, supervisor, extra_plan=plan)
    try:
        call_id, _ = await caller_streaming(service, calls, caller_rtp)
        await agent_rtp.wait_packets(20, within=5, what="the agent hears the caller")
        assert service.service is not None
        live = service.service.hub.subscribe(everything=True)
        status, body = await post_supervise(service, call_id, "barge")
        assert status == 202, body
        failed = await call_event(live, "supervise_failed")
        assert failed["data"]["status"] == 486
        trail = await audit_until(service, call_id, "call.supervise_failed")
        assert trail["call.supervise_requested"]["actor"] == "admin", "who asked"
        assert trail["call.supervise_failed"]["actor"] == "bridge"
        peers = {"caller": caller_rtp, "agent": agent_rtp}
        heard = await heard_from_now(peers, {"caller": g711.PCMA, "agent": g711.PCMA})
        assert heard == {"caller": {AGENT_TONE}, "agent": {CALLER_TONE}}
        (await caller.wait()).assert_ok(successful=1)
        (await agent.wait()).assert_ok(successful=1)
    finally:
        caller.kill()
        caller_rtp.close()
        agent_rtp.close()
