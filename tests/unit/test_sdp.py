"""SDP parse/serialise and the audio offer/answer the bridge does on every leg."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.sip.errors import LocalProtocolError, RemoteProtocolError
from bridge.sip.offer_answer import (
    answer,
    follow_version,
    format_event_list,
    make_offer,
    parse_event_list,
    primary_codec,
    rewrite_connection,
    telephone_event_payload_type,
    with_direction,
)
from bridge.sip.sdp import (
    DEFAULT_CODECS,
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Codec,
    Direction,
    Origin,
    SessionDescription,
)

DATA = Path(__file__).parent.parent / "data" / "sdp"
GOLDEN = sorted(p.name for p in DATA.glob("*.sdp"))


def load(name: str) -> SessionDescription:
    return SessionDescription.parse((DATA / name).read_bytes())


def lines(sd: SessionDescription) -> list[str]:
    return bytes(sd).decode().split("\r\n")


def reply_to(offer: SessionDescription, direction: Direction | None = None) -> SessionDescription:
    return answer(
        offer,
        supported=DEFAULT_CODECS,
        local_address="10.0.0.1",
        local_port=40000,
        session_id=777,
        direction=direction,
    )


# --- parse / serialise -----------------------------------------------------------------------


def test_golden_set_is_present() -> None:
    assert len(GOLDEN) >= 8


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_round_trip_is_byte_exact(name: str) -> None:
    data = (DATA / name).read_bytes()
    assert bytes(SessionDescription.parse(data)) == data


@pytest.mark.parametrize("name", GOLDEN)
def test_parsing_the_serialised_form_gives_the_same_value(name: str) -> None:
    sd = load(name)
    assert SessionDescription.parse(bytes(sd)) == sd


def test_baresip_offer_fields() -> None:
    sd = load("baresip_offer.sdp")
    assert sd.origin.session_id == 2373153284
    assert sd.origin.session_version == 1939185543
    assert sd.connection is not None
    assert sd.connection.address == "127.0.0.1"
    audio = sd.audio
    assert audio is not None
    assert [(c.payload_type, c.name, c.clock_rate) for c in audio.codecs] == [
        (0, "PCMU", 8000),
        (8, "PCMA", 8000),
        (101, "telephone-event", 8000),
    ]
    assert audio.codec(101) == Codec(
        payload_type=101, name="telephone-event", clock_rate=8000, fmtp="0-15"
    )
    assert audio.ptime == 20
    assert sd.direction is Direction.SENDRECV
    assert not sd.is_hold
    assert sd.audio_endpoint == ("127.0.0.1", 10006)
    # attributes the bridge does not interpret survive, at session and media level
    assert sd.attributes[0].name == "tool"
    assert sd.attributes[0].value == "baresip 1.0.0"
    assert audio.has_attribute("rtcp-rsize")
    assert audio.attribute("ssrc") == "2189320901 cname:sip:agent1001@127.0.0.1:5380"


def test_sipp_offer_uses_static_payload_type() -> None:
    sd = load("sipp_offer.sdp")
    assert sd.audio is not None
    assert sd.audio.codecs == [PCMU]
    assert sd.audio_endpoint == ("127.0.0.1", 16000)
    assert telephone_event_payload_type(sd.audio) is None


def test_pyvoip_offer_fields() -> None:
    sd = load("pyvoip_offer.sdp")
    assert sd.session_name == "pyVoIP 1.6.8"
    assert sd.audio is not None
    assert telephone_event_payload_type(sd.audio) == 101
    assert sd.audio.attribute("maxptime") == "150"
    assert primary_codec(sd.audio) == PCMU


def test_static_payload_type_without_rtpmap_is_named_from_rfc3551() -> None:
    sd = load("softphone_ice_video_offer.sdp")
    assert sd.audio is not None
    names = [(c.payload_type, c.name, c.clock_rate, c.channels) for c in sd.audio.codecs]
    assert names == [
        (96, "opus", 48000, 2),
        (8, "PCMA", 8000, 1),
        (0, "PCMU", 8000, 1),
        (13, "CN", 8000, 1),
        (101, "telephone-event", 8000, 1),
    ]
    opus = sd.audio.codec(96)
    assert opus is not None
    assert opus.fmtp == "useinbandfec=1"
    assert sd.audio.rtcp == (7079, "192.0.2.55")
    assert sd.lines == (("b", "AS:380"),)


def test_dynamic_payload_type_without_rtpmap_is_skipped() -> None:
    sd = SessionDescription.parse(
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        b"m=audio 5004 RTP/AVP 98 8\r\n"
    )
    assert sd.audio is not None
    assert sd.audio.codecs == [PCMA]


def test_lf_only_line_ends_are_accepted_and_written_back_as_crlf() -> None:
    data = (DATA / "pyvoip_offer.sdp").read_bytes()
    sd = SessionDescription.parse(data.replace(b"\r\n", b"\n"))
    assert bytes(sd) == data


def test_timing_repeats_stay_with_their_t_line() -> None:
    data = (
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n"
        b"t=3034423619 3042462419\r\nr=7d 1h 0 25h\r\nt=3042462419 3050462419\r\nr=1d 1h 0\r\n"
        b"z=2882844526 -1h\r\nk=prompt\r\na=recvonly\r\nm=audio 0 RTP/AVP 0\r\n"
    )
    sd = SessionDescription.parse(data)
    assert [t.repeats for t in sd.times] == [("7d 1h 0 25h",), ("1d 1h 0",)]
    assert sd.direction is Direction.RECVONLY  # session-level default applies to the stream
    assert bytes(sd) == data


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", 400),
        (b"o=- 1 1 IN IP4 192.0.2.1\r\n", 400),  # v= must come first
        (b"v=1\r\no=- 1 1 IN IP4 192.0.2.1\r\n", 400),
        (b"v=0\r\ns=-\r\nt=0 0\r\n", 400),  # no o=
        (b"v=0\r\no=- one 1 IN IP4 192.0.2.1\r\n", 400),
        (b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nthis is not sdp\r\n", 400),
        (b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nt=now\r\n", 400),
        (b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nc=IN IP4\r\n", 400),
        (b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nm=audio 70000 RTP/AVP 0\r\nc=IN IP4 a\r\n", 400),
        (b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nm=audio\r\n", 400),
        (b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nm=audio 5004 RTP/AVP 0\r\n", 400),  # no c=
        (b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=\xff\r\n", 400),
        (b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\no=- 2 2 IN IP4 192.0.2.1\r\n", 400),
        (b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=a\r\ns=b\r\n", 400),
        (b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nv=0\r\n", 400),
        (b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nx=unknown\r\n", 488),
        (b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nc=IN IP4 a\r\nm=audio 1 RTP/AVP 0\r\nq=1\r\n", 488),
    ],
)
def test_bad_sdp_is_a_remote_error_with_status(data: bytes, status: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        SessionDescription.parse(data)
    assert info.value.status == status


@given(
    port=st.integers(min_value=1, max_value=65535),
    session_id=st.integers(min_value=0, max_value=2**63),
    version=st.integers(min_value=0, max_value=2**63),
    direction=st.sampled_from(list(Direction)),
    ptime=st.one_of(st.none(), st.integers(min_value=10, max_value=60)),
    codecs=st.lists(st.sampled_from([PCMA, PCMU, TELEPHONE_EVENT]), min_size=1, unique=True),
)
def test_offers_round_trip(
    port: int,
    session_id: int,
    version: int,
    direction: Direction,
    ptime: int | None,
    codecs: list[Codec],
) -> None:
    if not any(c.carries_audio for c in codecs):
        codecs = [*codecs, PCMA]
    sd = make_offer(
        address="192.0.2.9",
        port=port,
        session_id=session_id,
        session_version=version,
        codecs=codecs,
        direction=direction,
        ptime=ptime,
    )
    parsed = SessionDescription.parse(bytes(sd))
    assert parsed == sd
    assert parsed.audio is not None
    assert parsed.audio.codecs == codecs
    assert parsed.direction is direction


# --- the bridge's own offers -----------------------------------------------------------------


def test_make_offer_wire_form() -> None:
    sd = make_offer(address="10.0.0.1", port=40000, session_id=4242, session_version=1)
    assert bytes(sd) == (
        b"v=0\r\n"
        b"o=- 4242 1 IN IP4 10.0.0.1\r\n"
        b"s=-\r\n"
        b"c=IN IP4 10.0.0.1\r\n"
        b"t=0 0\r\n"
        b"m=audio 40000 RTP/AVP 8 0 101\r\n"
        b"a=rtpmap:8 PCMA/8000\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-16\r\n"
        b"a=ptime:20\r\n"
        b"a=sendrecv\r\n"
    )


def test_make_offer_on_ipv6() -> None:
    sd = make_offer(address="2001:db8::5", port=40000, session_id=1)
    assert "c=IN IP6 2001:db8::5" in lines(sd)
    assert "o=- 1 1 IN IP6 2001:db8::5" in lines(sd)


def test_make_offer_refuses_event_only_codec_list() -> None:
    with pytest.raises(LocalProtocolError):
        make_offer(address="10.0.0.1", port=40000, session_id=1, codecs=[TELEPHONE_EVENT])


def test_pyvoip_parses_the_bridge_offer() -> None:
    """pyVoIP seats answer the bridge's INVITEs: its SDP parser must read what we write."""
    pytest.importorskip("pyVoIP")
    import pyVoIP.VoIP  # noqa: F401  - pyVoIP.SIP only imports after its VoIP package
    from pyVoIP.SIP import SIPMessage

    body = bytes(make_offer(address="127.0.0.1", port=40000, session_id=9))
    message = SIPMessage(
        b"INVITE sip:agent1001@127.0.0.1:5402 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n"
        b"From: <sip:bridge@127.0.0.1>;tag=1\r\nTo: <sip:agent1001@127.0.0.1>\r\n"
        b"Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    (media,) = message.body["m"]
    assert media["port"] == 40000
    assert media["methods"] == ["8", "0", "101"]
    assert media["attributes"]["101"]["fmtp"]["settings"] == ["0-16"]
    assert message.body["c"][0]["address"] == "127.0.0.1"


# --- answers ---------------------------------------------------------------------------------


def test_answer_to_baresip_keeps_offerer_order_and_payload_types() -> None:
    ans = reply_to(load("baresip_offer.sdp"))
    assert bytes(ans) == (
        b"v=0\r\n"
        b"o=- 777 1 IN IP4 10.0.0.1\r\n"
        b"s=-\r\n"
        b"c=IN IP4 10.0.0.1\r\n"
        b"t=0 0\r\n"
        b"m=audio 40000 RTP/AVP 0 8 101\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:8 PCMA/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-15\r\n"
        b"a=ptime:20\r\n"
        b"a=sendrecv\r\n"
    )


def test_answer_to_sipp_is_pcmu_only() -> None:
    ans = reply_to(load("sipp_offer.sdp"))
    assert ans.audio is not None
    assert ans.audio.codecs == [PCMU]
    assert ans.audio_endpoint == ("10.0.0.1", 40000)


def test_answer_to_pyvoip() -> None:
    ans = reply_to(load("pyvoip_offer.sdp"))
    assert ans.audio is not None
    assert [c.name for c in ans.audio.codecs] == ["PCMU", "telephone-event"]
    assert telephone_event_payload_type(ans.audio) == 101


def test_telephone_event_takes_the_offerers_payload_type() -> None:
    offer = SessionDescription.parse(
        b"v=0\r\no=- 5 5 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        b"m=audio 5004 RTP/AVP 8 96\r\na=rtpmap:96 telephone-event/8000\r\n"
    )
    ans = reply_to(offer)
    assert ans.audio is not None
    assert ans.audio.formats == ("8", "96")
    assert telephone_event_payload_type(ans.audio) == 96
    # the offer named no events: we announce the ones we handle
    assert ans.audio.codec(96) == replace(TELEPHONE_EVENT, payload_type=96)
    assert "a=fmtp:96 0-16" in lines(ans)


def test_telephone_event_at_another_clock_rate_is_not_ours() -> None:
    offer = SessionDescription.parse(
        b"v=0\r\no=- 5 5 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        b"m=audio 5004 RTP/AVP 0 100\r\na=rtpmap:100 telephone-event/48000\r\n"
    )
    ans = reply_to(offer)
    assert ans.audio is not None
    assert ans.audio.formats == ("0",)


@pytest.mark.parametrize(
    "offer_body",
    [
        b"m=audio 5004 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n",
        b"m=audio 5004 RTP/AVP 101\r\na=rtpmap:101 telephone-event/8000\r\n",
        b"m=audio 5004 RTP/AVP 13\r\n",
        b"m=audio 5004 RTP/SAVP 0\r\n",
        b"m=audio 0 RTP/AVP 0\r\n",
        b"m=video 5004 RTP/AVP 31\r\n",
        b"",
    ],
    ids=["g729", "events-only", "cn-only", "srtp", "disabled", "video-only", "no-media"],
)
def test_unanswerable_offer_is_488(offer_body: bytes) -> None:
    offer = SessionDescription.parse(
        b"v=0\r\no=- 5 5 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n" + offer_body
    )
    with pytest.raises(RemoteProtocolError) as info:
        reply_to(offer)
    assert info.value.status == 488


def test_answer_refuses_other_streams_with_port_zero_in_offer_order() -> None:
    ans = reply_to(load("rfc4317_audio_video_offer.sdp"))
    audio, video = ans.media
    assert (audio.media, audio.port, audio.formats) == ("audio", 40000, ("0", "8"))
    assert (video.media, video.port, video.formats) == ("video", 0, ("31", "32"))
    assert video.attributes == ()
    assert "m=video 0 RTP/AVP 31 32" in lines(ans)


def test_answer_prefers_offerer_order_over_ours() -> None:
    ans = reply_to(load("softphone_ice_video_offer.sdp"))
    assert ans.audio is not None
    assert ans.audio.formats == ("8", "0", "101")
    assert primary_codec(ans.audio) == PCMA
    assert ans.media[1].port == 0


@pytest.mark.parametrize(
    ("offered", "ours", "expected"),
    [
        (Direction.SENDRECV, None, Direction.SENDRECV),
        (Direction.SENDONLY, None, Direction.RECVONLY),
        (Direction.RECVONLY, None, Direction.SENDONLY),
        (Direction.INACTIVE, None, Direction.INACTIVE),
        (Direction.SENDRECV, Direction.SENDONLY, Direction.SENDONLY),
        (Direction.SENDONLY, Direction.SENDONLY, Direction.INACTIVE),
        (Direction.RECVONLY, Direction.RECVONLY, Direction.INACTIVE),
        (Direction.SENDRECV, Direction.INACTIVE, Direction.INACTIVE),
    ],
)
def test_answer_direction(offered: Direction, ours: Direction | None, expected: Direction) -> None:
    offer = make_offer(address="192.0.2.1", port=5004, session_id=1, direction=offered)
    ans = reply_to(offer, direction=ours)
    assert ans.direction is expected
    assert ans.is_hold is (not expected.receives)


def test_hold_and_resume_from_baresip() -> None:
    hold, resume = load("baresip_hold.sdp"), load("baresip_resume.sdp")
    assert hold.is_hold
    assert hold.direction is Direction.SENDONLY
    assert not resume.is_hold
    assert resume.origin.session_version == hold.origin.session_version + 1
    assert reply_to(hold).direction is Direction.RECVONLY
    assert reply_to(resume).direction is Direction.SENDRECV


def test_rfc2543_hold_is_recognised_and_answered() -> None:
    offer = load("rfc2543_hold_offer.sdp")
    assert offer.direction is Direction.SENDRECV  # no attribute: only c= says hold
    assert offer.is_hold
    assert offer.audio_endpoint is None
    ans = reply_to(offer)
    assert ans.direction is Direction.RECVONLY
    assert ans.audio is not None
    assert ans.audio.formats == ("8", "0", "101")
    assert "a=fmtp:101 0-16" in lines(ans)


def test_with_direction_puts_our_offer_on_hold_and_back() -> None:
    offer = make_offer(address="10.0.0.1", port=40000, session_id=8, session_version=3)
    held = with_direction(offer, Direction.SENDONLY)
    assert held.is_hold
    assert held.origin.session_version == 4
    assert [line for line in lines(held) if line in {f"a={d.value}" for d in Direction}] == [
        "a=sendonly"
    ]
    back = with_direction(held, Direction.SENDRECV)
    assert not back.is_hold
    assert back.origin.session_version == 5
    assert bytes(back.with_(origin=offer.origin)) == bytes(offer)


# --- media anchoring -------------------------------------------------------------------------


def test_rewrite_connection_changes_only_address_port_and_version() -> None:
    original = load("baresip_offer.sdp")
    anchored = rewrite_connection(
        original, address="10.0.0.1", port=40002, session_version_bump=True
    )
    assert anchored.audio_endpoint == ("10.0.0.1", 40002)
    assert anchored.origin.session_version == original.origin.session_version + 1
    assert anchored.origin.session_id == original.origin.session_id
    assert anchored.origin.address == "10.0.0.1"
    before, after = lines(original), lines(anchored)
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert changed == [
        ("o=- 2373153284 1939185543 IN IP4 127.0.0.1", "o=- 2373153284 1939185544 IN IP4 10.0.0.1"),
        ("c=IN IP4 127.0.0.1", "c=IN IP4 10.0.0.1"),
        ("m=audio 10006 RTP/AVP 0 8 101", "m=audio 40002 RTP/AVP 0 8 101"),
    ]


def test_rewrite_connection_without_bump_keeps_version() -> None:
    original = load("sipp_offer.sdp")
    anchored = rewrite_connection(
        original, address="10.0.0.1", port=40002, session_version_bump=False
    )
    assert anchored.origin.session_version == original.origin.session_version


def test_rewrite_connection_drops_peer_transport_details_and_pins_other_streams() -> None:
    original = load("softphone_ice_video_offer.sdp")
    anchored = rewrite_connection(
        original, address="10.0.0.1", port=40002, session_version_bump=False
    )
    audio, video = anchored.media
    names = [a.name for a in audio.attributes]
    assert "candidate" not in names
    assert "rtcp" not in names
    assert names == ["rtpmap", "fmtp", "rtpmap", "rtcp-fb"]
    assert anchored.audio_endpoint == ("10.0.0.1", 40002)
    # video still goes straight to the peer, which it can only do with its own c= now
    assert video.connection is not None
    assert video.connection.address == "192.0.2.55"
    assert video.port == 9078
    assert video.attribute("rtcp") == "9079 IN IP4 192.0.2.55"
    assert "b=AS:380" in lines(anchored)


def test_rewrite_connection_turns_rfc2543_hold_into_sendonly() -> None:
    anchored = rewrite_connection(
        load("rfc2543_hold_offer.sdp"), address="10.0.0.1", port=40002, session_version_bump=False
    )
    assert anchored.is_hold
    assert anchored.direction is Direction.SENDONLY
    assert anchored.audio_endpoint == ("10.0.0.1", 40002)
    assert "0.0.0.0" not in bytes(anchored).decode()


def test_rewrite_connection_keeps_a_held_stream_held() -> None:
    anchored = rewrite_connection(
        load("baresip_hold.sdp"), address="10.0.0.1", port=40002, session_version_bump=False
    )
    assert anchored.is_hold
    assert anchored.direction is Direction.SENDONLY


def test_follow_version_bumps_only_on_change() -> None:
    first = make_offer(address="10.0.0.1", port=40000, session_id=50, session_version=7)
    again = make_offer(address="10.0.0.1", port=40000, session_id=99, session_version=1)
    assert follow_version(first, again).origin == first.origin
    moved = make_offer(address="10.0.0.1", port=40010, session_id=99, session_version=1)
    followed = follow_version(first, moved)
    assert (followed.origin.session_id, followed.origin.session_version) == (50, 8)
    assert follow_version(None, moved) is moved


def test_follow_version_keeps_the_whole_origin_but_the_version() -> None:
    """RFC 4566 §5.2: username, session id and address are the session's identity; a later
    description written from someone else's o= line must not change any of them."""
    ours = make_offer(address="10.0.0.1", port=40000, session_id=50, session_version=7)
    theirs = ours.with_(origin=Origin.parse("agent 4242 17 IN IP4 10.9.9.9"))
    moved = theirs.with_(media=(ours.media[0].with_(port=40010),))
    assert follow_version(ours, theirs).origin == ours.origin
    assert follow_version(ours, moved).origin == Origin.parse("- 50 8 IN IP4 10.0.0.1")


# --- helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "events"),
    [
        ("0-15", set(range(16))),
        ("0-16", set(range(17))),
        ("0-15,66,70", {*range(16), 66, 70}),
        ("16", {16}),
    ],
)
def test_event_lists(text: str, events: set[int]) -> None:
    assert parse_event_list(text) == frozenset(events)
    assert format_event_list(events) == text


@pytest.mark.parametrize("text", ["", "a-b", "5-2", "0-300", "0-15;x"])
def test_bad_event_lists(text: str) -> None:
    assert parse_event_list(text) is None


def test_direction_mirror() -> None:
    assert {d: d.mirrored() for d in Direction} == {
        Direction.SENDRECV: Direction.SENDRECV,
        Direction.SENDONLY: Direction.RECVONLY,
        Direction.RECVONLY: Direction.SENDONLY,
        Direction.INACTIVE: Direction.INACTIVE,
    }


GOLDEN_LINES = sorted(
    {line for name in GOLDEN for line in (DATA / name).read_text().splitlines() if line}
)


@given(
    st.lists(
        st.one_of(st.sampled_from(GOLDEN_LINES), st.text(max_size=20)),
        max_size=25,
    )
)
def test_any_input_parses_or_is_a_remote_error(body_lines: list[str]) -> None:
    """Whatever a peer sends, parsing ends in a value that round-trips or in a status to
    answer with, never in another exception."""
    data = "\r\n".join(["v=0", *body_lines]).encode("utf-8", "surrogatepass")
    status: int | None = None
    try:
        sd = SessionDescription.parse(data)
    except RemoteProtocolError as exc:
        status = exc.status
    if status is None:
        assert SessionDescription.parse(bytes(sd)) == sd
    else:
        assert status in (400, 488)
