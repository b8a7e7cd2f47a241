"""RFC 4733 telephone-events and SIP INFO digits become each key press exactly once."""

from __future__ import annotations

import pytest

from bridge.media.dtmf import (
    DtmfDetector,
    RedundantBlock,
    TelephoneEvent,
    event_packets,
    format_info_dtmf,
    parse_events,
    parse_info_dtmf,
    parse_red,
    serialize_red,
)
from bridge.sip.errors import RemoteProtocolError

SSRC = 0x5EED


def test_golden_event_payload() -> None:
    # Digit 5, end bit, volume 10, duration 1280 (160 ms).
    golden = bytes.fromhex("058a0500")
    assert parse_events(golden) == [
        (0, TelephoneEvent(event=5, end=True, volume=10, duration=1280))
    ]
    assert TelephoneEvent(event=5, end=True, volume=10, duration=1280).to_bytes() == golden


def test_several_events_in_one_packet_get_their_own_start() -> None:
    payload = (
        TelephoneEvent(event=1, end=True, duration=800).to_bytes()
        + TelephoneEvent(event=2, end=True, duration=640).to_bytes()
        + TelephoneEvent(event=3, duration=320).to_bytes()
    )
    assert [(offset, e.event) for offset, e in parse_events(payload)] == [
        (0, 1),
        (800, 2),
        (1440, 3),
    ]


@pytest.mark.parametrize("payload", [b"", b"\x05\x8a\x05", b"\x05\x8a\x05\x00\x01"])
def test_bad_event_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        parse_events(payload)


def press(
    detector: DtmfDetector, digit: str, start: int, now: float, *, drop: set[int] | None = None
) -> list[str]:
    """Send one key press as a sender would; ``drop`` lists packet indexes lost on the way."""
    found = []
    for index, event in enumerate(event_packets(digit, duration=800)):
        if drop and index in drop:
            continue
        digits = detector.on_event_payload(
            ssrc=SSRC,
            timestamp=start,
            payload=event.to_bytes(),
            marker=index == 0,
            now=now + 0.02 * index,
        )
        found += [d.digit for d in digits]
    return found


def test_one_press_with_three_end_packets_is_one_digit() -> None:
    detector = DtmfDetector()
    packets = event_packets("5", duration=800)
    assert sum(p.end for p in packets) == 3
    assert press(detector, "5", start=1000, now=1.0) == ["5"]


def test_repeated_key_is_two_digits() -> None:
    detector = DtmfDetector()
    assert press(detector, "1", start=1000, now=1.0) + press(
        detector, "1", start=4000, now=1.5
    ) == ["1", "1"]


def test_digit_found_when_only_the_end_packets_arrive() -> None:
    detector = DtmfDetector()
    assert press(detector, "#", start=8000, now=2.0, drop={0, 1, 2, 3}) == ["#"]


def test_digit_carries_its_start_time() -> None:
    detector = DtmfDetector()
    event = TelephoneEvent(event=9, duration=160).to_bytes()
    (digit,) = detector.on_event_payload(
        ssrc=SSRC, timestamp=48000, payload=event, marker=True, now=12.5
    )
    assert (digit.digit, digit.rtp_timestamp, digit.detected_at, digit.ssrc) == (
        "9",
        48000,
        12.5,
        SSRC,
    )


def test_late_end_packet_of_an_earlier_digit_is_silent() -> None:
    detector = DtmfDetector()
    first = event_packets("2", duration=800)
    assert press(detector, "2", start=1000, now=1.0, drop={5, 6, 7}) == ["2"]
    assert press(detector, "3", start=3000, now=1.3) == ["3"]
    late = detector.on_event_payload(
        ssrc=SSRC, timestamp=1000, payload=first[-1].to_bytes(), marker=False, now=1.4
    )
    assert late == []


def test_same_timestamp_from_another_source_is_another_digit() -> None:
    detector = DtmfDetector()
    payload = TelephoneEvent(event=4, duration=160).to_bytes()
    a = detector.on_event_payload(ssrc=1, timestamp=500, payload=payload, marker=True, now=0.0)
    b = detector.on_event_payload(ssrc=2, timestamp=500, payload=payload, marker=True, now=0.0)
    assert [d.digit for d in a + b] == ["4", "4"]


def test_redundant_copies_inside_red_packets_count_once() -> None:
    detector = DtmfDetector()
    event_type = 101
    found = []
    # Each packet carries the current event plus the previous packet's state as redundancy.
    for n, duration in enumerate((160, 320, 480)):
        blocks = []
        if n:
            previous = TelephoneEvent(event=7, duration=duration - 160).to_bytes()
            blocks.append(
                RedundantBlock(payload_type=event_type, timestamp_offset=0, data=previous)
            )
        current = TelephoneEvent(event=7, duration=duration).to_bytes()
        blocks.append(RedundantBlock(payload_type=event_type, timestamp_offset=0, data=current))
        payload = serialize_red(blocks)
        found += detector.on_red_payload(
            ssrc=SSRC, timestamp=2000, payload=payload, event_type=event_type, now=0.02 * n
        )
    assert [d.digit for d in found] == ["7"]


def test_red_golden_round_trip() -> None:
    blocks = [
        RedundantBlock(payload_type=101, timestamp_offset=320, data=b"\x01\x0a\x00\xa0"),
        RedundantBlock(payload_type=101, timestamp_offset=0, data=b"\x01\x0a\x01\x40"),
    ]
    golden = bytes.fromhex("e505000465010a00a0010a0140")
    assert serialize_red(blocks) == golden
    assert parse_red(golden) == blocks


@pytest.mark.parametrize("payload", [b"", bytes.fromhex("e50500"), bytes.fromhex("e505000965")])
def test_bad_red_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(ValueError, match="RED"):
        parse_red(payload)


def test_long_tone_continuation_is_not_a_second_press() -> None:
    detector = DtmfDetector()
    first = TelephoneEvent(event=0, duration=0xFFFF).to_bytes()
    assert (
        len(detector.on_event_payload(ssrc=SSRC, timestamp=0, payload=first, marker=True, now=0))
        == 1
    )
    # §2.5.1.3: the next segment starts at the old start + 0xFFFF, without a marker.
    more = TelephoneEvent(event=0, duration=800).to_bytes()
    assert (
        detector.on_event_payload(ssrc=SSRC, timestamp=0xFFFF, payload=more, marker=False, now=8.2)
        == []
    )


def test_non_dtmf_events_are_not_digits() -> None:
    detector = DtmfDetector()
    flash = TelephoneEvent(event=16, duration=160).to_bytes()
    assert (
        detector.on_event_payload(ssrc=SSRC, timestamp=0, payload=flash, marker=True, now=0) == []
    )


def test_event_packets_look_like_a_real_sender() -> None:
    packets = event_packets("*", duration=800, step=160)
    assert [p.duration for p in packets] == [160, 320, 480, 640, 800, 800, 800]
    assert [p.end for p in packets] == [False] * 4 + [True] * 3
    assert {p.event for p in packets} == {10}


@pytest.mark.parametrize(
    ("content_type", "body", "digit", "duration"),
    [
        ("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n", "5", 160),
        ("Application/DTMF-Relay; charset=x", "signal= #\nduration= 250", "#", 250),
        ("application/dtmf-relay", "Signal=*\r\n", "*", None),
        ("application/dtmf-relay", "Signal=11\r\nDuration=100", "#", 100),
        ("application/dtmf", "9", "9", None),
        ("application/dtmf", "10\r\n", "*", None),
        ("application/dtmf", "a", "A", None),
    ],
)
def test_sip_info_bodies(content_type: str, body: str, digit: str, duration: int | None) -> None:
    info = parse_info_dtmf(content_type, body)
    assert (info.digit, info.duration_ms) == (digit, duration)


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("application/dtmf-relay", "Duration=160", 400),
        ("application/dtmf-relay", "Signal=X", 400),
        ("application/dtmf-relay", "Signal=1\r\nDuration=abc", 400),
        ("application/dtmf", "", 400),
        ("text/plain", "5", 415),
    ],
)
def test_bad_sip_info_bodies_map_to_a_status(content_type: str, body: str, status: int) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        parse_info_dtmf(content_type, body)
    assert caught.value.status == status


def test_info_body_we_send_parses_back() -> None:
    content_type, body = format_info_dtmf("#", 200)
    assert parse_info_dtmf(content_type, body).digit == "#"
    assert parse_info_dtmf(content_type, body).duration_ms == 200
    with pytest.raises(ValueError, match="not a DTMF digit"):
        format_info_dtmf("Z")
