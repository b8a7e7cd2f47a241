"""A leg's telephone-event payload type changed mid-call, over real UDP sockets on 127.0.0.1.

The call core re-points a leg after a new offer/answer, which may number RFC 4733 events afresh
(RFC 3264 §8.3.2). The relay behind :class:`RelayMedia` must then take events from that phone
under the new type and send it events under the new type, and no longer take the old one for
events (RFC 4733 §2.5.1.1).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
from integration.rtp_phones import HOST, Phone, rtp

from bridge.config import MediaConfig
from bridge.media import g711
from bridge.media.dtmf import DtmfDetector, DtmfDigit, event_packets
from bridge.media.relay import MediaEndpoint
from bridge.media.rtp import RtpPacket
from bridge.media_adapter import RelayMedia

Digits = list[tuple[MediaEndpoint, str]]


@pytest.fixture
async def digits() -> Digits:
    return []


@pytest.fixture
async def media(digits: Digits) -> AsyncIterator[RelayMedia]:
    base = random.randrange(42000, 58000, 2)

    def on_digit(endpoint: MediaEndpoint, digit: DtmfDigit) -> None:
        digits.append((endpoint, digit.digit))

    relay_media = RelayMedia(
        MediaConfig(host=HOST, port_min=base, port_max=base + 200), on_digit=on_digit
    )
    await relay_media.start()
    yield relay_media
    await relay_media.close()


def press(phone: Phone, leg: MediaEndpoint, digit: str, payload_type: int, seq: int) -> int:
    """Send one key press as RFC 4733 packets of ``payload_type``, all of them stamped with
    the press's start (§2.5.1.2); returns the next sequence number."""
    start = 8000 * seq
    for n, event in enumerate(event_packets(digit)):
        phone.send(rtp(payload_type, seq, start, 0xCA, event.to_bytes(), marker=n == 0), leg)
        seq += 1
    return seq


def events_in(packets: list[RtpPacket]) -> list[str]:
    detector = DtmfDetector()
    return [
        d.digit
        for p in packets
        for d in detector.on_event_payload(
            ssrc=p.ssrc, timestamp=p.timestamp, payload=p.payload, marker=p.marker, now=0.0
        )
    ]


def received(phone: Phone, payload_type: int) -> list[RtpPacket]:
    return [p for _, p in phone.received if p.payload_type == payload_type]


async def test_a_leg_re_pointed_to_event_type_96_takes_and_gives_events_as_96(
    media: RelayMedia, phones: list[Phone], digits: Digits
) -> None:
    caller, officer = phones[:2]
    caller_leg, officer_leg = media.allocate(), media.allocate()
    media.point(caller_leg, HOST, caller.port, g711.PCMA, telephone_event_pt=101)
    media.point(officer_leg, HOST, officer.port, g711.PCMA, telephone_event_pt=101)
    media.connect(caller_leg, officer_leg)
    # The caller's phone re-INVITEs, now numbering telephone-event 96.
    media.point(caller_leg, HOST, caller.port, g711.PCMA, telephone_event_pt=96)

    seq = press(caller, caller_leg, "4", 96, seq=10)
    caller.send(rtp(g711.PCMA, seq, 8000 * seq, 0xCA, b"\xd5" * 160), caller_leg)
    await officer.wait_until(lambda: bool(received(officer, g711.PCMA)))
    assert digits == [(caller_leg, "4")], "an event under the new type is a key press"
    assert events_in(received(officer, 101)) == ["4"], "relayed under the officer's own type"
    assert received(officer, 96) == []

    relay = media.relay
    assert relay is not None
    unknown = relay.counters.unknown_payload_type
    old = press(caller, caller_leg, "8", 101, seq=seq + 1) - (seq + 1)
    caller.send(rtp(g711.PCMA, seq + 1 + old, 0, 0xCA, b"\xd5" * 160), caller_leg)
    await officer.wait_until(lambda: len(received(officer, g711.PCMA)) == 2)
    assert digits == [(caller_leg, "4")], "the old type is no event any more"
    assert relay.counters.unknown_payload_type == unknown + old
    assert events_in(received(officer, 101)) == ["4"]

    press(officer, officer_leg, "6", 101, seq=300)
    await caller.wait_until(lambda: bool(received(caller, 96)))
    await caller.wait_until(lambda: events_in(received(caller, 96)) == ["6"])
    assert received(caller, 101) == [], "events go to the caller under the type it now expects"
