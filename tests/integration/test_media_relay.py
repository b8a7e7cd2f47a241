"""The media relay over real UDP sockets on 127.0.0.1, with Python sockets as the phones.

Each "phone" is a plain datagram socket that sends RTP the way a phone would and records what
it receives; the relay under test sits between them exactly as in a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from integration.rtp_phones import (
    HOST,
    RATE,
    TIMEOUT,
    Phone,
    decode_all,
    peak_frequency,
    rtp,
    sine,
    stream,
)
from peers.process import wait_until

from bridge.media import g711
from bridge.media.dtmf import DtmfDetector, DtmfDigit, TelephoneEvent, event_packets
from bridge.media.mixer import MixMode
from bridge.media.relay import MediaEndpoint, MediaRelay, PortPoolExhaustedError
from bridge.media.rtp import (
    OtherRtcp,
    ReceiverReport,
    ReportBlock,
    RtpPacket,
    parse_rtcp,
    parse_rtp,
    serialize_rtcp,
)
from bridge.media.tone import ToneSource


@pytest.fixture
async def relay() -> AsyncIterator[MediaRelay]:
    base = random.randrange(42000, 58000, 2)
    media = MediaRelay(HOST, base, base + 200)
    yield media
    media.close()


async def legs(relay: MediaRelay, phones: list[Phone], *codecs: int) -> list[MediaEndpoint]:
    endpoints = []
    for phone, codec in zip(phones, codecs, strict=False):
        endpoint = relay.allocate(codec=codec)
        endpoint.set_remote(HOST, phone.port)
        endpoints.append(endpoint)
    return endpoints


async def test_alaw_caller_reaches_ulaw_seat_transcoded(
    relay: MediaRelay, phones: list[Phone]
) -> None:
    caller, seat = phones[:2]
    trunk_leg, seat_leg = await legs(relay, phones, g711.PCMA, g711.PCMU)
    relay.connect(trunk_leg, seat_leg)
    tone = sine(700.0, 0.5)
    await stream(caller, trunk_leg, tone, payload_type=g711.PCMA, ssrc=0xA1, paced=False)
    await seat.wait_for_packets(25)
    packets = [p for _, p in seat.received]
    assert {p.payload_type for p in packets} == {g711.PCMU}
    assert len({p.ssrc for p in packets}) == 1
    assert [p.sequence for p in packets] == [(packets[0].sequence + i) % 65536 for i in range(25)]
    heard = decode_all(packets)
    assert peak_frequency(heard) == pytest.approx(700.0, abs=10)
    # Transcoding by table is as good as decoding A-law and re-encoding μ-law.
    expected = g711.decode_ulaw(g711.alaw_to_ulaw(g711.encode_alaw(tone)))
    assert np.array_equal(heard, expected)
    # And the other way: the seat's μ-law reaches the caller as A-law.
    await stream(seat, seat_leg, sine(1200.0, 0.2), payload_type=g711.PCMU, ssrc=0xB2, paced=False)
    await caller.wait_for_packets(10)
    back = [p for _, p in caller.received]
    assert {p.payload_type for p in back} == {g711.PCMA}
    assert peak_frequency(decode_all(back)) == pytest.approx(1200.0, abs=10)
    stats = trunk_leg.stats.snapshot()
    assert (stats.packets_received, stats.packets_lost) == (25, 0)
    assert seat_leg.stats.snapshot().packets_sent == 25


async def test_media_latches_to_where_the_phone_really_sends_from(
    relay: MediaRelay, phones: list[Phone]
) -> None:
    caller, seat, stranger = phones[:3]
    trunk_leg, seat_leg = await legs(relay, phones, g711.PCMU, g711.PCMU)
    seat_leg.set_remote(HOST, 9)  # the SDP named a port nobody listens on (NAT)
    relay.connect(trunk_leg, seat_leg)
    seat.send(rtp(0, 1, 0, 0x5EA7, b"\xff" * 160), seat_leg)
    caller.send(rtp(0, 1, 0, 0xCA11, b"\xff" * 160), trunk_leg)
    await seat.wait_for_packets(1)
    assert seat_leg.remote == (HOST, seat.port)
    # Once latched, the leg is locked to the seat: another sender is dropped by the kernel.
    assert seat_leg.locked
    stranger.send(rtp(0, 7, 0, 0xBAD, b"\x00" * 160), seat_leg)
    seat.send(rtp(0, 2, 160, 0x5EA7, b"\xff" * 160), seat_leg)
    await caller.wait_for_packets(2)
    assert caller.received[0][1].ssrc == trunk_leg.out.ssrc
    assert {p.payload for _, p in caller.received} == {b"\xff" * 160}
    assert seat_leg.remote == (HOST, seat.port)
    assert relay.counters.foreign_source == 0, "the stranger never reached the relay"
    assert len(caller.received) == 2


async def test_a_stranger_cannot_take_over_media_from_the_sdp_address(
    relay: MediaRelay, phones: list[Phone]
) -> None:
    caller, seat, stranger = phones[:3]
    trunk_leg, seat_leg = await legs(relay, phones, g711.PCMU, g711.PCMU)
    relay.connect(trunk_leg, seat_leg)
    # The seat sends from exactly the address its SDP gave: that latches too.
    seat.send(rtp(0, 1, 0, 0x5EA7, b"\xff" * 160), seat_leg)
    stranger.send(rtp(0, 9, 0, 0xBAD, b"\x00" * 160), seat_leg)
    stranger.send(rtp(99, 9, 0, 0xBAD, b"\x00" * 160), seat_leg)  # junk latches nothing
    seat.send(rtp(0, 2, 160, 0x5EA7, b"\xff" * 160), seat_leg)
    await caller.wait_for_packets(2)
    assert {p.payload for _, p in caller.received} == {b"\xff" * 160}
    assert seat_leg.remote == (HOST, seat.port)
    assert relay.counters.foreign_source == 1
    assert relay.counters.relatched == 0


async def keep_sending(
    phone: Phone,
    to: MediaEndpoint,
    ssrc: int,
    until: Callable[[], bool],
    *,
    first_seq: int,
    within: float = TIMEOUT,
) -> None:
    """Send a 20 ms packet after another, as a talking phone does, until ``until()`` holds."""
    deadline = time.monotonic() + within
    seq = first_seq
    while not until():
        if time.monotonic() > deadline:
            raise TimeoutError("the relay did not follow the phone in time")
        phone.send(rtp(0, seq, 160 * seq, ssrc, b"\xff" * 160), to)
        seq += 1
        await asyncio.sleep(0.02)


async def test_media_follows_a_nat_rebinding_and_a_restarted_phone(
    relay: MediaRelay, phones: list[Phone]
) -> None:
    caller, seat, seat_moved, seat_restarted = phones
    relay.relatch_after = 0.2
    trunk_leg, seat_leg = await legs(relay, phones, g711.PCMU, g711.PCMU)
    relay.connect(trunk_leg, seat_leg)
    seat.send(rtp(0, 1, 0, 0x5EA7, b"\xff" * 160), seat_leg)
    await caller.wait_for_packets(1)
    assert seat_leg.locked
    # Same SSRC from a new port: the NAT in front of the seat changed its mapping. The old
    # mapping falls quiet, the sweep unlocks the leg, and the moved seat is heard.
    await keep_sending(
        seat_moved,
        seat_leg,
        0x5EA7,
        lambda: seat_leg.remote == (HOST, seat_moved.port),
        first_seq=2,
    )
    caller.send(rtp(0, 1, 0, 0xCA11, b"\xff" * 160), trunk_leg)
    await seat_moved.wait_for_packets(1)
    heard = len(caller.received)
    # A new SSRC from elsewhere (the phone restarted) is believed once the latched source
    # has gone quiet, too.
    await keep_sending(
        seat_restarted,
        seat_leg,
        0x0BE1,
        lambda: seat_leg.remote == (HOST, seat_restarted.port),
        first_seq=500,
    )
    await caller.wait_for_packets(heard + 1)
    assert relay.counters.relatched == 2
    assert len(seat.received) == 0


async def test_a_host_name_in_the_sdp_is_not_looked_up_the_phone_is_latched(
    relay: MediaRelay, phones: list[Phone]
) -> None:
    caller, seat = phones[:2]
    trunk_leg, seat_leg = await legs(relay, phones, g711.PCMU, g711.PCMU)
    seat_leg.set_remote("seat.invalid", seat.port)  # c=IN IP4 <FQDN>: no resolver call
    assert seat_leg.remote is None
    relay.connect(trunk_leg, seat_leg)
    caller.send(rtp(0, 1, 0, 0xCA11, b"\xff" * 160), trunk_leg)  # nowhere to send it yet
    seat.send(rtp(0, 1, 0, 0x5EA7, b"\xff" * 160), seat_leg)
    await caller.wait_for_packets(1)
    caller.send(rtp(0, 2, 160, 0xCA11, b"\xff" * 160), trunk_leg)
    await seat.wait_for_packets(1)
    assert seat_leg.remote == (HOST, seat.port)
    assert relay.counters.no_remote == 1


async def test_a_new_sdp_address_unlocks_the_leg(relay: MediaRelay, phones: list[Phone]) -> None:
    caller, seat, seat_elsewhere = phones[:3]
    trunk_leg, seat_leg = await legs(relay, phones, g711.PCMU, g711.PCMU)
    relay.connect(trunk_leg, seat_leg)
    seat.send(rtp(0, 1, 0, 0x5EA7, b"\xff" * 160), seat_leg)
    await caller.wait_for_packets(1)
    assert seat_leg.locked
    # A re-INVITE moved the seat's media: the new address is heard at once, no quiet wait.
    seat_leg.set_remote(HOST, seat_elsewhere.port)
    assert not seat_leg.locked
    seat_elsewhere.send(rtp(0, 2, 160, 0x5EA7, b"\xff" * 160), seat_leg)
    await caller.wait_for_packets(2)
    caller.send(rtp(0, 1, 0, 0xCA11, b"\xff" * 160), trunk_leg)
    await seat_elsewhere.wait_for_packets(1)
    assert seat_leg.locked
    assert len(seat.received) == 0


async def test_leg_swap_keeps_one_continuous_stream(relay: MediaRelay, phones: list[Phone]) -> None:
    caller, agent, officer = phones[:3]
    caller_leg, agent_leg, officer_leg = await legs(relay, phones, g711.PCMA, g711.PCMA, g711.PCMU)
    relay.connect(caller_leg, agent_leg)
    agent_audio = g711.encode_alaw(sine(500.0, 1.2))
    officer_audio = g711.encode_ulaw(sine(1500.0, 1.2))
    start = time.monotonic()
    for n in range(60):
        # Both far legs talk all the time, as answered calls do; the officer's is dropped
        # until the swap, then the agent's.
        agent.send(
            rtp(8, 50000 + n, 777 + 160 * n, 0xA6E, agent_audio[160 * n : 160 * n + 160]), agent_leg
        )
        officer.send(
            rtp(0, 9 + n, 123456 + 160 * n, 0x0FF, officer_audio[160 * n : 160 * n + 160]),
            officer_leg,
        )
        if n == 30:
            relay.connect(caller_leg, officer_leg)
        await asyncio.sleep(max(0.0, start + 0.02 * (n + 1) - time.monotonic()))
    await caller.wait_for_packets(58)
    packets = [p for _, p in caller.received]
    assert len({p.ssrc for p in packets}) == 1
    seqs = [p.sequence for p in packets]
    assert seqs == [(seqs[0] + i) % 65536 for i in range(len(seqs))]
    markers = [i for i, p in enumerate(packets) if p.marker]
    assert markers[0] == 0  # the first packet, then the swap
    assert len(markers) == 2
    switch = markers[1]
    steps = np.diff([p.timestamp for p in packets])
    # One timestamp step at the swap, no longer than two packets' worth: at most one missing.
    assert 160 <= steps[switch - 1] <= 320
    assert (np.delete(steps, switch - 1) == 160).all()
    before, after = decode_all(packets[:switch]), decode_all(packets[switch:])
    assert peak_frequency(before) == pytest.approx(500.0, abs=10)
    assert peak_frequency(after) == pytest.approx(1500.0, abs=10)
    assert agent_leg.peer is None
    assert len(agent.received) == 0  # the caller was silent


async def test_port_pool_runs_out_and_refills(phones: list[Phone]) -> None:
    base = random.randrange(42000, 58000, 2)
    relay = MediaRelay(HOST, base, base + 5)  # pairs at base, base+2, base+4
    try:
        taken = [relay.allocate() for _ in range(3)]
        assert sorted(e.port for e in taken) == [base, base + 2, base + 4]
        with pytest.raises(PortPoolExhaustedError):
            relay.allocate()
        relay.release(taken[1])
        relay.release(taken[1])  # twice is harmless
        again = relay.allocate()
        assert again.port == base + 2
        # The released socket is really closed: someone else can bind it now.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            relay.release(again)
            probe.bind((HOST, base + 2))
            # A port held by another program is skipped, not fatal.
            relay.release(taken[0])
            other = relay.allocate()
            assert other.port == base
    finally:
        relay.close()
    assert relay.pool.in_use == 0


async def test_allocate_and_release_take_effect_at_once(
    relay: MediaRelay, phones: list[Phone]
) -> None:
    # The sans-IO call core allocates while handling a SIP message and cannot await.
    caller, seat = phones[:2]
    trunk_leg = relay.allocate(codec=g711.PCMA)
    seat_leg = relay.allocate(codec=g711.PCMA)
    seat_leg.set_remote(HOST, seat.port)
    relay.connect(trunk_leg, seat_leg)
    caller.send(rtp(8, 1, 0, 0xCA, b"\xd5" * 160), trunk_leg)
    await seat.wait_for_packets(1)
    free = relay.pool.free
    early = relay.allocate()
    relay.release(early)
    assert relay.pool.free == free
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, early.port))


async def test_ports_come_back_however_the_call_ends(
    relay: MediaRelay, phones: list[Phone]
) -> None:
    free = relay.pool.free
    a, b = await legs(relay, phones, g711.PCMU, g711.PCMU)
    c = relay.allocate()
    relay.connect(a, b)
    conf = relay.conference([b, c])
    relay.play_hold(a, ToneSource())
    assert relay.pool.free == free - 3
    relay.release(a)
    relay.release(b)  # released from inside a conference
    assert c in conf.members
    assert b not in conf.members
    relay.close()  # shutdown takes the rest
    assert relay.pool.free == free
    with pytest.raises(ValueError, match="released"):
        relay.connect(a, c)


async def test_feature_code_digits_are_detected_and_not_leaked(
    relay: MediaRelay, phones: list[Phone]
) -> None:
    agent, caller = phones[:2]
    digits: list[tuple[MediaEndpoint, DtmfDigit]] = []
    relay.on_digit = lambda endpoint, digit: digits.append((endpoint, digit))
    agent_leg, caller_leg = await legs(relay, phones, g711.PCMU, g711.PCMA)
    agent_leg.swallow_dtmf = True
    relay.connect(agent_leg, caller_leg)
    seq = 100
    for index, digit in enumerate("*12#"):
        start = 8000 * (index + 1)
        for n, event in enumerate(event_packets(digit)):
            agent.send(rtp(101, seq, start, 0xA6, event.to_bytes(), marker=n == 0), agent_leg)
            seq += 1
    agent.send(rtp(0, seq, 50000, 0xA6, b"\xff" * 160), agent_leg)
    await caller.wait_for_packets(1)
    assert "".join(d.digit for _, d in digits) == "*12#"
    assert all(endpoint is agent_leg for endpoint, _ in digits)
    assert [p.payload_type for _, p in caller.received] == [g711.PCMA]


async def test_digits_pass_through_with_the_event_type_renumbered(
    relay: MediaRelay, phones: list[Phone]
) -> None:
    caller, officer = phones[:2]
    caller_leg, officer_leg = await legs(relay, phones, g711.PCMA, g711.PCMA)
    officer_leg.telephone_event_pt = 96
    relay.connect(caller_leg, officer_leg)
    for n, event in enumerate(event_packets("7")):
        caller.send(rtp(101, 10 + n, 4000, 0xCA, event.to_bytes(), marker=n == 0), caller_leg)
    await officer.wait_for_packets(7)
    packets = [p for _, p in officer.received]
    assert {p.payload_type for p in packets} == {96}
    detector = DtmfDetector()
    found = [
        d.digit
        for p in packets
        for d in detector.on_event_payload(
            ssrc=p.ssrc, timestamp=p.timestamp, payload=p.payload, marker=p.marker, now=0.0
        )
    ]
    assert found == ["7"]


async def test_three_party_conference_each_hears_the_other_two(
    relay: MediaRelay, phones: list[Phone]
) -> None:
    caller, agent, officer, supervisor = phones
    legs_ = await legs(relay, phones, g711.PCMA, g711.PCMU, g711.PCMA, g711.PCMU)
    agent_leg, supervisor_leg = legs_[1], legs_[3]
    relay.conference(
        legs_,
        {supervisor_leg: MixMode.WHISPER},
        whisper_to={supervisor_leg: agent_leg},
    )
    tones = {caller: 500.0, agent: 1000.0, officer: 1500.0, supervisor: 2500.0}
    codecs = {caller: 8, agent: 0, officer: 8, supervisor: 0}
    await asyncio.gather(
        *(
            stream(phone, leg, sine(tones[phone], 1.0), payload_type=codecs[phone], ssrc=i + 1)
            for i, (phone, leg) in enumerate(zip(phones, legs_, strict=True))
        )
    )
    for phone in phones:
        await phone.wait_for_packets(40)

    def hears(phone: Phone) -> set[float]:
        audio = decode_all([p for _, p in phone.received[15:45]])
        spectrum = np.abs(np.fft.rfft(audio.astype(np.float64))) / (len(audio) / 2)
        freqs = np.fft.rfftfreq(len(audio), 1 / RATE)
        return {float(f) for f in freqs[spectrum > 800.0]}

    assert hears(caller) == {1000.0, 1500.0}
    assert hears(agent) == {500.0, 1500.0, 2500.0}
    assert hears(officer) == {500.0, 1000.0}
    assert hears(supervisor) == {500.0, 1000.0, 1500.0}
    assert {p.payload_type for _, p in agent.received} == {g711.PCMU}
    assert len(relay.tick_lateness) >= 40


async def test_a_call_becoming_a_three_way_call_has_no_silent_frame(
    relay: MediaRelay, phones: list[Phone]
) -> None:
    caller, agent = phones[:2]
    caller_leg, agent_leg, officer_leg = await legs(relay, phones, g711.PCMA, g711.PCMA, g711.PCMA)
    relay.connect(caller_leg, agent_leg)
    talking = asyncio.create_task(
        stream(agent, agent_leg, sine(1000.0, 1.2), payload_type=g711.PCMA, ssrc=7)
    )
    await caller.wait_for_packets(15)
    relay.conference([caller_leg, agent_leg, officer_leg])
    joined_at = len(caller.received)
    await talking
    await caller.wait_for_packets(joined_at + 20)
    frames = [p for _, p in caller.received[joined_at - 10 : joined_at + 20]]
    assert _loudest_silence(frames) > 1000.0, "the caller heard a gap as the call was mixed"


def _loudest_silence(frames: list[RtpPacket]) -> float:
    """The quietest frame's mean level: a frame of silence in a steady tone shows as ~0."""
    return min(float(np.abs(g711.decode(p.payload_type, p.payload)).mean()) for p in frames)


async def test_a_supervisor_joining_a_conference_costs_those_talking_no_gap(
    relay: MediaRelay, phones: list[Phone]
) -> None:
    caller, agent, _, supervisor = phones
    caller_leg, agent_leg, officer_leg, supervisor_leg = await legs(
        relay, phones, g711.PCMA, g711.PCMA, g711.PCMA, g711.PCMA
    )
    conference = relay.conference(
        [caller_leg, agent_leg, officer_leg], {officer_leg: MixMode.LISTEN}
    )
    talking = asyncio.create_task(
        stream(agent, agent_leg, sine(1000.0, 1.2), payload_type=g711.PCMA, ssrc=7)
    )
    await caller.wait_for_packets(15)
    grown = relay.conference([caller_leg, agent_leg, officer_leg, supervisor_leg])
    joined_at = len(caller.received)
    await talking
    await caller.wait_for_packets(joined_at + 20)
    frames = [p for _, p in caller.received[joined_at - 10 : joined_at + 20]]
    assert _loudest_silence(frames) > 1000.0, "a silent frame where the supervisor joined"
    assert grown is conference
    assert conference.mixer.mode_of(officer_leg)[0] is MixMode.LISTEN, "modes stay as they were"
    await supervisor.wait_for_packets(10)
    assert peak_frequency(decode_all([p for _, p in supervisor.received[-10:]])) == (
        pytest.approx(1000.0, abs=10)
    )


async def test_held_party_hears_the_hold_tone(relay: MediaRelay, phones: list[Phone]) -> None:
    caller, other = phones[:2]
    caller_leg, other_leg = await legs(relay, phones, g711.PCMA, g711.PCMU)
    tone = ToneSource((450.0,), on_seconds=1.0, off_seconds=1.0)
    relay.play_hold(caller_leg, tone)
    with pytest.raises(ValueError, match="already plays"):
        relay.play_hold(other_leg, tone)  # it would play twice as fast to both
    relay.play_hold(other_leg, sine(300.0, 0.5))  # recorded samples loop for each listener
    await caller.wait_for_packets(20)
    await other.wait_for_packets(20)
    relay.stop_hold(caller_leg)
    relay.stop_hold(other_leg)
    assert peak_frequency(decode_all([p for _, p in other.received[:20]])) == pytest.approx(
        300.0, abs=10
    )
    packets = [p for _, p in caller.received[:20]]
    assert {p.payload_type for p in packets} == {g711.PCMA}
    assert peak_frequency(decode_all(packets)) == pytest.approx(450.0, abs=10)
    seqs = [p.sequence for p in packets]
    assert seqs == [(seqs[0] + i) % 65536 for i in range(20)]


async def test_resume_after_hold_gives_back_the_peer(
    relay: MediaRelay, phones: list[Phone]
) -> None:
    caller, agent = phones[:2]
    caller_leg, agent_leg = await legs(relay, phones, g711.PCMA, g711.PCMA)
    relay.connect(caller_leg, agent_leg)
    relay.play_hold(caller_leg, ToneSource())  # the agent's phone sent a sendonly re-INVITE
    await caller.wait_for_packets(5)
    relay.stop_hold(caller_leg)  # ... and now sendrecv again
    assert caller_leg.peer is agent_leg
    heard = len(caller.received)
    agent.send(rtp(8, 1, 0, 0xA6, b"\x11" * 160), agent_leg)
    caller.send(rtp(8, 1, 0, 0xCA, b"\x22" * 160), caller_leg)
    await caller.wait_until(lambda: any(p.payload == b"\x11" * 160 for _, p in caller.received))
    await agent.wait_for_packets(1)
    assert agent.received[0][1].payload == b"\x22" * 160
    assert caller.received[heard][1].marker, "the phone is told the source changed back"


async def test_resume_does_not_take_back_a_peer_that_moved_on(
    relay: MediaRelay, phones: list[Phone]
) -> None:
    caller_leg, agent_leg, officer_leg = await legs(relay, phones, g711.PCMA, g711.PCMA, g711.PCMA)
    relay.connect(caller_leg, agent_leg)
    relay.play_hold(caller_leg, ToneSource())  # an attended transfer's consultation
    relay.connect(agent_leg, officer_leg)
    relay.stop_hold(caller_leg)
    assert caller_leg.peer is None
    assert agent_leg.peer is officer_leg


async def test_resume_in_a_conference_takes_back_the_seat_and_its_mode(
    relay: MediaRelay, phones: list[Phone]
) -> None:
    caller_leg, agent_leg, supervisor_leg = await legs(
        relay, phones, g711.PCMA, g711.PCMA, g711.PCMA
    )
    conference = relay.conference(
        [caller_leg, agent_leg, supervisor_leg],
        {supervisor_leg: MixMode.WHISPER},
        whisper_to={supervisor_leg: agent_leg},
    )
    relay.play_hold(supervisor_leg, ToneSource())
    assert supervisor_leg not in conference.members
    relay.stop_hold(supervisor_leg)
    assert conference.mixer.mode_of(supervisor_leg) == (MixMode.WHISPER, agent_leg)
    # Whom it whispered to left during the hold: it comes back listening, heard by nobody.
    relay.play_hold(supervisor_leg, ToneSource())
    conference.remove(agent_leg)
    relay.stop_hold(supervisor_leg)
    assert conference.mixer.mode_of(supervisor_leg) == (MixMode.LISTEN, None)


async def test_bad_packets_are_counted_and_do_not_stop_the_relay(
    relay: MediaRelay, phones: list[Phone]
) -> None:
    caller, seat = phones[:2]
    trunk_leg, seat_leg = await legs(relay, phones, g711.PCMU, g711.PCMU)
    relay.connect(trunk_leg, seat_leg)
    caller.send(b"\x00\x01", trunk_leg)
    caller.send(b"\x40" + bytes(20), trunk_leg)  # RTP version 1
    caller.send(rtp(34, 1, 0, 0xCA, b"h263"), trunk_leg)  # a video payload type
    caller.send(rtp(101, 2, 0, 0xCA, b"\x01\x02\x03"), trunk_leg)  # truncated event
    caller.send(rtp(0, 3, 0, 0xCA, b"\xff" * 160), trunk_leg)
    await seat.wait_for_packets(1)
    assert relay.counters.malformed == 3
    assert relay.counters.unknown_payload_type == 1
    assert len(seat.received) == 1


async def test_rtcp_reports_about_our_stream_are_kept(
    relay: MediaRelay, phones: list[Phone]
) -> None:
    seat, caller = phones[:2]
    seat_leg, caller_leg = await legs(relay, phones, g711.PCMU, g711.PCMU)
    relay.connect(seat_leg, caller_leg)
    block = ReportBlock(
        ssrc=seat_leg.out.ssrc,
        fraction_lost=26,
        cumulative_lost=3,
        highest_sequence=1000,
        jitter=40,
        last_sr=0,
        delay_since_last_sr=0,
    )
    report = serialize_rtcp([ReceiverReport(ssrc=0x5EA7, reports=(block,))])
    seat.send(report, (HOST, seat_leg.rtcp_port))
    seat.send(b"\x80\xc9\x00\x09", (HOST, seat_leg.rtcp_port))  # length overruns
    # Loopback queues datagrams at once: when this packet comes out of the relay, the reports
    # sent before it have been read in the same or an earlier loop iteration.
    seat.send(rtp(0, 1, 0, 0x5EA7, b"\xff" * 160), seat_leg)
    await caller.wait_for_packets(1)
    assert seat_leg.remote_report == block
    assert relay.counters.rtcp_received == 1
    assert relay.counters.rtcp_malformed == 1
    # RTCP multiplexed on the RTP port (RFC 5761) is recognised too.
    seat.send(report, seat_leg)
    seat.send(rtp(0, 2, 160, 0x5EA7, b"\xff" * 160), seat_leg)
    await caller.wait_for_packets(2)
    assert relay.counters.rtcp_received == 2
    assert relay.counters.malformed == 0


async def test_the_bridge_sends_its_own_rtcp_reports(phones: list[Phone]) -> None:
    base = random.randrange(42000, 58000, 2)
    relay = MediaRelay(HOST, base, base + 20, rtcp_interval=0.05)
    loop = asyncio.get_running_loop()
    reports: asyncio.Queue[bytes] = asyncio.Queue()

    class RtcpSink(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            reports.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(RtcpSink, local_addr=(HOST, 0))
    try:
        seat = phones[0]
        seat_leg = relay.allocate(codec=g711.PCMU)
        seat_leg.set_remote(HOST, seat.port, rtcp_port=transport.get_extra_info("sockname")[1])
        for seq in (1, 2, 4):  # 3 is lost
            seat.send(rtp(0, seq, 160 * seq, 0x5EA7, b"\xff" * 160), seat_leg)
        first = parse_rtcp(await asyncio.wait_for(reports.get(), TIMEOUT))
        while not (isinstance(first[0], ReceiverReport) and first[0].reports):
            first = parse_rtcp(await asyncio.wait_for(reports.get(), TIMEOUT))
        report, sdes = first
        assert isinstance(report, ReceiverReport)  # we have sent nothing: RR, not SR
        assert report.ssrc == seat_leg.out.ssrc
        (block,) = report.reports
        assert (block.ssrc, block.cumulative_lost, block.highest_sequence) == (0x5EA7, 1, 4)
        assert isinstance(sdes, OtherRtcp)
        assert sdes.packet_type == 202
        assert b"bridge@127.0.0.1" in sdes.body
    finally:
        transport.close()
        relay.close()


async def test_bridge_can_play_digits_into_a_leg(relay: MediaRelay, phones: list[Phone]) -> None:
    officer = phones[0]
    (officer_leg,) = await legs(relay, phones, g711.PCMU)
    await relay.send_dtmf(officer_leg, "59", duration_ms=60, gap_ms=20)
    await officer.wait_for_packets(10)
    detector = DtmfDetector()
    found = [
        d.digit
        for _, p in officer.received
        for d in detector.on_event_payload(
            ssrc=p.ssrc, timestamp=p.timestamp, payload=p.payload, marker=p.marker, now=0.0
        )
    ]
    assert found == ["5", "9"]
    seqs = [p.sequence for _, p in officer.received]
    assert seqs == [(seqs[0] + i) % 65536 for i in range(len(seqs))]


async def test_end_packet_retransmissions_do_not_repeat_a_digit(
    relay: MediaRelay, phones: list[Phone]
) -> None:
    agent, caller = phones[:2]
    digits: list[str] = []
    relay.on_digit = lambda endpoint, digit: digits.append(digit.digit)
    agent_leg, caller_leg = await legs(relay, phones, g711.PCMU, g711.PCMU)
    relay.connect(agent_leg, caller_leg)
    end = TelephoneEvent(event=3, end=True, duration=960).to_bytes()
    for _ in range(3):  # identical copies, same sequence number, as some phones send them
        agent.send(rtp(101, 77, 16000, 0xA6, end), agent_leg)
    agent.send(rtp(0, 78, 17000, 0xA6, b"\xff" * 160), agent_leg)
    await caller.wait_for_packets(4)
    assert digits == ["3"]


async def test_a_relayed_leg_silent_past_the_media_timeout_is_reported_once(
    phones: list[Phone],
) -> None:
    """Sweeps at explicit times: a connected pair that never sends is reported once, after
    ``timeout_after`` and not before; RTCP alone keeps a leg alive; a held leg whose phone
    never sent RTCP and a leg relayed to no one are never reported; a packet starts a new
    quiet spell."""
    base = random.randrange(42000, 58000, 2)
    reported: list[MediaEndpoint] = []
    relay = MediaRelay(HOST, base, base + 20, timeout_after=30.0, on_timeout=reported.append)
    try:
        silent_a, silent_b, alone, held, rtcp_only, talking = (
            relay.allocate(codec=g711.PCMU) for _ in range(6)
        )
        for endpoint, phone in zip(
            (silent_a, silent_b, alone, held, rtcp_only, talking),
            (*phones, phones[2], phones[3]),
            strict=True,
        ):
            endpoint.set_remote(HOST, phone.port)
        relay.connect(silent_a, silent_b)
        relay.connect(alone, held)
        relay.play_hold(held, ToneSource())  # alone is left relayed to no one
        relay.connect(rtcp_only, talking)
        t0 = time.monotonic()
        # No await since the legs got their remotes: the background sweep has not started
        # their clocks, so this sweep starts them 25 s in the past.
        relay.sweep(t0 - 25, time.time())
        phones[2].send(
            serialize_rtcp([ReceiverReport(ssrc=0x1, reports=())]), (HOST, rtcp_only.rtcp_port)
        )
        phones[3].send(rtp(0, 1, 0, 0x2, b"\xff" * 160), talking)
        # Relayed to rtcp_only's phone: by then the RTCP sent before it has been read.
        await phones[2].wait_for_packets(1)
        assert rtcp_only.last_rtcp_at is not None
        assert rtcp_only.last_received_at is None
        # RTCP from another host is no sign of life of silent_a's phone.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stray:
            stray.bind(("127.0.0.2", 0))
            before = relay.counters.rtcp_received
            report = serialize_rtcp([ReceiverReport(ssrc=0x9, reports=())])
            stray.sendto(report, (HOST, silent_a.rtcp_port))
            await wait_until(
                lambda: relay.counters.rtcp_received > before, within=5, what="stray RTCP read"
            )
        assert silent_a.last_rtcp_at is None

        relay.sweep(t0 + 4, time.time())  # the silent pair: 29 s
        assert reported == []
        relay.sweep(t0 + 6, time.time())  # 31 s; the others heard from 6 s ago
        assert sorted(reported, key=id) == sorted([silent_a, silent_b], key=id)
        relay.sweep(t0 + 20, time.time())
        assert len(reported) == 2, "once per quiet spell"
        relay.sweep(t0 + 40, time.time())  # RTCP and RTP stopped 40 s ago
        assert sorted(reported[2:], key=id) == sorted([rtcp_only, talking], key=id)

        phones[0].send(rtp(0, 1, 0, 0x3, b"\xff" * 160), silent_a)
        await phones[1].wait_for_packets(1)
        relay.sweep(t0 + 80, time.time())
        assert reported[4:] == [silent_a], "a packet started a new spell; the others go on"
    finally:
        relay.close()


# -- held legs and the media timeout ---------------------------------------------------------
#
# Real time and the relay's own sweep, with the shortest timeout the config allows (1 s).

HOLD_TIMEOUT = 1.0


def receiver_report(ssrc: int) -> bytes:
    return serialize_rtcp([ReceiverReport(ssrc=ssrc, reports=())])


async def held_after_rtcp(relay: MediaRelay, phones: list[Phone], *, rtcp: bool) -> MediaEndpoint:
    """A leg relayed to phones[1] whose phone (phones[0]) talked, sent RTCP if ``rtcp``, and
    was then put on hold; phones[1]'s leg is left relayed to no one."""
    held, peer = await legs(relay, phones, g711.PCMU, g711.PCMU)
    relay.connect(held, peer)
    phones[0].send(rtp(0, 1, 0, 0x4E1D, b"\xff" * 160), held)
    await phones[1].wait_for_packets(1)
    if rtcp:
        phones[0].send(receiver_report(0x4E1D), (HOST, held.rtcp_port))
        await wait_until(lambda: held.last_rtcp_at is not None, within=TIMEOUT, what="RTCP read")
    relay.play_hold(held, ToneSource())
    return held


@contextlib.contextmanager
def relay_timing_out() -> Iterator[tuple[MediaRelay, list[MediaEndpoint]]]:
    """A relay with a HOLD_TIMEOUT media timeout and the legs it reported."""
    base = random.randrange(42000, 58000, 2)
    reported: list[MediaEndpoint] = []
    relay = MediaRelay(
        HOST, base, base + 20, timeout_after=HOLD_TIMEOUT, on_timeout=reported.append
    )
    try:
        yield relay, reported
    finally:
        relay.close()


async def silent_control_pair(
    relay: MediaRelay, phones: list[Phone]
) -> tuple[MediaEndpoint, MediaEndpoint]:
    """A connected pair on phones[2:4] that never sends: the timeout is live if it is reported."""
    a, b = await legs(relay, phones[2:], g711.PCMU, g711.PCMU)
    relay.connect(a, b)
    return a, b


async def test_a_held_leg_whose_phone_reported_by_rtcp_times_out_on_rtcp_silence(
    phones: list[Phone],
) -> None:
    """RTCP goes on during a hold (RFC 3550 §6, RFC 3264 §5.1): a phone that has sent RTCP
    and then sends nothing while held has lost power or network, and is reported once."""
    with relay_timing_out() as (relay, reported):
        held = await held_after_rtcp(relay, phones, rtcp=True)
        held_at = time.monotonic()
        await wait_until(lambda: bool(reported), within=TIMEOUT, what="held leg reported")
        assert time.monotonic() - held_at >= HOLD_TIMEOUT
        assert reported == [held]
        for _ in range(2):  # the relay's next sweeps, run now
            relay.sweep(time.monotonic(), time.time())
        assert reported == [held], "once per quiet spell"


async def test_a_held_leg_whose_phone_never_sent_rtcp_is_not_reported(
    phones: list[Phone],
) -> None:
    """A trunk or gateway that sends no RTCP stops RTP when held (RFC 3264 §8.4): its silence
    cannot be told from policy, so it stays exempt while a silent relayed pair is reported."""
    with relay_timing_out() as (relay, reported):
        held = await held_after_rtcp(relay, phones, rtcp=False)
        control = await silent_control_pair(relay, phones)
        # The held leg went quiet first: whatever would report it has run once the pair set
        # up after it is reported; one more sweep, run now, makes sure.
        await wait_until(lambda: len(reported) >= 2, within=TIMEOUT, what="silent pair reported")
        relay.sweep(time.monotonic(), time.time())
        assert held.last_rtcp_at is None
        assert sorted(reported, key=id) == sorted(control, key=id)


async def test_a_held_leg_that_keeps_sending_rtcp_without_rtp_is_not_reported(
    phones: list[Phone],
) -> None:
    """A held phone that sends no RTP (recvonly, inactive) but keeps reporting is alive."""
    with relay_timing_out() as (relay, reported):
        held = await held_after_rtcp(relay, phones, rtcp=True)
        control = await silent_control_pair(relay, phones)
        rtp_before = held.last_received_at
        deadline = time.monotonic() + 2.5 * HOLD_TIMEOUT
        while time.monotonic() < deadline:
            phones[0].send(receiver_report(0x4E1D), (HOST, held.rtcp_port))
            await asyncio.sleep(0.2)
        assert held.last_received_at == rtp_before, "no RTP during the hold"
        assert sorted(reported, key=id) == sorted(control, key=id)


# -- the same on uvloop ------------------------------------------------------------------------
#
# The engine runs on uvloop when it is installed; its reader callbacks are a different
# implementation, so the relay's main paths run again on it.

UvScenario = Callable[[MediaRelay, list[Phone]], Awaitable[None]]


@pytest.mark.parametrize(
    "scenario",
    [
        test_alaw_caller_reaches_ulaw_seat_transcoded,
        test_allocate_and_release_take_effect_at_once,
        test_leg_swap_keeps_one_continuous_stream,
        test_three_party_conference_each_hears_the_other_two,
        test_feature_code_digits_are_detected_and_not_leaked,
    ],
    ids=lambda f: f.__name__.removeprefix("test_"),
)
def test_on_uvloop(scenario: UvScenario) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def run() -> None:
        base = random.randrange(42000, 58000, 2)
        relay = MediaRelay(HOST, base, base + 200)
        phones = [await Phone.open() for _ in range(4)]
        try:
            await scenario(relay, phones)
            for endpoint in relay.endpoints:
                relay.release(endpoint)
            assert relay.pool.in_use == 0
        finally:
            relay.close()
            for phone in phones:
                phone.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert "uvloop" in type(runner.get_loop()).__module__
        runner.run(run())


# -- SIPp as an independent RTP source ---------------------------------------------------------
#
# SIPp answers one INVITE (sent by the small UAC below, whose SDP names the relay's port) and
# plays a capture of real RTP from its own media port: the relay must latch to it, transcode
# it and detect its digits like any phone's.

SIPP = shutil.which("sipp")
PCAP_DIR = Path("/usr/share/sip-tester")
# Under CI the peers are installed by `make peers`: a missing SIPp is then a failure, not a skip.
needs_sipp = pytest.mark.skipif(
    (SIPP is None or not (PCAP_DIR / "g711a.pcap").exists()) and os.environ.get("CI") != "true",
    reason="sipp (sip-tester) not installed",
)

UAS_HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="media source">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
]]></send>
  <recv request="ACK" crlf="true"/>
"""
UAS_PLAY = """  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>
"""
UAS_PAUSE = """  <pause milliseconds="{pause_ms}"/>
"""
UAS_TAIL = """  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
"""


def free_udp_port(pairs: int = 1) -> int:
    """An even port p with p .. p + 2 * pairs free right now (SIPp binds media p and p + 2)."""
    for _ in range(100):
        port = random.randrange(30000, 40000, 2)
        sockets = []
        try:
            for offset in range(2 * pairs + 1):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(s)
                s.bind((HOST, port + offset))
            return port
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free UDP ports")


class MiniUac(asyncio.DatagramProtocol):
    """Just enough of a SIP UAC to make SIPp start and stop one call."""

    def __init__(self) -> None:
        self.responses: asyncio.Queue[str] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        text = data.decode("utf-8", "replace")
        if text.startswith("SIP/2.0 "):
            self.responses.put_nowait(text)

    async def final_response(self, cseq_method: str) -> str:
        while True:
            response = await asyncio.wait_for(self.responses.get(), TIMEOUT)
            status = int(response.split(" ", 2)[1])
            if status >= 200 and f" {cseq_method}\r\n" in response:
                return response

    def send(self, text: str, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(text.replace("\n", "\r\n").encode(), (HOST, port))


def sip_request(
    method: str, uac_port: int, sipp_port: int, cseq: int, to_tag: str, body: str
) -> str:
    lines = [
        f"{method} sip:service@{HOST}:{sipp_port} SIP/2.0",
        f"Via: SIP/2.0/UDP {HOST}:{uac_port};branch=z9hG4bK-media-{method}-{cseq}",
        f"From: <sip:relaytest@{HOST}:{uac_port}>;tag=relaytest",
        f"To: <sip:service@{HOST}:{sipp_port}>{to_tag}",
        "Call-ID: media-relay-sipp-test",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:relaytest@{HOST}:{uac_port}>",
        "Max-Forwards: 70",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.replace(chr(10), chr(13) + chr(10)))}")
    return "\n".join(lines) + "\n\n" + body


async def sipp_call(
    tmp_path: Path,
    relay_port: int,
    plays: list[tuple[str, int]],
    until: Callable[[], Awaitable[object]],
) -> None:
    """Run one SIPp call that plays captures into ``relay_port``; hang up once ``until``.

    Each capture is followed by its pause (the next play would cut it short); the last one
    keeps playing until the BYE.
    """
    assert SIPP is not None
    scenario = tmp_path / "uas.xml"
    steps = [
        UAS_PLAY.format(pcap=PCAP_DIR / name) + (UAS_PAUSE.format(pause_ms=ms) if ms else "")
        for name, ms in plays
    ]
    scenario.write_text(UAS_HEAD + "".join(steps) + UAS_TAIL)
    sipp_port, media_port, control_port = free_udp_port(), free_udp_port(2), free_udp_port()
    process = await asyncio.create_subprocess_exec(
        SIPP,
        "-sf", str(scenario),
        "-i", HOST, "-p", str(sipp_port), "-mp", str(media_port),
        "-ci", HOST, "-cp", str(control_port),
        "-m", "1", "-timeout", "20s", "-nostdin",
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    transport, uac = await loop.create_datagram_endpoint(MiniUac, local_addr=(HOST, 0))
    uac.transport = transport
    uac_port = transport.get_extra_info("sockname")[1]
    try:
        sdp = (
            f"v=0\no=- 1 1 IN IP4 {HOST}\ns=-\nc=IN IP4 {HOST}\nt=0 0\n"
            f"m=audio {relay_port} RTP/AVP 8 101\na=rtpmap:8 PCMA/8000\n"
            "a=rtpmap:101 telephone-event/8000\n"
        )
        # SIPp needs a moment to bind; retransmit the INVITE like a real UAC would (timer A).
        for _ in range(20):
            uac.send(sip_request("INVITE", uac_port, sipp_port, 1, "", sdp), sipp_port)
            try:
                answer = await asyncio.wait_for(uac.final_response("INVITE"), 0.5)
                break
            except TimeoutError:
                continue
        else:
            raise TimeoutError("SIPp did not answer")
        to_line = next(line for line in answer.split("\r\n") if line.lower().startswith("to:"))
        to_tag = ";tag=" + to_line.split(";tag=", 1)[1]
        uac.send(sip_request("ACK", uac_port, sipp_port, 1, to_tag, ""), sipp_port)
        await until()
        uac.send(sip_request("BYE", uac_port, sipp_port, 2, to_tag, ""), sipp_port)
        await uac.final_response("BYE")
        _, stderr = await asyncio.wait_for(process.communicate(), 15)
        assert process.returncode == 0, stderr.decode(errors="replace")
    finally:
        transport.close()
        if process.returncode is None:
            process.kill()
            await process.wait()


def pcap_rtp_payloads(path: Path) -> list[bytes]:
    """RTP payloads of a classic pcap of Ethernet/IPv4/UDP frames."""
    data = path.read_bytes()
    payloads = []
    offset = 24
    while offset + 16 <= len(data):
        captured = int.from_bytes(data[offset + 8 : offset + 12], "little")
        frame = data[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        packet = parse_rtp(frame[42:])
        payloads.append(packet.payload)
    return payloads


@needs_sipp
@pytest.mark.peers
async def test_sipp_alaw_stream_reaches_a_ulaw_sink_transcoded(
    relay: MediaRelay, phones: list[Phone], tmp_path: Path
) -> None:
    sink = phones[0]
    trunk_leg = relay.allocate(codec=g711.PCMA)  # remote unknown: latch to SIPp
    seat_leg = relay.allocate(codec=g711.PCMU)
    seat_leg.set_remote(HOST, sink.port)
    relay.connect(trunk_leg, seat_leg)
    await sipp_call(
        tmp_path,
        trunk_leg.port,
        [("g711a.pcap", 0)],
        lambda: sink.wait_for_packets(40),
    )
    sent = pcap_rtp_payloads(PCAP_DIR / "g711a.pcap")
    received = [p for _, p in sink.received[:40]]
    assert {p.payload_type for p in received} == {g711.PCMU}
    assert [p.payload for p in received] == [g711.alaw_to_ulaw(a) for a in sent[:40]]
    seqs = [p.sequence for p in received]
    assert seqs == [(seqs[0] + i) % 65536 for i in range(40)]
    assert trunk_leg.remote is not None
    assert trunk_leg.remote[1] != trunk_leg.port
    assert trunk_leg.stats.snapshot().packets_lost == 0


@needs_sipp
@pytest.mark.peers
async def test_sipp_rfc4733_digits_are_detected_once_each(
    relay: MediaRelay, phones: list[Phone], tmp_path: Path
) -> None:
    sink = phones[0]
    digits: list[str] = []
    got_all = asyncio.Event()

    def on_digit(endpoint: MediaEndpoint, digit: DtmfDigit) -> None:
        digits.append(digit.digit)
        if len(digits) == 3:
            got_all.set()

    relay.on_digit = on_digit
    trunk_leg = relay.allocate(codec=g711.PCMA)
    seat_leg = relay.allocate(codec=g711.PCMU)
    seat_leg.set_remote(HOST, sink.port)
    trunk_leg.swallow_dtmf = True
    relay.connect(trunk_leg, seat_leg)
    plays = [("dtmf_2833_1.pcap", 300), ("dtmf_2833_star.pcap", 300), ("dtmf_2833_9.pcap", 0)]
    await sipp_call(tmp_path, trunk_leg.port, plays, lambda: asyncio.wait_for(got_all.wait(), 10))
    assert digits == ["1", "*", "9"]
    assert sink.received == []  # swallowed: the feature code never reached the other side
