"""Media through real calls (issue: anchored RTP, G.711, DTMF keys, leg swaps).

SIPp carries the signalling; the audio is SIPp's own (a generated pcap streamed, -rtp_echo) or a
Python RTP socket named in SIPp's SDP (-key audio_port), so a test can send a known tone and
check what comes back: payload type, frequency (FFT), SSRC and sequence numbers.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from integration.bridge_under_test import (
    ADMIN_HEADERS,
    BridgeUnderTest,
    CallWatcher,
    seat_group_plan,
    sipp_caller,
)
from integration.media_peers import answer_at_port, call_through_bridge, caller_at_port
from integration.test_transfer_api import TARGET_PLATFORM, TICKET
from peers.baresip import Baresip
from peers.ports import HOST, PortAllocator
from peers.process import wait_until
from peers.sipp import SippRun

from bridge.calls.call import Call
from bridge.media import g711
from bridge.media.relay import MediaEndpoint

pytestmark = pytest.mark.peers("sipp")

BridgeFactory = Callable[..., Awaitable[BridgeUnderTest]]
RATE = 8000
FRAME = 160  # 20 ms
TELEPHONE_EVENT = 101
_RTP = struct.Struct("!BBHII")


def tone(frequency: float, start: int, count: int = FRAME) -> np.ndarray[Any, np.dtype[np.int16]]:
    """`count` samples of a sine at -12 dBFS from absolute sample `start` (phase-continuous)."""
    t = np.arange(start, start + count) / RATE
    return (8000 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def peak_frequency(samples: np.ndarray[Any, Any]) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum)) * RATE / len(samples)


def write_pcma_pcap(path: Path, *, seconds: float, frequency: float) -> int:
    """A pcap of an A-law tone in 20 ms RTP packets (Ethernet/IPv4/UDP), as SIPp's
    play_pcap_audio reads it; returns the number of packets."""
    packets = int(seconds * RATE / FRAME)
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for index in range(packets):
        payload = g711.encode_alaw(tone(frequency, index * FRAME))
        rtp = _RTP.pack(0x80, g711.PCMA | (0x80 if index == 0 else 0), index, index * FRAME, 7)
        udp_len = 8 + len(rtp) + len(payload)
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + udp_len,
            index,
            0,
            64,
            17,
            0,
            bytes([127, 0, 0, 1]),
            bytes([127, 0, 0, 1]),
        )
        udp = struct.pack("!HHHH", 40000, 40002, udp_len, 0)
        frame = bytes(12) + b"\x08\x00" + ip + udp + rtp + payload
        usec = index * 20000
        out.append(
            struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(frame), len(frame))
        )
        out.append(frame)
    path.write_bytes(b"".join(out))
    return packets


@dataclass(frozen=True, slots=True, kw_only=True)
class Received:
    at: float
    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes


class RtpPeer(asyncio.DatagramProtocol):
    """One party's RTP socket. `stream()` sends a paced tone to a known address; with
    `reply=True` it answers every packet it receives with one frame of its tone, to the sender
    (symmetric RTP), so it needs no address and keeps the sender's pace."""

    def __init__(self, *, codec: int, frequency: float, reply: bool = False) -> None:
        self.codec = codec
        self.frequency = frequency
        self.reply = reply
        self.received: list[Received] = []
        self.sent = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._ssrc = 0x1234_0000 + int(frequency)
        self._task: asyncio.Task[None] | None = None

    async def open(self, port: int) -> RtpPeer:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(HOST, port))
        self._transport = transport
        return self

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12 or 192 <= data[1] <= 223:
            return  # RTCP (or garbage): not audio
        _, second, sequence, timestamp, ssrc = _RTP.unpack_from(data)
        self.received.append(
            Received(
                at=time.monotonic(),
                payload_type=second & 0x7F,
                marker=bool(second & 0x80),
                sequence=sequence,
                timestamp=timestamp,
                ssrc=ssrc,
                payload=data[12:],
            )
        )
        if self.reply and second & 0x7F != TELEPHONE_EVENT:
            self._send(addr)

    def _send(self, addr: tuple[str, int]) -> None:
        assert self._transport is not None
        samples = tone(self.frequency, self.sent * FRAME)
        header = _RTP.pack(0x80, self.codec, self.sent & 0xFFFF, self.sent * FRAME, self._ssrc)
        self._transport.sendto(header + g711.encode(self.codec, samples), addr)
        self.sent += 1

    def stream(self, addr: tuple[str, int]) -> None:
        async def run() -> None:
            due = time.monotonic()
            while True:
                self._send(addr)
                due += FRAME / RATE
                await asyncio.sleep(max(0.0, due - time.monotonic()))

        self._task = asyncio.get_running_loop().create_task(run())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._transport is not None:
            self._transport.close()

    def audio(self, payload_type: int) -> list[Received]:
        return [p for p in self.received if p.payload_type == payload_type]

    def heard(self, packets: list[Received]) -> float:
        """Main frequency of the packets' payloads decoded by their own payload type."""
        samples = np.concatenate([g711.decode(p.payload_type, p.payload) for p in packets])
        return peak_frequency(samples)

    async def wait_packets(self, count: int, *, within: float, what: str) -> None:
        await wait_until(lambda: len(self.received) >= count, within=within, what=what)


async def rtp_peer(ports: PortAllocator, **kwargs: Any) -> tuple[RtpPeer, int]:
    port = ports.block(2, align=2)
    return await RtpPeer(**kwargs).open(port), port


def call_of(service: BridgeUnderTest, call_id: str) -> Call:
    assert service.engine is not None
    return service.engine.core.calls[call_id]


def endpoint(call: Call, leg_id: str) -> MediaEndpoint:
    media = call.legs[leg_id].media
    assert isinstance(media, MediaEndpoint), media
    return media


async def caller_streaming(
    service: BridgeUnderTest, calls: CallWatcher, caller_rtp: RtpPeer
) -> tuple[str, Call]:
    """Once the call is answered, the caller's phone streams to the bridge's port for it."""
    call_id = await calls.answered()
    call = call_of(service, call_id)
    caller_media = endpoint(call, call.caller_leg)
    caller_rtp.stream((caller_media.host, caller_media.port))
    return call_id, call


# -- 1. PCMA streamed by SIPp, echoed by SIPp -------------------------------------------------


async def test_pcma_stream_is_relayed_to_the_callee_and_its_echo_back_to_the_caller(
    bridge: BridgeFactory, sipp: Callable[..., SippRun], tmp_path: Path, ports: PortAllocator
) -> None:
    callee = sipp("uas_pcma_echo", name="echo", timeout=15, extra_args=["-rtp_echo"])
    caller = sipp_caller(
        tmp_path,
        ports,
        "uac_pcma_stream",
        name="streamer",
        duration_ms=4000,
        timeout=15,
    )
    streamed = write_pcma_pcap(caller.workdir / "pcma_tone.pcap", seconds=3.0, frequency=1000)
    service, calls = await call_through_bridge(bridge, caller, callee)
    try:
        call_id = await calls.answered()
        call = call_of(service, call_id)
        a, b = endpoint(call, call.caller_leg), endpoint(call, call.callee_leg)
        assert (a.codec, b.codec) == (g711.PCMA, g711.PCMA)
        enough = streamed // 2

        def relayed_both_ways() -> bool:
            sa, sb = a.stats.snapshot(), b.stats.snapshot()
            return (
                min(sa.packets_received, sb.packets_sent, sb.packets_received, sa.packets_sent)
                >= enough
            )

        await wait_until(relayed_both_ways, within=6, what="RTP relayed caller→callee→caller")
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{service.http_url}/api/v1/calls/{call_id}",
                headers=ADMIN_HEADERS,
            ) as resp,
        ):
            shown = (await resp.json())["call"]
        media = {leg["id"]: leg["media"] for leg in shown["legs"]}
        assert media[call.caller_leg]["packets_received"] >= enough, "stats visible on the call"
        assert media[call.caller_leg]["codec"] == g711.PCMA
        # The echo went back to where the caller streams from (latched), not into the void.
        assert a.remote is not None
        assert a.remote[0] == HOST
        assert a.stats.snapshot().packets_lost == 0
        (await caller.wait()).assert_ok(successful=1)
        (await callee.wait()).assert_ok(successful=1)
        await service.wait_idle()
        assert service.engine is not None
        assert service.engine.media.relay is not None
        assert service.engine.media.relay.counters.untranscodable == 0
    finally:
        caller.kill()


# -- 2. A-law caller, μ-law callee, on the first call -------------------------------------------


async def test_alaw_caller_reaches_a_ulaw_callee_transcoded(
    bridge: BridgeFactory, sipp: Callable[..., SippRun], tmp_path: Path, ports: PortAllocator
) -> None:
    caller_rtp, caller_port = await rtp_peer(ports, codec=g711.PCMA, frequency=1000)
    callee_rtp, callee_port = await rtp_peer(ports, codec=g711.PCMU, frequency=1600, reply=True)
    callee = answer_at_port(sipp, "ulaw-callee", callee_port, g711.PCMU, timeout=15)
    caller = caller_at_port(tmp_path, ports, caller_port, duration_ms=2500, timeout=15)
    service, calls = await call_through_bridge(bridge, caller, callee)
    try:
        await caller_streaming(service, calls, caller_rtp)
        await caller_rtp.wait_packets(50, within=5, what="caller hears the callee")
        assert {p.payload_type for p in caller_rtp.received} == {g711.PCMA}
        assert caller_rtp.heard(caller_rtp.received[-40:]) == pytest.approx(1600, abs=25)
        assert {p.payload_type for p in callee_rtp.received} == {g711.PCMU}
        assert callee_rtp.heard(callee_rtp.received[-40:]) == pytest.approx(1000, abs=25)
        (await caller.wait()).assert_ok(successful=1)
    finally:
        caller.kill()
        caller_rtp.close()
        callee_rtp.close()


# -- 2 and 4. A-law caller transferred to a μ-law target --------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferMedia:
    caller: RtpPeer
    agent: RtpPeer
    target: RtpPeer
    transferred_at: float
    caller_codec: int
    target_codec: int


async def transfer_to_ulaw_target(
    bridge: BridgeFactory, sipp: Callable[..., SippRun], tmp_path: Path, ports: PortAllocator
) -> TransferMedia:
    """Caller (A-law, 1 kHz) talks to an agent (A-law, 400 Hz); the agent's desk transfers it by
    API to a target that answers only μ-law (1600 Hz). Returns what each party received."""
    caller_rtp, caller_port = await rtp_peer(ports, codec=g711.PCMA, frequency=1000)
    agent_rtp, agent_port = await rtp_peer(ports, codec=g711.PCMA, frequency=400, reply=True)
    target_rtp, target_port = await rtp_peer(ports, codec=g711.PCMU, frequency=1600, reply=True)
    agent = answer_at_port(sipp, "agent", agent_port, g711.PCMA, timeout=15)
    target = answer_at_port(sipp, "target", target_port, g711.PCMU, timeout=15)
    caller = caller_at_port(tmp_path, ports, caller_port, duration_ms=4500, timeout=15)
    service, calls = await call_through_bridge(
        bridge, caller, agent, target, extra_plan=TARGET_PLATFORM.format(port=target.port)
    )
    try:
        call_id, call = await caller_streaming(service, calls, caller_rtp)
        caller_codec = endpoint(call, call.caller_leg).codec
        await wait_until(
            lambda: len(agent_rtp.received) >= 40 and len(caller_rtp.received) >= 40,
            within=5,
            what="caller and agent hear each other",
        )
        # Taken before asking: the target may answer (and the swap happen) before the reply.
        transferred_at = time.monotonic()
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{service.http_url}/api/v1/calls/{call_id}/transfer",
                json={"target": "12313", "mode": "blind", "ticket": TICKET},
                headers=ADMIN_HEADERS,
            ) as resp,
        ):
            assert resp.status == 202, await resp.text()
        await target_rtp.wait_packets(40, within=5, what="target hears the caller")
        target_codec = endpoint(call, call.callee_leg).codec
        (await agent.wait()).assert_ok(successful=1)
        (await caller.wait()).assert_ok(successful=1)
        (await target.wait()).assert_ok(successful=1)
        await service.wait_idle()
        return TransferMedia(
            caller=caller_rtp,
            agent=agent_rtp,
            target=target_rtp,
            transferred_at=transferred_at,
            caller_codec=caller_codec,
            target_codec=target_codec,
        )
    finally:
        caller.kill()
        for peer in (caller_rtp, agent_rtp, target_rtp):
            peer.close()


async def test_alaw_caller_and_ulaw_target_hear_each_other_transcoded(
    bridge: BridgeFactory, sipp: Callable[..., SippRun], tmp_path: Path, ports: PortAllocator
) -> None:
    media = await transfer_to_ulaw_target(bridge, sipp, tmp_path, ports)
    assert (media.caller_codec, media.target_codec) == (g711.PCMA, g711.PCMU)
    # The target gets only μ-law, and in it the caller's 1 kHz tone.
    assert {p.payload_type for p in media.target.received} == {g711.PCMU}
    assert media.target.heard(media.target.received) == pytest.approx(1000, abs=25)
    # The caller gets only A-law: the agent's 400 Hz, then the target's 1600 Hz.
    assert {p.payload_type for p in media.caller.received} == {g711.PCMA}
    before = [p for p in media.caller.received if p.at < media.transferred_at]
    after = media.caller.received[-40:]
    assert media.caller.heard(before[-40:]) == pytest.approx(400, abs=25)
    assert media.caller.heard(after) == pytest.approx(1600, abs=25)
    # The agent heard the caller's tone, A-law as it asked.
    assert media.agent.heard(media.agent.audio(g711.PCMA)) == pytest.approx(1000, abs=25)


async def test_leg_swap_keeps_one_gapless_stream_toward_the_caller(
    bridge: BridgeFactory, sipp: Callable[..., SippRun], tmp_path: Path, ports: PortAllocator
) -> None:
    media = await transfer_to_ulaw_target(bridge, sipp, tmp_path, ports)
    stream = media.caller.received
    assert len({p.ssrc for p in stream}) == 1, "one SSRC across the swap"
    steps = [(b.sequence - a.sequence) % 65536 for a, b in itertools.pairwise(stream)]
    assert set(steps) == {1}, "sequence numbers continue across the swap"
    for a, b in itertools.pairwise(stream):
        advance = (b.timestamp - a.timestamp) % 2**32
        if b.marker:
            assert advance >= FRAME  # the new source starts at least one frame later
        else:
            assert advance == FRAME
    # The swap: the first packet of the target's tone carries the marker bit and arrives
    # within a few packet times of the agent's last.
    swap = next(i for i, p in enumerate(stream) if p.at >= media.transferred_at and p.marker)
    assert media.caller.heard([stream[swap]]) == pytest.approx(1600, abs=60)
    gap = stream[swap].at - stream[swap - 1].at
    assert gap < 0.1, f"caller heard nothing for {gap * 1000:.0f} ms at the swap"


@pytest.mark.parametrize("target_scenario", ["uas_busy", "unreachable"])
async def test_failed_transfer_leaves_the_caller_talking_with_the_agent(
    bridge: BridgeFactory,
    sipp: Callable[..., SippRun],
    tmp_path: Path,
    ports: PortAllocator,
    target_scenario: str,
) -> None:
    """Busy or unreachable 110: the caller is never lost; caller and agent still hear each
    other after the failure, and the ticket says why."""
    caller_rtp, caller_port = await rtp_peer(ports, codec=g711.PCMA, frequency=1000)
    agent_rtp, agent_port = await rtp_peer(ports, codec=g711.PCMA, frequency=400, reply=True)
    agent = answer_at_port(sipp, "agent", agent_port, g711.PCMA, timeout=20)
    busy = target_scenario == "uas_busy"
    targets = [sipp("uas_busy", name="busy-110", timeout=20)] if busy else []
    target_port = targets[0].port if targets else ports.port()  # nothing listens there
    caller = caller_at_port(tmp_path, ports, caller_port, duration_ms=7000, timeout=20)
    service, calls = await call_through_bridge(
        bridge,
        caller,
        agent,
        *targets,
        extra_plan=TARGET_PLATFORM.format(port=target_port),
        t1_ms=50,  # an unreachable target gives up after 64*T1 = 3.2 s
    )
    try:
        call_id, _ = await caller_streaming(service, calls, caller_rtp)
        await agent_rtp.wait_packets(20, within=5, what="the agent hears the caller")
        assert service.service is not None
        live = service.service.hub.subscribe(everything=True)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{service.http_url}/api/v1/calls/{call_id}/transfer",
                json={"target": "12313", "mode": "blind", "ticket": TICKET},
                headers=ADMIN_HEADERS,
            ) as resp,
        ):
            assert resp.status == 202, await resp.text()

        async def failed() -> dict[str, Any]:
            while True:
                message = (await live.get()).event
                if message.get("type") == "ticket" and message.get("kind") == "failed":
                    return dict(message["ticket"])

        ticket = await asyncio.wait_for(failed(), 10)
        assert ticket["failure_reason"] == ("busy" if busy else "unreachable")
        caller_seen, agent_seen = len(caller_rtp.received), len(agent_rtp.received)
        await wait_until(
            lambda: (
                len(caller_rtp.received) >= caller_seen + 40
                and len(agent_rtp.received) >= agent_seen + 40
            ),
            within=5,
            what="caller and agent still hear each other after the failed transfer",
        )
        assert caller_rtp.heard(caller_rtp.received[-40:]) == pytest.approx(400, abs=25)
        assert agent_rtp.heard(agent_rtp.received[-40:]) == pytest.approx(1000, abs=25)
        (await caller.wait()).assert_ok(successful=1)
        (await agent.wait()).assert_ok(successful=1)
    finally:
        caller.kill()
        for peer in (caller_rtp, agent_rtp):
            peer.close()


# -- 3. The agent's DTMF stays private --------------------------------------------------------


@pytest.mark.peers("sipp", "baresip")
async def test_agent_digits_do_not_reach_the_caller(
    bridge: BridgeFactory,
    sipp: Callable[..., SippRun],
    baresip: Callable[..., Awaitable[Baresip]],
    tmp_path: Path,
    ports: PortAllocator,
) -> None:
    caller_rtp, caller_port = await rtp_peer(ports, codec=g711.PCMA, frequency=1000)
    caller = caller_at_port(
        tmp_path, ports, caller_port, service="12345", duration_ms=6000, timeout=15
    )
    service = await bridge(
        carrier_port=caller.port,
        pbx_ports=[ports.port()],
        extra_plan=seat_group_plan(["agent1001"]),
        digest_algorithms=["MD5"],
    )
    seat = await baresip(
        user="agent1001", registrar=service.sip_address, password="seat-secret-1001"
    )
    await seat.wait_event("REGISTER_OK", 5)
    calls = service.watch_calls()
    caller.remote_args(service.sip_address).start()
    try:
        call_id = await calls.answered()
        await seat.wait_event("CALL_ESTABLISHED", 10)
        call = call_of(service, call_id)
        caller_media = endpoint(call, call.caller_leg)
        caller_rtp.stream((caller_media.host, caller_media.port))
        await caller_rtp.wait_packets(25, within=5, what="caller hears the seat")
        assert service.engine is not None
        assert service.engine.media.relay is not None
        counters = service.engine.media.relay.counters
        await seat.sndcode("123")
        await wait_until(lambda: counters.digits >= 3, within=6, what="the seat's 3 digits")
        heard = len(caller_rtp.received)
        # Half a second of the seat's audio after the last digit: any leaked event is in.
        await caller_rtp.wait_packets(heard + 25, within=5, what="audio after the digits")
        assert caller_rtp.audio(TELEPHONE_EVENT) == [], "the seat's digits leaked to the caller"
        assert len(caller_rtp.audio(g711.PCMA)) >= 50
        (await caller.wait()).assert_ok(successful=1)
    finally:
        caller.kill()
        caller_rtp.close()
