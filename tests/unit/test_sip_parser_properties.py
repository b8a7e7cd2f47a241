"""Property tests of the SIP parser: generated valid messages round-trip exactly; arbitrary
and mutated bytes never raise anything but RemoteProtocolError; the regex fast paths accept
nothing the full parsers refuse; stream framing does not depend on how bytes arrive."""

from __future__ import annotations

import contextlib
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bridge.sip.checks import check_request, check_response
from bridge.sip.errors import RemoteProtocolError
from bridge.sip.headers import (
    _PLAIN_CSEQ,
    _PLAIN_VIA,
    Headers,
    Via,
    _parse_cseq,
    _parse_via,
    _parse_via_fully,
)
from bridge.sip.message import Message, Request, Response, StreamFramer, parse_message
from bridge.sip.uri import (
    _PLAIN_NAME_ADDR,
    TOKEN_CHARS,
    NameAddr,
    Params,
    SipUri,
    _parse_name_addr,
    _parse_name_addr_fully,
)

DATA = Path(__file__).resolve().parent.parent / "data"
SEEDS = sorted(
    [p.read_bytes() for p in (DATA / "golden").glob("*.sip")]
    + [p.read_bytes() for p in (DATA / "rfc4475").glob("*.valid")]
)

FAST = settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])

tokens = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=10)
lower_tokens = tokens.map(str.lower)
labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
hostnames = st.lists(labels, min_size=1, max_size=4).map(".".join)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.lists(st.from_regex(r"[0-9a-f]{1,4}", fullmatch=True), min_size=8, max_size=8).map(
    lambda groups: "[" + ":".join(groups) + "]"
)
hosts = st.one_of(hostnames, ipv4, ipv6)
ports = st.none() | st.integers(1, 65535)
# Anything goes in escaped parts, except surrogates (not text) and, in header values, line breaks.
free_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
line_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=20
).map(lambda s: s.strip(" \t"))

uri_params: st.SearchStrategy[Params] = st.lists(
    st.tuples(free_text.map(str.lower).filter(bool), st.none() | free_text), max_size=3
).map(tuple)
gen_values = st.one_of(
    st.none(),
    st.text(alphabet=TOKEN_CHARS + ":[]", min_size=1, max_size=10),
    line_text.map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'),
)
header_params: st.SearchStrategy[Params] = st.lists(
    st.tuples(lower_tokens, gen_values), max_size=3
).map(tuple)


@st.composite
def sip_uris(draw: st.DrawFn, *, with_headers: bool = True) -> SipUri:
    user = draw(st.none() | free_text.filter(bool))
    return SipUri(
        scheme=draw(st.sampled_from(["sip", "sips"])),
        user=user,
        password=draw(st.none() | free_text) if user is not None else None,
        host=draw(hosts),
        port=draw(ports),
        params=draw(uri_params),
        headers=draw(
            st.lists(st.tuples(free_text.filter(bool), free_text), max_size=2).map(tuple)
            if with_headers
            else st.just(())
        ),
    )


@st.composite
def name_addrs(draw: st.DrawFn) -> NameAddr:
    display = draw(st.none() | line_text.filter(bool))
    return NameAddr(uri=draw(sip_uris()), display_name=display, params=draw(header_params))


@st.composite
def vias(draw: st.DrawFn) -> Via:
    return Via(
        transport=draw(
            st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"]) | tokens.map(str.upper)
        ),
        host=draw(hosts),
        port=draw(ports),
        params=(("branch", "z9hG4bK" + draw(tokens)), *draw(header_params)),
    )


call_ids = st.from_regex(
    r"[A-Za-z0-9.!%*_+`'~()<>:\\\"/\[\]?{}-]{1,20}(@[A-Za-z0-9.-]{1,10})?", fullmatch=True
)


@st.composite
def common_headers(draw: st.DrawFn, method: str) -> tuple[list[tuple[str, str]], bytes]:
    items = [("Via", str(v)) for v in draw(st.lists(vias(), min_size=1, max_size=3))]
    items += [
        ("Max-Forwards", str(draw(st.integers(0, 255)))),
        ("From", str(draw(name_addrs()))),
        ("To", str(draw(name_addrs()))),
        ("Call-ID", draw(call_ids)),
        ("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}"),
    ]
    items += [("Contact", str(c)) for c in draw(st.lists(name_addrs(), max_size=2))]
    items += [("Supported", t) for t in draw(st.lists(tokens, max_size=3))]
    items += draw(st.lists(st.tuples(tokens.map(lambda t: "X-" + t), line_text), max_size=3))
    items = draw(st.permutations(items))
    body = draw(st.binary(max_size=40))
    if body:
        items.append(("Content-Type", "application/octet-stream"))
    items.append(("Content-Length", str(len(body))))
    return items, body


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(st.sampled_from(["INVITE", "ACK", "BYE", "REFER", "NOTIFY"]) | tokens)
    items, body = draw(common_headers(method))
    return Request(
        method=method, uri=draw(sip_uris(with_headers=False)), headers=Headers(items), body=body
    )


@st.composite
def responses(draw: st.DrawFn) -> Response:
    method = draw(st.sampled_from(["INVITE", "BYE"]) | tokens)
    items, body = draw(common_headers(method))
    reason = draw(line_text.filter(bool))
    return Response(
        status=draw(st.integers(100, 699)), reason=reason, headers=Headers(items), body=body
    )


@FAST
@given(sip_uris())
def test_uri_round_trip(uri: SipUri) -> None:
    assert SipUri.parse(str(uri)) == uri


@FAST
@given(name_addrs())
def test_name_addr_round_trip(addr: NameAddr) -> None:
    assert NameAddr.parse(str(addr)) == addr


@FAST
@given(vias())
def test_via_round_trip(via: Via) -> None:
    assert Via.parse(str(via)) == via


@FAST
@given(st.one_of(requests(), responses()))
def test_generated_messages_round_trip_exactly(message: Message) -> None:
    data = bytes(message)
    parsed = parse_message(data)
    assert parsed == message
    assert bytes(parsed) == data
    assert parse_message(data, stream=True) == message
    assert [str(v) for v in parsed.vias] == parsed.headers.get_all("Via")
    assert str(parsed.from_) == message.headers.get("From")


def _exercise(message: Message) -> None:
    """Every reader of a parsed message either works or raises RemoteProtocolError."""
    for read in (
        lambda: message.vias,
        lambda: message.from_,
        lambda: message.to,
        lambda: message.cseq,
        lambda: message.contacts,
        lambda: message.routes,
        lambda: message.record_routes,
        lambda: message.max_forwards,
        lambda: check_request(message) if isinstance(message, Request) else check_response(message),
    ):
        with contextlib.suppress(RemoteProtocolError):
            read()


def _without_length(headers: Headers) -> list[tuple[str, str]]:
    return [item for item in headers if item[0] != "Content-Length"]


def _check_bytes(data: bytes) -> None:
    try:
        message = parse_message(data)
    except RemoteProtocolError:
        return
    _exercise(message)
    again = parse_message(bytes(message))
    assert _without_length(again.headers) == _without_length(message.headers)
    assert again.body == message.body


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_only_raise_remote_protocol_errors(data: bytes) -> None:
    _check_bytes(data)


fragments = st.sampled_from(
    [
        "INVITE sip:a@b SIP/2.0",
        "SIP/2.0 200 OK",
        "\r\n",
        "\n",
        "\r",
        " ",
        "\t",
        ":",
        ";",
        ",",
        "<",
        ">",
        '"',
        "\\",
        "@",
        "%",
        "%4",
        "%41",
        "=",
        "?",
        "[",
        "]",
        "[::1]",
        "sip:",
        "tel:",
        "Via: SIP/2.0/UDP h",
        "v:",
        "From: ",
        "To: ",
        "f:",
        "t:",
        "Call-ID: x",
        "i:",
        "CSeq: 1 ",
        "INVITE",
        "Content-Length: ",
        "l:",
        "0",
        "9",
        "65536",
        "Max-Forwards: ",
        "Contact: ",
        "*",
        "tag=",
        "branch=z9hG4bK",
        "Route: ",
        "\x00",
        "é",
        "\ufeff",
        "99999999999999999999",
    ]
)


@settings(deadline=None, max_examples=300)
@given(st.lists(fragments, max_size=40).map("".join))
def test_sip_shaped_garbage_only_raises_remote_protocol_errors(text: str) -> None:
    _check_bytes(text.encode("utf-8"))


@st.composite
def mutated_seeds(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "truncate"]))
        if action == "flip" and position < len(data):
            data[position] = draw(st.integers(0, 255))
        elif action == "insert":
            data[position:position] = draw(
                st.sampled_from([b"\r\n", b" ", b",", b";", b":", b'"', b"<", b"%", b"\x00", b"\r"])
            )
        elif action == "delete":
            del data[position : position + draw(st.integers(1, 8))]
        elif action == "duplicate":
            end = data.find(b"\r\n", position)
            if end > 0:
                start = data.rfind(b"\r\n", 0, position) + 2
                data[end:end] = data[start - 2 : end]
        else:
            del data[position:]
    return bytes(data)


@settings(deadline=None, max_examples=400)
@given(mutated_seeds())
def test_mutated_golden_messages_only_raise_remote_protocol_errors(data: bytes) -> None:
    _check_bytes(data)


@settings(deadline=None, max_examples=80)
@given(st.from_regex(_PLAIN_NAME_ADDR, fullmatch=True))
def test_name_addr_fast_path_agrees_with_the_full_parser(text: str) -> None:
    assert _parse_name_addr.__wrapped__(text) == _parse_name_addr_fully(text)


@settings(deadline=None, max_examples=100)
@given(st.from_regex(_PLAIN_VIA, fullmatch=True))
def test_via_fast_path_agrees_with_the_full_parser(text: str) -> None:
    assert _parse_via.__wrapped__(text) == _parse_via_fully(text)


@settings(deadline=None, max_examples=100)
@given(st.from_regex(_PLAIN_CSEQ, fullmatch=True))
def test_cseq_fast_path_accepts_only_what_the_parser_accepts(text: str) -> None:
    match = _PLAIN_CSEQ.fullmatch(text)
    assert match is not None
    assert _parse_cseq.__wrapped__(text).method == match[2]


@settings(deadline=None, max_examples=100)
@given(
    st.lists(st.sampled_from(SEEDS[:8]), min_size=1, max_size=4),
    st.lists(st.integers(0, 4000), max_size=12),
    st.sampled_from([b"", b"\r\n", b"\r\n\r\n"]),
)
def test_framing_does_not_depend_on_chunk_boundaries(
    messages: list[bytes], cuts: list[int], keepalive: bytes
) -> None:
    framed = [m[: m.find(b"\r\n\r\n") + 4 + parse_message(m).body.__len__()] for m in messages]
    assume(all(b"Content-Length" in m or b"\r\nl:" in m or b"\r\nL:" in m for m in framed))
    stream = b"".join(keepalive + m for m in framed)
    framer = StreamFramer()
    frames: list[bytes] = []
    last = 0
    for cut in sorted({c for c in cuts if c < len(stream)} | {len(stream)}):
        frames += framer.feed(stream[last:cut])
        last = cut
    assert frames == framed
    assert framer.pending == 0
