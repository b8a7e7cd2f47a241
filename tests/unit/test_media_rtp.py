"""RTP/RTCP wire format: golden packets round-trip byte for byte (RFC 3550 §5.1, §6.4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.media.rtp import (
    MalformedPacketError,
    OtherRtcp,
    ReceiverReport,
    ReportBlock,
    RtpExtension,
    RtpPacket,
    SenderReport,
    is_rtcp,
    parse_rtcp,
    parse_rtp,
    payload_bounds,
    peek_rtp,
    serialize_rtcp,
)

# V=2 P=1 X=1 CC=2 | M=1 PT=8 | seq 0x1234 | ts 0xdeadbeef | ssrc 0x01020304
# CSRC 0x0a0b0c0d 0x11121314 | ext profile 0xbede, 1 word: 01 02 03 04 | payload d5 d5 55
# | padding 3 octets: 00 00 03
GOLDEN_RTP = bytes.fromhex("b2881234deadbeef010203040a0b0c0d11121314bede000101020304d5d555000003")


def test_golden_rtp_parses_every_field() -> None:
    packet = parse_rtp(GOLDEN_RTP)
    assert packet == RtpPacket(
        payload_type=8,
        marker=True,
        sequence=0x1234,
        timestamp=0xDEADBEEF,
        ssrc=0x01020304,
        csrc=(0x0A0B0C0D, 0x11121314),
        extension=RtpExtension(profile=0xBEDE, data=bytes.fromhex("01020304")),
        payload=bytes.fromhex("d5d555"),
        padding=3,
    )
    assert packet.to_bytes() == GOLDEN_RTP


def test_plain_rtp_and_fast_path_agree() -> None:
    raw = RtpPacket(payload_type=0, sequence=7, timestamp=160, ssrc=42, payload=b"\xff" * 160)
    data = raw.to_bytes()
    assert len(data) == 172
    assert peek_rtp(data) == (0, False, 7, 160, 42)
    assert payload_bounds(data) == (12, 172)
    assert payload_bounds(GOLDEN_RTP) == (28, 31)
    assert parse_rtp(data) == raw


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x80\x00\x00", "short"),
        (bytes.fromhex("40000001000000000000002a"), "version 1"),
        (bytes.fromhex("a0000001000000000000002a00"), "padding count zero"),
        (bytes.fromhex("a0000001000000000000002a0009"), "padding longer than packet"),
        (bytes.fromhex("90000001000000000000002a0001"), "extension header truncated"),
        (bytes.fromhex("90000001000000000000002abede0004"), "extension longer than packet"),
        (bytes.fromhex("83000001000000000000002a"), "CSRC list missing"),
    ],
)
def test_malformed_rtp_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(MalformedPacketError):
        parse_rtp(data)


@given(
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=st.none()
    | st.builds(
        RtpExtension,
        profile=st.integers(0, 0xFFFF),
        data=st.binary(max_size=16).map(lambda b: b + bytes(-len(b) % 4)),
    ),
    payload=st.binary(max_size=200),
    padding=st.integers(0, 255),
)
def test_any_rtp_packet_round_trips(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    marker: bool,
    csrc: tuple[int, ...],
    extension: RtpExtension | None,
    payload: bytes,
    padding: int,
) -> None:
    packet = RtpPacket(
        payload_type=payload_type,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        marker=marker,
        csrc=csrc,
        extension=extension,
        payload=payload,
        padding=padding,
    )
    assert parse_rtp(packet.to_bytes()) == packet


# SR from 0x11111111 with one block about 0x22222222, then an SDES with a CNAME "ab".
GOLDEN_SR_SDES = bytes.fromhex(
    "81c8000c"
    "11111111"
    "e6b2c3d4"
    "80000000"
    "00012340"
    "00000064"
    "00003e80"
    "22222222"
    "0a00000f"
    "0001ffff"
    "00000020"
    "c3d48000"
    "00010000"
    "81ca0002"
    "11111111"
    "01026162"
)


def test_golden_sender_report_and_sdes() -> None:
    packets = parse_rtcp(GOLDEN_SR_SDES)
    assert packets == [
        SenderReport(
            ssrc=0x11111111,
            ntp_timestamp=0xE6B2C3D480000000,
            rtp_timestamp=0x12340,
            packet_count=100,
            octet_count=16000,
            reports=(
                ReportBlock(
                    ssrc=0x22222222,
                    fraction_lost=10,
                    cumulative_lost=15,
                    highest_sequence=0x1FFFF,
                    jitter=32,
                    last_sr=0xC3D48000,
                    delay_since_last_sr=0x10000,
                ),
            ),
        ),
        OtherRtcp(packet_type=202, count=1, body=bytes.fromhex("1111111101026162")),
    ]
    assert serialize_rtcp(packets) == GOLDEN_SR_SDES
    assert is_rtcp(GOLDEN_SR_SDES)
    assert not is_rtcp(GOLDEN_RTP)


def test_receiver_report_keeps_negative_cumulative_loss() -> None:
    # Duplicates can make "lost" negative; RFC 3550 §6.4.1 makes the field signed 24-bit.
    block = ReportBlock(
        ssrc=5,
        fraction_lost=0,
        cumulative_lost=-3,
        highest_sequence=10,
        jitter=0,
        last_sr=0,
        delay_since_last_sr=0,
    )
    data = serialize_rtcp([ReceiverReport(ssrc=9, reports=(block,))])
    assert data[:4] == bytes.fromhex("81c90007")
    assert parse_rtcp(data) == [ReceiverReport(ssrc=9, reports=(block,))]


def test_empty_receiver_report() -> None:
    data = bytes.fromhex("80c9000100000009")
    assert parse_rtcp(data) == [ReceiverReport(ssrc=9)]
    assert serialize_rtcp(parse_rtcp(data)) == data


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("81c9"),
        bytes.fromhex("81c9000700000009"),  # length says 32 octets, 8 present
        bytes.fromhex("41c9000100000009"),  # version 1
        bytes.fromhex("81c9000100000009"),  # one report block promised, none there
        bytes.fromhex("80c900010000000900"),  # trailing octet
    ],
)
def test_malformed_rtcp_is_refused(data: bytes) -> None:
    with pytest.raises(MalformedPacketError):
        parse_rtcp(data)
