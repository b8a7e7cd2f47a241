"""Media in worker processes (``[media] workers``): real worker processes, real UDP phones.

The test drives :class:`WorkerMedia` as the call core does (allocate, point, connect, ...) and
checks what the phones on 127.0.0.1 hear, and what comes back to the core (digits, lost media).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from integration.bridge_under_test import ADMIN_HEADERS, sipp_caller
from integration.media_peers import BridgeFactory, call_through_bridge
from integration.rtp_phones import HOST, Phone, rtp, stream
from integration.test_media_calls import write_pcma_pcap
from peers.ports import PortAllocator
from peers.process import wait_until
from peers.sipp import SippRun

from bridge import native
from bridge.config import MediaConfig
from bridge.media import g711
from bridge.media.dispatch import WorkerLeg
from bridge.media.dtmf import event_packets
from bridge.media.rtp import RtpPacket
from bridge.media_workers import WorkerMedia

PAIRS_PER_WORKER = 40
WAIT = 10.0


class Core:
    """What the call core hears from its media."""

    def __init__(self) -> None:
        self.digits: list[tuple[WorkerLeg, str]] = []
        self.lost: list[WorkerLeg] = []
        self.reasons: list[str] = []

    def on_digit(self, leg: WorkerLeg, digit: Any) -> None:
        self.digits.append((leg, digit.digit))

    def on_timeout(self, leg: WorkerLeg, reason: str) -> None:
        self.lost.append(leg)
        self.reasons.append(reason)


@pytest.fixture
async def core() -> Core:
    return Core()


@pytest.fixture
async def make_media(
    ports: PortAllocator, core: Core
) -> AsyncIterator[Callable[..., Awaitable[WorkerMedia]]]:
    """Starts WorkerMedia on a port block of its own; stops it and gives the block back."""
    started: list[tuple[WorkerMedia, int, int]] = []

    async def start(workers: int = 2, **config: Any) -> WorkerMedia:
        count = 2 * PAIRS_PER_WORKER * workers
        first = ports.block(count, align=2)
        media = WorkerMedia(
            MediaConfig(
                host=HOST, port_min=first, port_max=first + count, workers=workers, **config
            ),
            on_digit=core.on_digit,
            on_timeout=core.on_timeout,
        )
        started.append((media, first, count))
        await media.start()
        return media

    yield start
    for media, first, count in started:
        await media.close()  # its workers have exited: their ports are free again
        ports.release(first, count)


@pytest.fixture
async def media(make_media: Callable[..., Awaitable[WorkerMedia]]) -> WorkerMedia:
    return await make_media()


def pair(
    media: WorkerMedia, a: Phone, b: Phone, *, near: bool = True
) -> tuple[WorkerLeg, WorkerLeg]:
    first = media.allocate()
    second = media.allocate(near=first if near else None)
    media.point(first, HOST, a.port, g711.PCMA, telephone_event_pt=101)
    media.point(second, HOST, b.port, g711.PCMU, telephone_event_pt=101)
    return first, second


async def talk(phone: Phone, to: WorkerLeg, count: int, *, ssrc: int, seq: int = 100) -> None:
    """``count`` A-law packets of silence, paced as a phone sends them."""
    silence = np.zeros(160 * count, dtype=np.int16)
    await stream(phone, to, silence, payload_type=g711.PCMA, ssrc=ssrc, seq=seq, ts=160 * seq)


def audio(phone: Phone) -> list[RtpPacket]:
    return [p for _, p in phone.received if p.payload_type in (g711.PCMA, g711.PCMU)]


async def test_a_call_is_relayed_by_a_worker_process_both_ways(
    media: WorkerMedia, phones: list[Phone]
) -> None:
    caller, callee = phones[0], phones[1]
    a, b = pair(media, caller, callee)
    assert a.worker == b.worker, "the near hint keeps a call's legs in one worker"
    media.connect(a, b)
    await asyncio.gather(talk(caller, a, 10, ssrc=1), talk(callee, b, 10, ssrc=2))
    await callee.wait_until(lambda: len(audio(callee)) >= 8, WAIT)
    await caller.wait_until(lambda: len(audio(caller)) >= 8, WAIT)
    assert {p.payload_type for p in audio(callee)} == {g711.PCMU}, "transcoded for the callee"
    assert {p.payload_type for p in audio(caller)} == {g711.PCMA}
    assert os.getpid() not in media.pids
    assert len(media.pids) == 2


async def test_legs_in_two_workers_are_joined_by_moving_one_with_its_stream(
    media: WorkerMedia, phones: list[Phone]
) -> None:
    caller, _agent, target, other = phones
    a = media.allocate()
    t = media.allocate()
    assert a.worker != t.worker, "the second call went to the less loaded worker"
    o = media.allocate(near=t)
    for leg, phone in ((a, caller), (t, target), (o, other)):
        media.point(leg, HOST, phone.port, g711.PCMA, telephone_event_pt=101)
    media.connect(t, o)
    await talk(other, o, 5, ssrc=7)
    await target.wait_until(lambda: len(audio(target)) >= 4, WAIT)
    before = audio(target)

    media.connect(a, t)  # an attended transfer joins legs of two calls
    await wait_until(lambda: t.worker == a.worker, within=WAIT, what="the leg moved")
    assert media.media_figures().moves == 1
    await talk(caller, a, 10, ssrc=9)
    await target.wait_until(lambda: len(audio(target)) >= len(before) + 8, WAIT)
    after = audio(target)[len(before) :]
    assert {p.ssrc for p in after} == {before[0].ssrc}, "one stream toward the moved phone"
    assert after[0].sequence == (before[-1].sequence + 1) % 65536, "no gap in its sequence"
    assert after[0].marker, "the marker bit flags the new talker"
    await talk(target, t, 5, ssrc=11)
    await caller.wait_until(lambda: len(audio(caller)) >= 4, WAIT)


async def test_digits_detected_in_a_worker_reach_the_core_and_stay_private(
    media: WorkerMedia, phones: list[Phone], core: Core
) -> None:
    agent, caller = phones[0], phones[1]
    a, c = pair(media, agent, caller)
    media.private_keys(a)
    media.connect(a, c)
    for index, event in enumerate(event_packets("5")):
        agent.send(rtp(101, 500 + index, 8000, 3, event.to_bytes(), marker=index == 0), a)
    await talk(agent, a, 3, ssrc=3, seq=600)
    await caller.wait_until(lambda: len(audio(caller)) >= 2, WAIT)
    await wait_until(lambda: bool(core.digits), within=WAIT, what="digit reported")
    assert core.digits == [(a, "5")]
    assert not [p for _, p in caller.received if p.payload_type == 101], "no digit leaked"


async def test_a_leg_re_pointed_to_another_event_type_takes_events_under_it(
    media: WorkerMedia, phones: list[Phone], core: Core
) -> None:
    """A re-INVITE numbered the agent's telephone-event 96 (RFC 3264 §8.3.2): the worker
    detects events under 96 from it and relays them under the caller's 101."""
    agent, caller = phones[0], phones[1]
    a, c = pair(media, agent, caller)
    media.point(a, HOST, agent.port, g711.PCMA, telephone_event_pt=96)
    media.connect(a, c)
    await talk(agent, a, 3, ssrc=3, seq=400)  # heard: the worker has had every command
    await caller.wait_until(lambda: len(audio(caller)) >= 2, WAIT)
    for index, event in enumerate(event_packets("5")):
        agent.send(rtp(101, 500 + index, 8000, 3, event.to_bytes(), marker=index == 0), a)
    for index, event in enumerate(event_packets("9")):
        agent.send(rtp(96, 600 + index, 16000, 3, event.to_bytes(), marker=index == 0), a)
    await wait_until(lambda: bool(core.digits), within=WAIT, what="digit reported")
    await caller.wait_until(
        lambda: any(p.payload_type == 101 and p.payload[1] & 0x80 for _, p in caller.received),
        WAIT,
    )
    assert core.digits == [(a, "9")], "101 is no longer the agent's event type"
    events = [p for _, p in caller.received if p.payload_type not in (g711.PCMA, g711.PCMU)]
    assert {p.payload_type for p in events} == {101}
    assert {p.payload[0] for p in events} == {9}


async def test_rtp_statistics_of_worker_legs_reach_the_calls_api(
    media: WorkerMedia, phones: list[Phone]
) -> None:
    a, b = pair(media, phones[0], phones[1])
    media.connect(a, b)
    await talk(phones[0], a, 10, ssrc=5)
    await phones[1].wait_until(lambda: len(audio(phones[1])) >= 9, WAIT)
    await wait_until(
        lambda: (
            a.stats.snapshot().packets_received == 10
            and b.stats.snapshot().packets_sent == len(phones[1].received)
        ),
        within=WAIT,
        what="statistics reported by the worker",
    )


async def test_held_leg_in_a_worker_hears_the_hold_tone(
    media: WorkerMedia, phones: list[Phone]
) -> None:
    a, b = pair(media, phones[0], phones[1])
    media.connect(a, b)
    media.hold(a)
    await phones[0].wait_until(lambda: len(audio(phones[0])) >= 10, WAIT)
    assert any(any(byte not in (0xD5, 0x55) for byte in p.payload) for p in audio(phones[0]))


async def test_a_dead_worker_ends_its_legs_media_and_is_replaced(
    media: WorkerMedia, phones: list[Phone], core: Core
) -> None:
    a, b = pair(media, phones[0], phones[1])
    media.connect(a, b)
    victim = media.processes[a.worker]
    assert victim is not None
    os.kill(victim.pid, signal.SIGKILL)  # a process this test started
    await wait_until(lambda: {a, b} <= set(core.lost), within=WAIT, what="media lost reported")
    assert set(core.reasons) == {"media worker died"}
    await wait_until(
        lambda: len(media.pids) == 2 and victim.pid not in media.pids,
        within=WAIT,
        what="worker replaced",
    )
    await wait_until(lambda: all(media.dispatch.alive), within=WAIT, what="worker ready")
    assert media.media_figures().worker_restarts == 1
    c, d = pair(media, phones[2], phones[3])
    media.connect(c, d)
    await talk(phones[2], c, 5, ssrc=8)
    await phones[3].wait_until(lambda: len(audio(phones[3])) >= 4, WAIT)


async def test_a_malformed_packet_to_a_worker_leg_is_counted_in_the_bridge(
    media: WorkerMedia, phones: list[Phone]
) -> None:
    a, b = pair(media, phones[0], phones[1])
    media.connect(a, b)
    before = media.media_figures()
    assert before.legs == 2
    assert before.legs_per_worker[a.worker] == 2
    assert before.workers_alive == 2
    assert before.ports_ready > 0
    assert before.counters.get("malformed", 0) == 0
    phones[0].send(b"\x00" * 20, a)  # RTP version 0: no RTP packet at all
    phones[0].send(b"\x80\x08", a)  # shorter than an RTP header
    await wait_until(
        lambda: media.media_figures().counters.get("malformed", 0) == 2,
        within=WAIT,
        what="the worker's counters reported",
    )
    await talk(phones[0], a, 3, ssrc=4)
    await phones[1].wait_until(lambda: len(audio(phones[1])) >= 2, WAIT)
    assert media.media_figures().counters["malformed"] == 2, "good packets are not counted"


async def test_a_silent_phone_in_a_worker_is_reported_as_a_media_timeout(
    make_media: Callable[..., Any], phones: list[Phone], core: Core
) -> None:
    media: WorkerMedia = await make_media(workers=1, timeout_s=1)
    try:
        a, b = pair(media, phones[0], phones[1])
        media.connect(a, b)
        await wait_until(lambda: {a, b} <= set(core.lost), within=WAIT, what="media timeout")
        assert set(core.reasons) == {"media timeout"}
    finally:
        await media.close()


async def test_released_ports_are_used_again_and_close_stops_every_worker(
    make_media: Callable[..., Any],
) -> None:
    media: WorkerMedia = await make_media(workers=2)
    pids = media.pids
    for _ in range(3 * PAIRS_PER_WORKER):
        leg = media.allocate()
        media.release(leg)
        if not any(media.dispatch.ready):
            await wait_until(lambda: any(media.dispatch.ready), within=WAIT, what="ports back")
    await media.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def scrape(url: str) -> dict[str, float]:
    """The bridge_media_ samples of ``GET /metrics`` (no token: Prometheus scrapes it as is),
    and whether the call core runs compiled."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("bridge_media_", "bridge_call_core_compiled ")):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


@pytest.mark.parametrize("workers", [0, 2])
async def test_metrics_of_a_running_bridge_show_its_media(
    bridge: BridgeFactory, ports: PortAllocator, phones: list[Phone], workers: int
) -> None:
    service = await bridge(
        carrier_port=ports.port(),
        pbx_ports=[ports.port()],
        media_extra=f"workers = {workers}",
        media_ports=128,
    )
    assert service.engine is not None
    media = service.engine.media
    leg = media.allocate()
    samples = await scrape(service.http_url)
    assert samples["bridge_media_legs"] == 1
    assert samples['bridge_media_packets_dropped_total{reason="malformed"}'] == 0
    assert samples["bridge_media_dtmf_digits_total"] == 0
    assert samples["bridge_call_core_compiled"] == (native.status() == "compiled")
    if workers:
        assert samples["bridge_media_workers_alive"] == 2
        assert isinstance(leg, WorkerLeg)
        assert samples[f'bridge_media_worker_legs{{worker="{leg.worker}"}}'] == 1
        assert samples[f'bridge_media_worker_legs{{worker="{1 - leg.worker}"}}'] == 0
        assert samples["bridge_media_ports_ready"] > 0
        assert samples["bridge_media_worker_restarts_total"] == 0
        assert samples["bridge_media_leg_moves_total"] == 0
    else:
        assert not [name for name in samples if "worker" in name]
    phones[0].send(b"\x00" * 20, leg)
    await wait_until(
        lambda: media.media_figures().counters.get("malformed", 0) == 1,
        within=WAIT,
        what="the malformed packet counted",
    )
    media.release(leg)
    samples = await scrape(service.http_url)
    assert samples['bridge_media_packets_dropped_total{reason="malformed"}'] == 1
    assert samples["bridge_media_legs"] == 0


@pytest.mark.peers("sipp")
async def test_a_bridge_with_media_workers_carries_a_calls_audio_and_shows_its_figures(
    bridge: BridgeFactory, sipp: Callable[..., SippRun], tmp_path: Path, ports: PortAllocator
) -> None:
    callee = sipp("uas_pcma_echo", name="echo", timeout=15, extra_args=["-rtp_echo"])
    caller = sipp_caller(
        tmp_path, ports, "uac_pcma_stream", name="streamer", duration_ms=4000, timeout=15
    )
    streamed = write_pcma_pcap(caller.workdir / "pcma_tone.pcap", seconds=3.0, frequency=1000)
    service, calls = await call_through_bridge(
        bridge, caller, callee, media_extra="workers = 2", media_ports=128
    )
    try:
        call_id = await calls.answered()
        assert service.engine is not None
        media = service.engine.media
        assert isinstance(media, WorkerMedia)
        call = service.engine.core.calls[call_id]
        legs = [call.legs[call.caller_leg].media, call.legs[call.callee_leg].media]
        assert all(isinstance(leg, WorkerLeg) for leg in legs)
        assert len({leg.worker for leg in legs}) == 1, "a call's legs share a worker"
        enough = streamed // 2

        async def shown() -> dict[str, Any]:
            async with (
                aiohttp.ClientSession() as session,
                session.get(
                    f"{service.http_url}/api/v1/calls/{call_id}", headers=ADMIN_HEADERS
                ) as resp,
            ):
                body: dict[str, Any] = (await resp.json())["call"]
            return {leg["id"]: leg.get("media", {}) for leg in body["legs"]}

        def relayed_both_ways() -> bool:
            figures = [leg.stats.snapshot() for leg in legs]  # as the workers reported them
            return (
                min(*(f.packets_received for f in figures), *(f.packets_sent for f in figures))
                >= enough
            )

        await wait_until(relayed_both_ways, within=8, what="audio relayed both ways by workers")
        figures = await shown()
        for leg_id in (call.caller_leg, call.callee_leg):
            assert figures[leg_id]["packets_received"] >= enough, "figures on the calls API"
            assert figures[leg_id]["packets_sent"] >= enough
        samples = await scrape(service.http_url)
        assert samples["bridge_media_legs"] == 2, "the call's two legs on /metrics"
        assert samples["bridge_media_workers_alive"] == 2
        (await caller.wait()).assert_ok(successful=1)
        (await callee.wait()).assert_ok(successful=1)
        await service.wait_idle()
        assert not media.dispatch.legs, "every leg released"
    finally:
        caller.kill()
