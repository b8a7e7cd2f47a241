"""SIP message parsing, serialisation, stream framing and UAS checks (RFC 3261 §7, §18.3,
§20, §25), including golden round trips of realistic messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.sip.checks import check_request, check_response, expires_seconds
from bridge.sip.errors import LocalProtocolError, RemoteProtocolError
from bridge.sip.headers import Headers, canonical_name
from bridge.sip.message import (
    MAX_MESSAGE_SIZE,
    Request,
    Response,
    StreamFramer,
    error_response,
    make_response,
    parse_message,
)
from bridge.sip.uri import SipUri

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden"
CANONICAL = [
    "invite_sdp.sip",
    "ok_record_route.sip",
    "refer.sip",
    "notify_sipfrag.sip",
    "register_auth.sip",
    "invite_compact.canonical.sip",
]


def wire(*lines: str, body: bytes = b"") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def options(*extra: str, body: bytes = b"") -> bytes:
    return wire(
        "OPTIONS sip:bridge@example.net SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds",
        "Max-Forwards: 70",
        "To: <sip:bridge@example.net>",
        "From: <sip:alice@example.com>;tag=1928301774",
        "Call-ID: a84b4c76e66710@192.0.2.1",
        "CSeq: 63104 OPTIONS",
        *extra,
        body=body,
    )


def parse_request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


# -- golden messages ---------------------------------------------------------------------


@pytest.mark.parametrize("name", CANONICAL)
def test_golden_message_serialises_byte_for_byte(name: str) -> None:
    data = (GOLDEN / name).read_bytes()
    message = parse_message(data)
    assert bytes(message) == data
    assert parse_message(bytes(message)) == message


def test_golden_compact_message_serialises_to_its_canonical_form() -> None:
    compact = parse_message((GOLDEN / "invite_compact.sip").read_bytes())
    canonical = (GOLDEN / "invite_compact.canonical.sip").read_bytes()
    assert bytes(compact) == canonical
    assert parse_message(canonical) == compact


def test_golden_invite_fields() -> None:
    m = parse_request((GOLDEN / "invite_sdp.sip").read_bytes())
    assert m.method == "INVITE"
    assert (m.uri.user, m.uri.param("user")) == ("12345", "phone")
    assert m.from_.display_name == "Hotline Caller"
    assert m.from_.tag == "8f2c1a7e"
    assert m.to.tag is None
    assert m.top_via.branch == "z9hG4bK-524287-1---7f3a9c1e2b"
    assert m.top_via.param("rport") is None
    assert m.option_tags("Supported") == {"replaces", "timer"}
    assert m.headers.get_all("Allow")[-1] == "INFO"
    assert m.content_type == "application/sdp"
    assert m.body.startswith(b"v=0\r\n")
    assert m.max_forwards == 69


def test_golden_200_record_route_order_is_kept() -> None:
    m = parse_message((GOLDEN / "ok_record_route.sip").read_bytes())
    assert isinstance(m, Response)
    assert (m.status, m.reason) == (200, "OK")
    assert [str(r.uri) for r in m.record_routes] == [
        "sip:203.0.113.20;lr;ftag=a73kszlfl",
        "sip:198.51.100.30:5060;transport=udp;lr",
    ]
    assert m.top_via.param("received") == "203.0.113.10"
    assert check_response(m) is None


def test_golden_refer_carries_an_escaped_replaces_header() -> None:
    m = parse_request((GOLDEN / "refer.sip").read_bytes())
    refer_to = m.headers.get("Refer-To")
    assert refer_to is not None
    from bridge.sip.uri import NameAddr

    target = NameAddr.parse(refer_to)
    assert target.uri.headers == (("Replaces", "12345@192.0.2.4;to-tag=12345;from-tag=5FFE-3994"),)
    referred_by = NameAddr.parse(m.headers.get("Referred-By") or "")
    assert referred_by.display_name == "Agent 7"
    assert m.uri.transport == "tcp"


def test_golden_notify_sipfrag_body() -> None:
    m = parse_request((GOLDEN / "notify_sipfrag.sip").read_bytes())
    assert m.content_type == "message/sipfrag"
    assert m.body == b"SIP/2.0 180 Ringing\r\n"
    assert m.headers.get("Event") == "refer;id=93809824"


def test_an_event_id_round_trips_from_the_compact_form() -> None:
    """RFC 3515 §2.4.6's ``Event: refer;id=`` as a phone may send it (``o``, RFC 3261 §7.3.3)
    comes back under the full name with its parameter untouched."""
    m = parse_request(options("o: refer;id=93809824"))
    assert m.headers.get("Event") == "refer;id=93809824"
    assert b"\r\nEvent: refer;id=93809824\r\n" in bytes(m)
    assert bytes(parse_message(bytes(m))) == bytes(m)


def test_golden_register_authorization_is_not_split_on_commas() -> None:
    m = parse_request((GOLDEN / "register_auth.sip").read_bytes())
    (authorization,) = m.headers.get_all("Authorization")
    assert authorization.startswith('Digest username="seat-7", realm="bridge.example.net"')
    assert authorization.endswith("nc=00000001")
    (contact,) = m.contacts
    assert contact.param("expires") == "3600"
    assert contact.param("+sip.instance") == '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'


# -- header grammar ----------------------------------------------------------------------


def test_folded_header_lines_are_joined() -> None:
    m = parse_request(options("Subject: first part", "  second part", "\tthird"))
    assert m.headers.get("Subject") == "first part second part third"


def test_compact_forms_and_case_insensitive_names() -> None:
    m = parse_request(
        wire(
            "OPTIONS sip:bridge@example.net SIP/2.0",
            "v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1",
            "t: <sip:bridge@example.net>",
            "f: <sip:alice@example.com>;tag=1",
            "i: abc@192.0.2.1",
            "CSEQ: 1 OPTIONS",
            "mAx-FoRwArDs: 5",
            "k: timer",
            "x-TICKET-id: T-1",
            "l: 0",
        )
    )
    assert m.call_id == "abc@192.0.2.1"
    assert m.headers.get("supported") == "timer"
    assert m.headers.get("Max-Forwards") == "5"
    assert m.headers.get("X-Ticket-Id") == "T-1"
    assert [name for name, _ in m.headers][:4] == ["Via", "To", "From", "Call-ID"]
    assert canonical_name("WWW-AUTHENTICATE") == "WWW-Authenticate"
    assert canonical_name("call-id") == "Call-ID"


def test_lws_before_the_colon_is_allowed() -> None:
    m = parse_request(options("Subject   : hello"))
    assert m.headers.get("Subject") == "hello"


def test_list_headers_split_outside_quotes_and_angle_brackets() -> None:
    m = parse_request(
        options(
            'Contact: "Bell, Alexander" <sip:bell@example.com;x=a,b>, <sip:watson@example.com>',
            "Allow: INVITE,ACK , BYE",
            "Route: <sip:p1.example.com;lr>,<sip:p2.example.com;lr>",
        )
    )
    assert [c.display_name for c in m.contacts] == ["Bell, Alexander", None]
    assert m.headers.get_all("Allow") == ["INVITE", "ACK", "BYE"]
    assert [r.uri.host for r in m.routes] == ["p1.example.com", "p2.example.com"]


def test_non_list_headers_keep_their_commas() -> None:
    m = parse_request(options("Subject: a, b", "Date: Sat, 13 Nov 2010 23:29:00 GMT"))
    assert m.headers.get("Subject") == "a, b"
    assert m.headers.get("Date") == "Sat, 13 Nov 2010 23:29:00 GMT"


def test_several_vias_in_one_line_or_many() -> None:
    one = parse_request(
        wire(
            "OPTIONS sip:b@example.net SIP/2.0",
            "Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bK1, SIP/2.0/TCP p2.example.com:5070"
            ";branch=z9hG4bK2;received=192.0.2.7",
            "To: <sip:b@example.net>",
            "From: <sip:a@example.com>;tag=1",
            "Call-ID: x",
            "CSeq: 1 OPTIONS",
        )
    )
    assert [(v.transport, v.host, v.port) for v in one.vias] == [
        ("UDP", "p1.example.com", None),
        ("TCP", "p2.example.com", 5070),
    ]
    assert one.vias[1].param("received") == "192.0.2.7"
    assert bytes(one).count(b"\r\nVia: ") == 2


def test_ipv6_via_and_contact() -> None:
    m = parse_request(
        wire(
            "OPTIONS sip:[2001:db8::1] SIP/2.0",
            "Via: SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bK1;received=2001:db8::9",
            "To: <sip:[2001:db8::1]>",
            "From: <sip:a@[2001:db8::9]:5060>;tag=1",
            "Call-ID: v6",
            "CSeq: 1 OPTIONS",
            "Contact: <sip:a@[2001:db8::9]:5060;transport=udp>",
        )
    )
    assert (m.top_via.host, m.top_via.port) == ("[2001:db8::9]", 5060)
    assert m.uri.host == "[2001:db8::1]"
    assert m.contacts[0].uri.hostport == ("[2001:db8::9]", 5060)


def test_lf_only_line_ends_and_leading_crlfs_are_tolerated() -> None:
    data = b"\r\n\r\n" + options().replace(b"\r\n", b"\n")
    m = parse_request(data)
    assert m.cseq.seq == 63104


@pytest.mark.parametrize(
    ("extra", "detail"),
    [
        (("To: <sip:x@example.net>",), "more than one To"),
        (("Content-Length: 0", "l: 0"), "more than one Content-Length"),
        (("Max-Forwards: 5",), "more than one Max-Forwards"),
        (("Bad Header: x",), "malformed header"),
        (("NoColonHere",), "malformed header"),
        (("Via:",), "empty Via"),
        (("Contact: <sip:a@example.com>,,<sip:b@example.com>",), "empty list entry"),
    ],
)
def test_header_level_errors(extra: tuple[str, ...], detail: str) -> None:
    with pytest.raises(RemoteProtocolError, match=detail) as caught:
        parse_message(options(*extra))
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("replace", "by"),
    [
        (b"Max-Forwards: 70", b"Max-Forwards: 256"),
        (b"Max-Forwards: 70", b"Max-Forwards: -1"),
        (b"CSeq: 63104 OPTIONS", b"CSeq: 2147483648 OPTIONS"),
        (b"CSeq: 63104 OPTIONS", b"CSeq: 63104"),
        (b"Call-ID: a84b4c76e66710@192.0.2.1", b"Call-ID: has space"),
        (b"SIP/2.0/UDP 192.0.2.1:5060", b"SIP/2.0/UDP 192.0.2.1:99999"),
        (b"SIP/2.0/UDP 192.0.2.1:5060", b"SIP/2.0 192.0.2.1:5060"),
        (b"To: <sip:bridge@example.net>", b"To: <sip:bridge@example.net"),
        (b"OPTIONS sip:", b"OPTIONS  sip:"),
        (b"Via: SIP", b"Via: SIP\rX"),
    ],
)
def test_eagerly_checked_headers_reject_bad_values(replace: bytes, by: bytes) -> None:
    data = options().replace(replace, by)
    assert data != options()
    with pytest.raises(RemoteProtocolError):
        parse_message(data)


def test_response_must_carry_the_transaction_headers() -> None:
    data = wire("SIP/2.0 200 OK", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "CSeq: 1 INVITE")
    with pytest.raises(RemoteProtocolError, match="missing mandatory"):
        parse_message(data)


@pytest.mark.parametrize("status_line", ["SIP/2.0 99 Low", "SIP/2.0 700 High", "SIP/2.0 2OO OK"])
def test_bad_status_codes(status_line: str) -> None:
    data = (
        (GOLDEN / "ok_record_route.sip")
        .read_bytes()
        .replace(b"SIP/2.0 200 OK", status_line.encode())
    )
    with pytest.raises(RemoteProtocolError):
        parse_message(data)


# -- bodies, sizes and framing -----------------------------------------------------------


def test_datagram_longer_than_content_length_is_truncated() -> None:
    m = parse_request(options("Content-Type: text/plain", "Content-Length: 5", body=b"hello, junk"))
    assert m.body == b"hello"


def test_datagram_shorter_than_content_length_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError, match="Content-Length larger"):
        parse_message(options("Content-Length: 50", body=b"short"))


@pytest.mark.parametrize("value", ["-1", "five", "1e3", "٣"])
def test_non_numeric_content_length_is_rejected(value: str) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_message(options(f"Content-Length: {value}"))


def test_stream_messages_need_content_length() -> None:
    with pytest.raises(RemoteProtocolError, match="Content-Length is required"):
        parse_message(options(), stream=True)
    assert parse_request(options("Content-Length: 0")).body == b""


def test_message_over_the_size_limit() -> None:
    big_body = b"x" * MAX_MESSAGE_SIZE
    with pytest.raises(RemoteProtocolError) as caught:
        parse_message(options("Content-Type: text/plain", body=big_body))
    assert caught.value.status == 413
    big_head = options("Subject: " + "y" * MAX_MESSAGE_SIZE)
    with pytest.raises(RemoteProtocolError) as caught:
        parse_message(big_head)
    assert caught.value.status == 513
    with pytest.raises(RemoteProtocolError) as caught:
        parse_message(options(), max_size=100)
    assert caught.value.status == 513


def test_serialising_recomputes_content_length_in_place() -> None:
    m = parse_request(
        options("Content-Type: text/plain", "Content-Length: 2", "Subject: s", body=b"hi")
    )
    m.body = b"hello"
    out = bytes(m)
    assert b"Content-Length: 5\r\nSubject: s\r\n\r\nhello" in out
    bare = Request(method="OPTIONS", uri=SipUri.parse("sip:b@example.net"))
    assert bytes(bare).endswith(b"Content-Length: 0\r\n\r\n")


def test_serialising_refuses_a_header_value_with_a_line_break() -> None:
    m = parse_request(options())
    m.headers.add("Subject", "x\r\nVia: SIP/2.0/UDP evil.example.com")
    with pytest.raises(LocalProtocolError):
        bytes(m)


def test_option_tag_lists_are_joined_but_addresses_are_not() -> None:
    headers = Headers(
        [
            ("Supported", "timer"),
            ("k", "replaces"),
            ("Route", "<sip:a;lr>"),
            ("Route", "<sip:b;lr>"),
        ]
    )
    m = Request(method="OPTIONS", uri=SipUri.parse("sip:b@example.net"), headers=headers)
    out = bytes(m)
    assert b"Supported: timer, replaces\r\n" in out
    assert b"Route: <sip:a;lr>\r\nRoute: <sip:b;lr>\r\n" in out


def frames_of(data: bytes, cuts: list[int]) -> list[bytes]:
    framer = StreamFramer()
    frames: list[bytes] = []
    last = 0
    for cut in [*cuts, len(data)]:
        frames += framer.feed(data[last:cut])
        last = cut
    assert framer.pending == 0
    return frames


def test_framer_gives_the_same_frames_whatever_the_split_point() -> None:
    first = options("Content-Type: text/plain", "Content-Length: 5", body=b"hello")
    second = (GOLDEN / "invite_sdp.sip").read_bytes()
    stream = first + second
    for cut in range(len(stream) + 1):
        assert frames_of(stream, [cut]) == [first, second]


def test_framer_byte_at_a_time() -> None:
    data = (GOLDEN / "ok_record_route.sip").read_bytes()
    assert frames_of(data * 2, list(range(1, 2 * len(data)))) == [data, data]


def test_framer_two_messages_in_one_chunk_and_crlf_keepalives() -> None:
    msg = options("Content-Length: 0")
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n" + msg + b"\r\n" + msg + b"\r\n\r\n") == [msg, msg]
    assert framer.pending == 0
    # RFC 5626 §4.4.1: each double-CRLF ping is owed one CRLF pong; single CRLFs are not.
    assert framer.take_pongs() == 2
    assert framer.take_pongs() == 0
    assert framer.feed(b"\r") == []
    assert framer.feed(b"\n\r") == []
    assert framer.feed(b"\n") == []
    assert framer.take_pongs() == 1
    assert framer.feed(b"\r\n" + msg + b"\r\n") == [msg]
    assert framer.take_pongs() == 0


def test_framer_without_content_length_is_a_framing_error() -> None:
    framer = StreamFramer()
    with pytest.raises(RemoteProtocolError, match="Content-Length"):
        framer.feed(options())
    assert framer.pending == 0


def test_framer_refuses_oversized_messages() -> None:
    framer = StreamFramer(max_size=2000)
    with pytest.raises(RemoteProtocolError) as caught:
        framer.feed(options("Content-Length: 5000"))
    assert caught.value.status == 413
    framer = StreamFramer(max_size=2000)
    assert framer.feed(b"INVITE sip:x SIP/2.0\r\nSubject: " + b"z" * 1900) == []
    with pytest.raises(RemoteProtocolError) as caught:
        framer.feed(b"z" * 200)
    assert caught.value.status == 513
    assert framer.pending == 0


def test_framer_rejects_conflicting_content_lengths() -> None:
    with pytest.raises(RemoteProtocolError, match="conflicting"):
        StreamFramer().feed(options("Content-Length: 0", "l: 4", body=b"abcd"))


# -- responses built from requests ---------------------------------------------------------


def test_make_response_copies_the_transaction_headers() -> None:
    m = parse_request((GOLDEN / "invite_sdp.sip").read_bytes())
    m.headers.add("Via", "SIP/2.0/UDP second.example.com;branch=z9hG4bK2")
    ringing = make_response(m, 180, to_tag="b2b-1")
    assert ringing.headers.get_all("Via") == m.headers.get_all("Via")
    assert ringing.to.tag == "b2b-1"
    assert ringing.from_ == m.from_
    assert ringing.cseq == m.cseq
    assert ringing.reason == "Ringing"
    trying = make_response(m, 100, to_tag="b2b-1")
    assert trying.to.tag is None
    assert bytes(parse_message(bytes(ringing))) == bytes(ringing)


def test_error_response_is_not_sent_for_ack_or_responses() -> None:
    error = RemoteProtocolError("x")
    ack = options().replace(b"OPTIONS", b"ACK")
    assert error_response(ack, error) is None
    ok = (GOLDEN / "ok_record_route.sip").read_bytes()
    assert error_response(ok, error) is None
    assert error_response(b"garbage without via", error) is None
    answer = error_response(options(), RemoteProtocolError("x", status=513), to_tag="t9")
    assert answer is not None
    assert (answer.status, answer.reason, answer.to.tag) == (513, "Message Too Large", "t9")


# -- UAS and UAC checks --------------------------------------------------------------------


def test_check_request_accepts_an_ordinary_request() -> None:
    assert check_request(parse_request((GOLDEN / "invite_sdp.sip").read_bytes())) is None


def test_check_request_unknown_scheme_gets_416() -> None:
    m = parse_request(options().replace(b"OPTIONS sip:bridge@example.net", b"OPTIONS urn:x:y"))
    answer = check_request(m)
    assert answer is not None
    assert answer.status == 416


def test_check_request_zero_max_forwards() -> None:
    """§16.3: 483 for a request the bridge would forward; OPTIONS it answers itself."""
    invite = parse_request(
        (GOLDEN / "invite_sdp.sip").read_bytes().replace(b"Max-Forwards: 69", b"Max-Forwards: 0")
    )
    answer = check_request(invite)
    assert answer is not None
    assert answer.status == 483
    assert (
        check_request(parse_request(options().replace(b"Max-Forwards: 70", b"Max-Forwards: 0")))
        is None
    )


def test_check_request_require_is_ignored_on_ack_and_cancel() -> None:
    ack = parse_request(
        options("Require: 100rel")
        .replace(b"OPTIONS sip", b"ACK sip")
        .replace(b"63104 OPTIONS", b"63104 ACK")
    )
    assert check_request(ack) is None
    answer = check_request(parse_request(options("Require: 100rel")))
    assert answer is not None
    assert answer.headers.get("Unsupported") == "100rel"
    assert (
        check_request(parse_request(options("Require: 100rel")), supported=frozenset({"100rel"}))
        is None
    )


def test_check_request_unsupported_body_type_gets_415_with_accept() -> None:
    m = parse_request(options("Content-Type: application/unknownformat", body=b"abc"))
    answer = check_request(m, accepted_types=frozenset({"application/sdp"}))
    assert answer is not None
    assert answer.status == 415
    assert answer.headers.get("Accept") == "application/sdp"
    assert check_request(m) is None


@pytest.mark.parametrize(
    "extra",
    [
        ("Contact: <sip:a@example.com>;;x",),
        ("Contact: *",),
        ("Route: sip:p.example.com?x=y",),
        ("Date: Sat, 13 Nov 2010 23:29:00 CET",),
        ("Date: yesterday",),
        ("Expires: soon",),
        ("Content-Length: 3",),
    ],
)
def test_check_request_header_syntax_gets_400(extra: tuple[str, ...]) -> None:
    body = b"abc" if any("Content-Length: 3" in e for e in extra) else b""
    m = parse_request(options(*extra, body=body))
    answer = check_request(m)
    assert answer is not None
    assert answer.status == 400


def test_check_request_wildcard_contact_for_register_with_expires_zero() -> None:
    register = (
        options("Contact: *", "Expires: 0")
        .replace(b"OPTIONS sip", b"REGISTER sip")
        .replace(b"63104 OPTIONS", b"63104 REGISTER")
    )
    m = parse_request(register)
    assert m.contact is None
    assert check_request(m) is None


def test_expires_seconds_falls_back_on_out_of_range_values() -> None:
    """RFC 4475 §3.1.2.4: an overlarge expiry may be treated as the default."""
    assert expires_seconds("300", 3600) == 300
    assert expires_seconds("1" + "0" * 100, 3600) == 3600
    assert expires_seconds("4294967296", 3600) == 3600
    assert expires_seconds(None, 3600) == 3600
    assert expires_seconds("x", 60) == 60
