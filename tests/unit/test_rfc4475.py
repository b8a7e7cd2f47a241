"""RFC 4475 torture tests: each message must parse to what the RFC says it means, or be
refused with the status the RFC calls for (by the parser, or by the UAS/UAC checks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.sip.checks import check_request, check_response
from bridge.sip.errors import RemoteProtocolError
from bridge.sip.message import Request, Response, error_response, parse_message

DATA = Path(__file__).resolve().parent.parent / "data" / "rfc4475"


def raw(name: str) -> bytes:
    return (DATA / name).read_bytes()


def request(name: str) -> Request:
    message = parse_message(raw(name))
    assert isinstance(message, Request)
    return message


def response(name: str) -> Response:
    message = parse_message(raw(name))
    assert isinstance(message, Response)
    return message


def test_every_message_in_the_corpus_is_covered_here() -> None:
    files = {p.name for p in DATA.iterdir() if p.suffix in (".valid", ".invalid")}
    covered = set(VALID) | {name for name, _ in PARSER_REJECTS} | SEMANTIC
    assert files == covered
    assert len(files) == 32


VALID = [
    "wsinv.valid",
    "intmeth.valid",
    "esc01.valid",
    "esc02.valid",
    "escnull.valid",
    "lwsdisp.valid",
    "longreq.valid",
    "dblreq.valid",
    "semiuri.valid",
    "transports.valid",
    "mpart01.valid",
    "unreason.valid",
    "noreason.valid",
]


@pytest.mark.parametrize("name", VALID)
def test_valid_message_parses_completely_and_passes_the_uas_checks(name: str) -> None:
    message = parse_message(raw(name))
    # Every structured accessor works on a valid message, not just the eager ones.
    assert message.vias
    assert message.from_.uri.host
    assert message.to.uri.host
    assert message.cseq.seq >= 0
    message.contacts  # noqa: B018
    message.routes  # noqa: B018
    if isinstance(message, Request):
        assert check_request(message) is None
    # Serialising and re-parsing gives the same message (§7: the wire form is canonical).
    again = parse_message(bytes(message))
    assert again.headers == message.headers
    assert again.body == message.body


def test_wsinv_short_tortuous_invite() -> None:
    """§3.1.1.1: LWS, folding, compact and odd-case names, escaped quotes, unknown headers."""
    m = request("wsinv.valid")
    assert m.method == "INVITE"
    assert m.uri.user == "vivekg"
    assert m.uri.host == "chair-dnrc.example.com"
    assert m.uri.params == (("unknownparam", None),)
    assert m.to.uri.user == "vivekg"
    assert m.to.tag == "1918181833n"
    assert m.from_.display_name == 'J Rosenberg \\"'
    assert m.from_.tag == "98asjd8"
    assert m.max_forwards == 68
    assert (m.cseq.seq, m.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.headers.get("Subject") == ""
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (route,) = m.routes
    assert route.uri.params == (("lr", None), ("unknownwith", "value"), ("unknown-no-value", None))
    (contact,) = m.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33"))
    assert m.content_type == "application/sdp"
    assert len(m.body) == 150


def test_intmeth_wide_range_of_valid_characters() -> None:
    """§3.1.1.2: token characters in the method, '?' and ';' in the user part, quoted-pairs
    of control characters, a UTF-8 parameter value, a Call-ID made of word characters."""
    m = request("intmeth.valid")
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert m.method == method
    assert m.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.uri.host == "example.com"
    assert m.uri.params == ()
    assert m.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    assert m.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.to.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert m.from_.param("fromparam''~+*_!.-%") == '"работающий"'
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert (m.cseq.seq, m.cseq.method) == (139122385, method)
    assert m.max_forwards == 255
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_esc01_escapes_are_decoded_once() -> None:
    """§3.1.1.3: %-escapes in user parts and URI parameter names and values; ``%25%34%31``
    is ``%41``, never ``A``."""
    m = request("esc01.valid")
    assert m.uri.user == "sips:user@example.com"
    assert m.uri.host == "example.net"
    assert str(m.uri) == "sip:sips%3Auser%40example.com@example.net"
    assert m.to.uri.user == "user"
    assert m.from_.uri.user == "I have spaces"
    (contact,) = m.contacts
    assert contact.uri.user == "caller"
    assert contact.uri.params == (("lr", None), ("name", "value%41"))


def test_esc02_percent_that_is_not_an_escape() -> None:
    """§3.1.1.5: % in a method, a quoted string, a branch and a header name is literal."""
    m = request("esc02.valid")
    assert m.method == "RE%47IST%45R"
    assert m.method != "REGISTER"
    assert m.cseq.method == "RE%47IST%45R"
    assert m.to.display_name == "%Z%45"
    assert m.top_via.branch == "z9hG4bK209%fzsnel234"
    assert [c.uri.user for c in m.contacts] == ["alias1", "alias3"]
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_escnull_escaped_nulls_in_user_parts() -> None:
    m = request("escnull.valid")
    assert m.to.uri.user == "null-\x00-null"
    assert m.from_.uri.user == "null-\x00-null"
    assert [c.uri.user for c in m.contacts] == ["\x00", "\x00\x00"]
    assert str(m.to.uri) == "sip:null-%00-null@example.com"


def test_lwsdisp_display_name_without_space_before_angle() -> None:
    m = request("lwsdisp.valid")
    assert m.from_.display_name == "caller"
    assert m.from_.uri.user == "caller"
    assert m.from_.tag == "323"


def test_longreq_long_values() -> None:
    m = request("longreq.valid")
    assert m.to.display_name == "I have a user name of " + "extreme" * 10 + " proportion"
    assert m.to.uri.port == 6000
    names = [name for name, _ in m.to.uri.params]
    assert names == [
        "unknownparam1",
        "longparam" + "name" * 25,
        "very" + "long" * 25 + "parameternamewithnovalue",
    ]
    assert m.to.uri.param("unknownparam1") == "very" + "long" * 20 + "value"
    assert m.from_.tag == "1" + "298" * 50 + "2424"
    assert m.from_.param("unknownheaderparam" + "name" * 20) == ("unknowheaderparam" + "value" * 15)
    assert m.from_.params[-1] == ("unknownvaluelessparam" + "nameparam" * 9 + "name", None)
    assert m.from_.uri.user == "amazinglylongcallername" * 5
    assert m.call_id == "longreq.one" + "really" * 20 + "longcallid"
    assert len(m.vias) == 34
    assert [v.host for v in m.vias[:3]] == [
        "sip33.example.com",
        "sip32.example.com",
        "sip31.example.com",
    ]
    assert (m.vias[-1].branch or "").endswith("branchvalue")
    assert m.vias[-1].param("received") == "192.0.2.5"
    unknown = m.headers.get("Unknown-" + "Long" * 20 + "-Name")
    assert unknown is not None
    assert unknown.startswith("unknown-" + "long" * 20 + "-value;")
    (contact,) = m.contacts
    assert contact.uri.user == "amazinglylongcallername" * 5
    assert len(m.body) == 150


def test_dblreq_only_the_first_request_of_the_datagram_counts() -> None:
    """§3.1.1.8: octets after Content-Length in a UDP datagram are noise (§18.3)."""
    m = request("dblreq.valid")
    assert m.method == "REGISTER"
    assert m.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    assert m.body == b""
    assert b"INVITE" not in bytes(m)


def test_semiuri_semicolon_in_user_part() -> None:
    m = request("semiuri.valid")
    assert m.uri.user == "user;par=u@example.net"
    assert m.uri.host == "example.com"
    assert m.uri.params == ()
    assert m.headers.get_all("Accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_transports_unknown_transport_types_are_kept() -> None:
    m = request("transports.valid")
    assert [v.transport for v in m.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert [v.host for v in m.vias] == [f"t{i}.example.com" for i in range(1, 6)]


def test_mpart01_binary_multipart_body_is_kept_byte_exact() -> None:
    data = raw("mpart01.valid")
    m = request("mpart01.valid")
    assert m.content_type == "multipart/mixed"
    assert len(m.body) == 553
    assert data.endswith(m.body)
    assert m.body.startswith(b"--7a9cbec02ceef655\r\nContent-Type: text/plain")
    assert m.body.endswith(b"--7a9cbec02ceef655--\r\n")


def test_unreason_utf8_reason_phrase() -> None:
    m = response("unreason.valid")
    assert m.status == 200
    assert m.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert check_response(m) is None


def test_noreason_empty_reason_phrase() -> None:
    m = response("noreason.valid")
    assert m.status == 100
    assert m.reason == ""


# §3.1.2 and §3.3: refused by the parser, with the status the RFC names.
PARSER_REJECTS = [
    ("badinv01.invalid", 400),  # §3.1.2.1 extraneous ';' and ',' in Via and Contact
    ("clerr.invalid", 400),  # §3.1.2.2 Content-Length larger than the datagram
    ("scalar02.invalid", 400),  # §3.1.2.4 CSeq >= 2**32 in a request
    ("quotbal.invalid", 400),  # §3.1.2.6 unterminated quoted string
    ("ltgtruri.invalid", 400),  # §3.1.2.7 Request-URI in <>
    ("lwsruri.invalid", 400),  # §3.1.2.8 LWS inside the Request-URI
    ("lwsstart.invalid", 400),  # §3.1.2.9 several SP in the request line
    ("trws.invalid", 400),  # §3.1.2.10 SP after the SIP-Version
    ("escruri.invalid", 400),  # §3.1.2.11 escaped headers in the Request-URI
    ("badaspec.invalid", 400),  # §3.1.2.14 LWS inside <addr-spec>
    ("baddn.invalid", 400),  # §3.1.2.15 non-token characters in an unquoted display name
    ("badvers.invalid", 505),  # §3.1.2.16 SIP/7.0
    ("mismatch01.invalid", 400),  # §3.1.2.17 CSeq method differs from the request method
    ("insuf.invalid", 400),  # §3.3.1 To, From, Call-ID missing
    ("scalarlg.invalid", 400),  # §3.1.2.5 overlarge CSeq in a response: dropped, see below
]


@pytest.mark.parametrize(("name", "status"), PARSER_REJECTS)
def test_invalid_message_is_refused_with_the_rfc_status(name: str, status: int) -> None:
    data = raw(name)
    with pytest.raises(RemoteProtocolError) as caught:
        parse_message(data)
    assert caught.value.status == status
    answer = error_response(data, caught.value, to_tag="t1")
    if data.startswith(b"SIP/"):
        # A response cannot be answered: the transport drops it.
        assert answer is None
        return
    assert answer is not None
    assert answer.status == status
    assert bytes(answer).startswith(f"SIP/2.0 {status} ".encode())
    via_lines = [line for line in data.split(b"\r\n") if line.startswith(b"Via:")]
    assert answer.headers.get_all("Via") == [line[4:].decode().strip() for line in via_lines]


def test_insuf_answer_still_echoes_what_is_there() -> None:
    data = raw("insuf.invalid")
    with pytest.raises(RemoteProtocolError) as caught:
        parse_message(data)
    answer = error_response(data, caught.value)
    assert answer is not None
    assert answer.headers.get("CSeq") == "193942 INVITE"
    assert answer.headers.get("Via") == "SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf"
    assert "Call-ID" not in answer.headers


def test_badvers_answer_says_version_not_supported() -> None:
    data = raw("badvers.invalid")
    with pytest.raises(RemoteProtocolError) as caught:
        parse_message(data)
    answer = error_response(data, caught.value)
    assert answer is not None
    assert (answer.status, answer.reason) == (505, "Version Not Supported")


# §3.1.2 and §3.3 messages that parse but that a UAS or UAC must refuse.
SEMANTIC = {
    "baddate.invalid",
    "regbadct.invalid",
    "bext01.invalid",
    "bcast.invalid",
}


def test_baddate_non_gmt_date_gets_400() -> None:
    """§3.1.2.12: ``Date`` must be in GMT."""
    m = request("baddate.invalid")
    assert m.headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"
    answer = check_request(m)
    assert answer is not None
    assert answer.status == 400
    assert "Date" in answer.reason
    assert answer.call_id == m.call_id


def test_regbadct_contact_with_headers_must_use_angle_brackets() -> None:
    """§3.1.2.13: an addr-spec carrying '?' must be a name-addr."""
    m = request("regbadct.invalid")
    answer = check_request(m)
    assert answer is not None
    assert answer.status == 400
    assert "Contact" in answer.reason


def test_bext01_unknown_require_gets_420_listing_the_tags() -> None:
    """§3.3.5: a UAS answers 420 with Unsupported naming each Require tag it lacks; the
    Proxy-Require tags are not a UAS's business."""
    m = request("bext01.invalid")
    answer = check_request(m, supported=frozenset({"replaces", "timer"}))
    assert answer is not None
    assert answer.status == 420
    assert answer.headers.get_all("Unsupported") == [
        "nothingSupportsThis, nothingSupportsThisEither"
    ]
    reparsed = parse_message(bytes(answer))
    assert reparsed.option_tags("Unsupported") == {
        "nothingSupportsThis",
        "nothingSupportsThisEither",
    }
    both = frozenset({"nothingSupportsThis", "nothingSupportsThisEither"})
    assert check_request(m, supported=both) is None


def test_bcast_response_with_broadcast_second_via_is_dropped() -> None:
    """§3.3.10: the message parses, but a UAC discards a response with more than one Via
    (RFC 3261 §8.1.3.3); its second Via is the broadcast address."""
    m = response("bcast.invalid")
    assert [v.host for v in m.vias] == ["192.0.2.198", "255.255.255.255"]
    reason = check_response(m)
    assert reason is not None
    assert "Via" in reason
