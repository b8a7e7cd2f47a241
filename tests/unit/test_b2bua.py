"""The B2BUA core driven with raw SIP bytes and a fake clock: no sockets, no asyncio."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from bridge.calls.admission import Admission
from bridge.calls.b2bua import B2BUA
from bridge.calls.call import CallState, LegState
from bridge.calls.legs import ANSWERLESS_2XX
from bridge.calls.ports import Destination, MediaUnavailable, Origin, RouteResult
from bridge.sip import transaction as tx
from bridge.sip.message import Request, Response, parse_message
from bridge.sip.sdp import SessionDescription
from bridge.sip.uri import SipUri

BRIDGE = ("127.0.0.1", 5060)
CALLER = ("127.0.0.1", 5071)
CALLEE = ("127.0.0.1", 5072)
BACKUP = ("127.0.0.1", 5073)

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 6000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
)


@dataclass
class FakeMediaLeg:
    port: int
    host: str = "127.0.0.1"
    remote: tuple[str, int, int | None] | None = None
    telephone_event_pt: int | None = None


@dataclass
class FakeMedia:
    capacity: int = 100
    next_port: int = 20000
    live: set[int] = field(default_factory=set)
    connected: list[tuple[int, int]] = field(default_factory=list)
    conferences: list[list[int]] = field(default_factory=list)
    private: list[int] = field(default_factory=list)
    held: set[int] = field(default_factory=set)
    modes: dict[int, tuple[str, int | None]] = field(default_factory=dict)
    near: dict[int, int | None] = field(default_factory=dict)

    def allocate(self, near: FakeMediaLeg | None = None) -> FakeMediaLeg:
        if len(self.live) >= self.capacity:
            raise MediaUnavailable("pool empty")
        leg = FakeMediaLeg(self.next_port)
        self.near[leg.port] = None if near is None else near.port
        self.next_port += 2
        self.live.add(leg.port)
        return leg

    def point(
        self,
        leg: FakeMediaLeg,
        host: str,
        port: int,
        payload_type: int | None,
        *,
        telephone_event_pt: int | None,
    ) -> None:
        leg.remote = (host, port, payload_type)
        leg.telephone_event_pt = telephone_event_pt

    def connect(self, a: FakeMediaLeg, b: FakeMediaLeg) -> None:
        self.connected.append((a.port, b.port))

    def hold(self, leg: FakeMediaLeg) -> None:
        self.held.add(leg.port)

    def unhold(self, leg: FakeMediaLeg) -> None:
        self.held.discard(leg.port)

    def private_keys(self, leg: FakeMediaLeg) -> None:
        self.private.append(leg.port)

    def conference(self, legs: list[FakeMediaLeg]) -> None:
        self.conferences.append([leg.port for leg in legs])

    def set_mode(
        self, leg: FakeMediaLeg, mode: str, whisper_to: FakeMediaLeg | None = None
    ) -> None:
        self.modes[leg.port] = (mode, whisper_to.port if whisper_to is not None else None)

    def release(self, leg: FakeMediaLeg) -> None:
        self.live.discard(leg.port)


@dataclass(frozen=True)
class FeatureCode:
    action: str
    destination: str | None


class FakeRouting:
    def __init__(
        self, *destinations: tuple[str, int], ring_timeout: float = 30.0, transport: str = "UDP"
    ) -> None:
        self.destinations = destinations
        self.ring_timeout = ring_timeout
        self.transport = transport

    def identify(self, request: Request, source: tuple[str, int]) -> Origin | None:
        if source == CALLER:
            return Origin(kind="trunk", name="carrier", platform="12345")
        return None

    digit_timeout = 3.0

    def match_feature_code(self, digits: str) -> object:
        codes = {"*1": FeatureCode("transfer", "110"), "*2": FeatureCode("three_way", "110")}
        codes["*0"] = FeatureCode("cancel", None)
        if digits in codes:
            return codes[digits]
        return "partial" if digits == "*" else None

    def route(self, request: Request, origin: Origin, now: float) -> RouteResult | None:
        if request.uri.user == "404":
            return None
        dests = tuple(
            Destination(
                uri=SipUri(user="110", host=h, port=p),
                address=(h, p),
                transport=self.transport,
                peer=f"pbx-{p}",
                ring_timeout=self.ring_timeout,
            )
            for h, p in self.destinations
        )
        return RouteResult(
            origin=origin.platform,
            destinations=dests,
            reason="test",
            urgent=request.uri.user == "110",
        )


def invite(call_id: str = "c1", user: str = "110", branch: str = "z9hG4bKa1") -> bytes:
    return (
        f"INVITE sip:{user}@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5071;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:13800138000@127.0.0.1:5071>;tag=caller1\r\n"
        f"To: <sip:{user}@127.0.0.1:5060>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:caller@127.0.0.1:5071>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n"
    ).encode() + SDP


class Harness:
    def __init__(
        self,
        *destinations: tuple[str, int],
        capacity: int = 100,
        ring: float = 30.0,
        transport: str = "UDP",
        admission: Admission | None = None,
    ):
        self.media = FakeMedia(capacity=capacity)
        self.core = B2BUA(
            local=BRIDGE,
            advertised_host="127.0.0.1",
            routing=FakeRouting(
                *(destinations or (CALLEE,)), ring_timeout=ring, transport=transport
            ),
            media=self.media,
            admission=admission,
        )
        self.now = 1000.0

    def feed(self, data: bytes, source: tuple[str, int]) -> None:
        self.core.receive(data, source, "UDP", self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.core.handle_timers(self.now)

    def sent(self) -> list[tuple[tuple[str, int], Request | Response]]:
        return [(out.destination, parse_message(out.data)) for out in self.core.take_outgoing()]

    def sent_to(self, who: tuple[str, int]) -> list[Request | Response]:
        return [m for dest, m in self.sent() if dest == who]


def to_with_tag(to: str, tag: str) -> str:
    """A response's To: the request's, plus our tag unless the dialog already has one."""
    return to if not tag or ";tag=" in to else f"{to};tag={tag}"


def answer(
    request: Request,
    status: int,
    *,
    tag: str = "callee1",
    sdp: bytes = b"",
    contact: str = "sip:pbx@127.0.0.1:5072",
    reason: str = "X",
) -> bytes:
    lines = [f"SIP/2.0 {status} {reason}"]
    for via in request.headers.get_all("Via"):
        lines.append(f"Via: {via}")
    lines += [
        f"From: {request.headers.get('From')}",
        f"To: {to_with_tag(request.headers.get('To') or '', tag)}",
        f"Call-ID: {request.call_id}",
        f"CSeq: {request.headers.get('CSeq')}",
        f"Contact: <{contact}>",
    ]
    if sdp:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(sdp)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + sdp


def request_in_dialog(method: str, response_200: Response, cseq: int, branch: str) -> bytes:
    """A request from the caller inside the dialog the bridge's 200 OK set up."""
    return (
        f"{method} sip:bridge@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5071;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {response_200.headers.get('From')}\r\n"
        f"To: {response_200.headers.get('To')}\r\n"
        f"Call-ID: {response_200.call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def establish(h: Harness) -> tuple[Request, Response]:
    """Caller → bridge → callee answered; returns the outgoing INVITE and the caller's 200."""
    h.feed(invite(), CALLER)
    out = h.sent_to(CALLEE)
    inv = next(m for m in out if isinstance(m, Request))
    h.feed(answer(inv, 200, sdp=SDP), CALLEE)
    to_caller = [m for m in h.sent_to(CALLER) if isinstance(m, Response)]
    ok = next(m for m in to_caller if m.status == 200)
    h.feed(request_in_dialog("ACK", ok, 1, "z9hG4bKack1"), CALLER)
    return inv, ok


def test_call_is_bridged_with_anchored_media() -> None:
    h = Harness()
    h.feed(invite(), CALLER)
    sent = h.sent()
    trying = [m for d, m in sent if d == CALLER]
    assert [m.status for m in trying if isinstance(m, Response)] == [100]
    inv = next(m for d, m in sent if d == CALLEE and isinstance(m, Request))
    assert inv.method == "INVITE"
    assert inv.call_id != "c1", "a B2BUA starts its own dialog"
    assert inv.from_.tag
    assert inv.from_.tag != "caller1"
    assert b"c=IN IP4 127.0.0.1" in inv.body
    assert b"m=audio 20002 " in inv.body
    assert inv.headers.get("Max-Forwards") == "69"
    # Media split over worker processes keeps a call's legs together by this hint.
    assert h.media.near == {20000: None, 20002: 20000}

    h.feed(answer(inv, 180), CALLEE)
    assert [m.status for m in h.sent_to(CALLER) if isinstance(m, Response)] == [180]

    h.feed(answer(inv, 200, sdp=SDP), CALLEE)
    sent = h.sent()
    ack = next(m for d, m in sent if d == CALLEE and isinstance(m, Request))
    assert ack.method == "ACK"
    assert ack.cseq.seq == 1
    ok = next(m for d, m in sent if d == CALLER and isinstance(m, Response))
    assert ok.status == 200
    assert ok.to.tag
    assert b"m=audio 20000 " in ok.body
    assert h.media.connected == [(20000, 20002)]
    call = next(iter(h.core.calls.values()))
    assert call.state is CallState.ANSWERED


def bye_from_callee(inv: Request) -> bytes:
    """The callee's BYE in the dialog of the bridge's INVITE ``inv`` (callee tag callee1)."""
    return (
        "BYE sip:bridge@127.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bKbye1\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {inv.headers.get('To')};tag=callee1\r\n"
        f"To: {inv.headers.get('From')}\r\n"
        f"Call-ID: {inv.call_id}\r\n"
        "CSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_bye_from_callee_ends_both_legs_and_frees_ports() -> None:
    h = Harness()
    inv, _ok = establish(h)
    h.feed(bye_from_callee(inv), CALLEE)
    sent = h.sent()
    assert any(isinstance(m, Response) and m.status == 200 for d, m in sent if d == CALLEE)
    bye_out = next(m for d, m in sent if d == CALLER and isinstance(m, Request))
    assert bye_out.method == "BYE"
    h.feed(answer(bye_out, 200, tag=bye_out.to.tag or ""), CALLER)
    assert h.core.calls == {}
    assert h.media.live == set()
    # Nothing of the call is left behind (a leak here grows by one entry per call).
    assert not h.core._by_client
    assert not h.core._by_dialog
    assert not h.core._ring_deadlines


def test_cancel_before_answer() -> None:
    h = Harness()
    h.feed(invite(), CALLER)
    inv = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(answer(inv, 180), CALLEE)
    h.sent()
    cancel = invite().split(b"\r\n\r\n")[0].replace(b"INVITE sip", b"CANCEL sip")
    cancel = cancel.replace(b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL")
    cancel = cancel.replace(b"Content-Type: application/sdp\r\n", b"")
    cancel = cancel.split(b"Content-Length")[0] + b"Content-Length: 0\r\n\r\n"
    h.feed(cancel, CALLER)
    sent = h.sent()
    statuses = sorted(m.status for d, m in sent if d == CALLER and isinstance(m, Response))
    assert statuses == [200, 487]
    assert any(isinstance(m, Request) and m.method == "CANCEL" for d, m in sent if d == CALLEE)


@pytest.mark.parametrize("status", [486, 503])
def test_failover_then_caller_gets_clean_failure(status: int) -> None:
    h = Harness(CALLEE, BACKUP)
    h.feed(invite(), CALLER)
    first = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(answer(first, status), CALLEE)
    sent = h.sent()
    second = next(m for d, m in sent if d == BACKUP and isinstance(m, Request))
    assert second.method == "INVITE"
    assert not [m for d, m in sent if d == CALLER and isinstance(m, Response) and m.status >= 300]
    h.feed(answer(second, status), BACKUP)
    final = [m for m in h.sent_to(CALLER) if isinstance(m, Response) and m.status >= 300]
    assert [m.status for m in final] == [486 if status == 486 else 503]
    assert h.media.live == set()


def test_unreachable_trunk_times_out_to_clean_failure() -> None:
    h = Harness(ring=120.0)
    h.feed(invite(), CALLER)
    h.sent()
    for _ in range(80):
        h.advance(0.5)
    final = [m for m in h.sent_to(CALLER) if isinstance(m, Response) and m.status >= 300]
    # Timer B (64*T1) gives up on the trunk; the final is retransmitted until the caller ACKs.
    assert final
    assert {m.status for m in final} == {480}
    assert h.core.calls == {}


def test_ring_timeout_cancels_and_fails_over() -> None:
    h = Harness(CALLEE, BACKUP, ring=5.0)
    h.feed(invite(), CALLER)
    first = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(answer(first, 180), CALLEE)
    h.sent()
    h.advance(5.1)
    sent = h.sent()
    assert any(isinstance(m, Request) and m.method == "CANCEL" for d, m in sent if d == CALLEE)
    assert any(isinstance(m, Request) and m.method == "INVITE" for d, m in sent if d == BACKUP)
    call = next(iter(h.core.calls.values()))
    failovers = [e.data for e in call.history if e.kind == "failover"]
    assert failovers == [{"status": 408, "leg": "b1", "reason": "No Answer"}]


@pytest.mark.parametrize(("phrase", "reason"), [("Line Busy", "Line Busy"), ("", "Busy Here")])
def test_failover_records_why_the_destination_failed(phrase: str, reason: str) -> None:
    """The failover in the call's history (the audit log's ``call.failover``) says why: the
    destination's own Reason-Phrase, or the standard one for its status when it sent none
    (RFC 3261 §7.2, §21)."""
    h = Harness(CALLEE, BACKUP)
    h.feed(invite(), CALLER)
    first = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(answer(first, 486, reason=phrase), CALLEE)
    assert [m.method for m in h.sent_to(BACKUP) if isinstance(m, Request)] == ["INVITE"]
    call = next(iter(h.core.calls.values()))
    failovers = [e.data for e in call.history if e.kind == "failover"]
    assert failovers == [{"status": 486, "leg": "b1", "reason": reason}]


@pytest.mark.parametrize(("phrase", "reason"), [("Line Busy", "Line Busy"), ("", "Busy Here")])
def test_the_last_destination_failing_records_why(phrase: str, reason: str) -> None:
    """With no destination left, the call's ``attempt_failed`` says why as a failover does:
    the destination's own Reason-Phrase, or the standard one for its status (RFC 3261 §7.2,
    §21)."""
    h = Harness()
    h.feed(invite(), CALLER)
    first = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(answer(first, 486, reason=phrase), CALLEE)
    failed = [e.data for e in h.core.take_events() if e.kind == "attempt_failed"]
    assert failed == [{"status": 486, "reason": reason}]


def test_the_last_destination_ringing_out_records_no_answer() -> None:
    h = Harness(ring=5.0)
    h.feed(invite(), CALLER)
    first = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(answer(first, 180), CALLEE)
    h.advance(5.1)
    failed = [e.data for e in h.core.take_events() if e.kind == "attempt_failed"]
    assert failed == [{"status": 408, "reason": "No Answer"}]


def test_no_route_is_404_and_no_media_is_503() -> None:
    h = Harness()
    h.feed(invite(user="404"), CALLER)
    assert [m.status for m in h.sent_to(CALLER) if isinstance(m, Response)] == [100, 404]
    h = Harness(capacity=0)
    h.feed(invite(), CALLER)
    assert [m.status for m in h.sent_to(CALLER) if isinstance(m, Response)] == [100, 503]


def test_untrusted_source_is_refused() -> None:
    h = Harness()
    h.feed(invite(), ("127.0.0.9", 5999))
    assert [m.status for d, m in h.sent() if isinstance(m, Response)] == [403]


def test_out_of_dialog_requests() -> None:
    h = Harness()
    options = invite().replace(b"INVITE sip", b"OPTIONS sip").replace(b"1 INVITE", b"1 OPTIONS")
    h.feed(options, CALLER)
    (resp,) = h.sent_to(CALLER)
    assert isinstance(resp, Response)
    assert resp.status == 200
    assert "INVITE" in (resp.headers.get("Allow") or "")
    bye = invite().replace(b"INVITE sip", b"BYE sip").replace(b"1 INVITE", b"1 BYE")
    bye = bye.replace(b"To: <sip:110@127.0.0.1:5060>", b"To: <sip:110@127.0.0.1:5060>;tag=zz")
    h.feed(bye, CALLER)
    assert [m.status for m in h.sent_to(CALLER) if isinstance(m, Response)] == [481]
    odd = invite().replace(b"INVITE sip", b"FOO sip").replace(b"1 INVITE", b"1 FOO")
    h.feed(odd, CALLER)
    assert [m.status for m in h.sent_to(CALLER) if isinstance(m, Response)] == [501]
    sub = invite().replace(b"INVITE sip", b"SUBSCRIBE sip").replace(b"1 INVITE", b"1 SUBSCRIBE")
    h.feed(sub, CALLER)
    assert [m.status for m in h.sent_to(CALLER) if isinstance(m, Response)] == [405]


def test_garbage_gets_400_when_addressable_and_is_dropped_otherwise() -> None:
    h = Harness()
    h.feed(b"\x00\x01garbage", CALLER)
    assert h.sent() == []
    bad = invite().replace(b"INVITE sip:110@127.0.0.1:5060 SIP/2.0", b"INVITE  sip:110@x SIP/2.0")
    h.feed(bad, CALLER)
    assert [m.status for m in h.sent_to(CALLER) if isinstance(m, Response)] == [400]
    assert h.core.counters.parse_errors == 2


def test_late_2xx_retransmission_is_acked_again() -> None:
    h = Harness()
    inv, _ok = establish(h)
    h.advance(40.0)  # the INVITE client transaction is long gone (Timer M)
    h.sent()
    h.feed(answer(inv, 200, sdp=SDP), CALLEE)
    acks = [m for m in h.sent_to(CALLEE) if isinstance(m, Request)]
    assert [m.method for m in acks] == ["ACK"]
    assert acks[0].to.tag == "callee1"


def test_semantic_checks_answer_before_any_call_starts() -> None:
    h = Harness()
    required = invite().replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nRequire: foo\r\n")
    h.feed(required, CALLER)
    (resp,) = h.sent_to(CALLER)
    assert isinstance(resp, Response)
    assert resp.status == 420
    assert resp.headers.get("Unsupported") == "foo"
    hops = invite(call_id="c2", branch="z9hG4bKmf0").replace(
        b"Max-Forwards: 70", b"Max-Forwards: 0"
    )
    h.feed(hops, CALLER)
    assert [m.status for m in h.sent_to(CALLER) if isinstance(m, Response)] == [483]
    assert h.core.calls == {}


def test_response_meant_for_a_proxy_is_dropped() -> None:
    h = Harness()
    h.feed(invite(), CALLER)
    inv = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    two_vias = answer(inv, 486).replace(
        b"Via: ", b"Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bKx\r\nVia: ", 1
    )
    h.feed(two_vias, CALLEE)
    assert not [m for m in h.sent_to(CALLER) if isinstance(m, Response) and m.status >= 300]
    assert h.core.counters.dropped_responses == 1


def test_the_callers_codec_is_the_one_the_callee_chose() -> None:
    """Caller offers PCMA then PCMU; the callee answers PCMU only: we must send PCMU to both."""
    h = Harness()
    h.feed(invite(), CALLER)
    inv = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    pcmu_only = SDP.replace(b"RTP/AVP 8 0 101", b"RTP/AVP 0 101").replace(
        b"a=rtpmap:8 PCMA/8000\r\n", b""
    )
    h.feed(answer(inv, 200, sdp=pcmu_only), CALLEE)
    call = next(iter(h.core.calls.values()))
    assert call.caller.media.remote == ("127.0.0.1", 6000, 0)
    assert call.legs["b1"].media.remote == ("127.0.0.1", 6000, 0)


def reinvite_from_callee(inv: Request, cseq: int, direction: bytes) -> bytes:
    body = SDP.replace(b"a=sendrecv", direction)
    return (
        "INVITE sip:bridge@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bKre{cseq}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {inv.headers.get('To')};tag=callee1\r\n"
        f"To: {inv.headers.get('From')}\r\n"
        f"Call-ID: {inv.call_id}\r\n"
        f"CSeq: {cseq} INVITE\r\nContact: <sip:pbx@127.0.0.1:5072>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_hold_is_mirrored_and_the_held_caller_hears_the_hold_tone() -> None:
    h = Harness()
    inv, ok = establish(h)
    h.sent()
    caller_port = next(iter(h.core.calls.values())).caller.media.port
    h.feed(reinvite_from_callee(inv, 2, b"a=sendonly"), CALLEE)
    mirrored = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    assert mirrored.method == "INVITE"
    assert b"a=sendonly" in mirrored.body
    assert caller_port in h.media.held
    # A second re-INVITE before the first is answered: 500 with Retry-After (RFC 3261 §14.2).
    h.feed(reinvite_from_callee(inv, 3, b"a=sendrecv"), CALLEE)
    refusal = [m for m in h.sent_to(CALLEE) if isinstance(m, Response)][-1]
    assert refusal.status == 500
    assert refusal.headers.get("Retry-After") is not None
    h.feed(
        answer(
            mirrored,
            200,
            tag=ok.to.tag or "",
            sdp=SDP.replace(b"sendrecv", b"recvonly"),
            contact="sip:caller@127.0.0.1:5071",
        ),
        CALLER,
    )
    assert [m.status for m in h.sent_to(CALLEE) if isinstance(m, Response)][-1] == 200
    h.feed(reinvite_from_callee(inv, 4, b"a=sendrecv"), CALLEE)
    assert caller_port not in h.media.held


def test_transport_error_after_a_final_response_fails_no_one_twice() -> None:
    """A client INVITE in Completed, re-sending its ACK, still reports a transport error to the
    TU (RFC 3261 §17.1.1.2, Figure 5), which reads it as a 503 (§8.1.3.1). That leg's final
    response was handled already: the error must not try the next destination again, nor
    answer the caller a second time."""
    h = Harness(CALLEE, BACKUP)

    def transport_error(where: tuple[str, int]) -> None:
        events = h.core.txl.transport_error(where, "UDP", h.now)
        assert [type(event) for event in events] == [tx.ClientTransportError]
        h.core._dispatch(events[0], h.now)

    h.feed(invite(), CALLER)
    first = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(answer(first, 486), CALLEE)
    second = next(m for m in h.sent_to(BACKUP) if isinstance(m, Request))
    first_key = tx.client_key(first.top_via.branch or "", "INVITE")
    assert h.core.txl.state_of(first_key) is tx.State.COMPLETED
    h.advance(1.0)
    h.sent()  # the backup's INVITE retransmitted (Timer A)
    transport_error(CALLEE)
    assert h.sent() == []
    call = next(iter(h.core.calls.values()))
    assert call.state is CallState.RINGING
    assert sorted(call.legs) == ["a", "b1", "b2"]

    h.feed(answer(second, 486), BACKUP)
    second_key = tx.client_key(second.top_via.branch or "", "INVITE")
    assert h.core.txl.state_of(second_key) is tx.State.COMPLETED
    finals = [m.status for m in h.sent_to(CALLER) if isinstance(m, Response) and m.status >= 300]
    assert finals == [486]
    h.advance(1.0)
    h.sent()  # the caller's 486 retransmitted (Timer G)
    transport_error(BACKUP)
    assert h.sent() == []
    assert h.core.calls == {}
    assert h.core.counters.calls_failed == 1


def test_unreachable_tcp_destination_fails_over_at_once() -> None:
    """RFC 3261 §18.4: the transport reports a refused TCP connect, the INVITE's transaction
    ends (§17.1.1.2) and the core reads it as a 503: the next destination is tried, and once
    none is left the caller hears 503, all at the moment of the error rather than Timer B's."""
    h = Harness(CALLEE, BACKUP, transport="TCP")
    h.feed(invite(), CALLER)
    first = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    assert first.top_via.transport == "TCP"
    h.core.transport_error(CALLEE, "UDP", h.now)
    assert h.sent() == [], "another transport to the same address is another path"
    h.core.transport_error(CALLEE, "TCP", h.now)
    second = next(m for m in h.sent_to(BACKUP) if isinstance(m, Request))
    assert second.method == "INVITE"
    call = next(iter(h.core.calls.values()))
    assert [e.data["status"] for e in call.history if e.kind == "failover"] == [503]
    h.core.transport_error(BACKUP, "TCP", h.now)
    finals = [m.status for m in h.sent_to(CALLER) if isinstance(m, Response) and m.status >= 200]
    assert finals == [503]
    assert h.core.calls == {}
    assert h.media.live == set()


def test_a_tcp_callers_responses_carry_its_connection_and_its_sent_by_port() -> None:
    """RFC 3261 §18.2.2: the caller's INVITE came over TCP from an ephemeral port; its
    responses go back over that connection, or to the Via's sent-by port once it closed."""
    h = Harness()
    carrier = Origin(kind="trunk", name="carrier", platform="12345")
    h.core.routing.identify = lambda _request, _source: carrier  # type: ignore[method-assign]
    ephemeral = (CALLER[0], 49152)
    h.core.receive(invite().replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"), ephemeral, "TCP", h.now)
    inv = next(m for d, m in h.sent() if d == CALLEE and isinstance(m, Request))
    h.feed(answer(inv, 180), CALLEE)
    to_caller = [out for out in h.core.take_outgoing() if out.destination == ephemeral]
    assert [(out.transport, out.fallback) for out in to_caller] == [("TCP", CALLER)]
    assert parse_message(to_caller[0].data).status == 180  # type: ignore[union-attr]


def test_a_call_over_the_limit_is_refused_at_once_but_a_call_to_110_never_is() -> None:
    h = Harness(admission=Admission(max_calls=1))
    h.feed(invite(call_id="first", user="12345", branch="z9hG4bKf1"), CALLER)
    assert any(isinstance(m, Request) for m in h.sent_to(CALLEE))

    h.feed(invite(call_id="second", user="12345", branch="z9hG4bKf2"), CALLER)
    sent = h.sent()
    assert not [m for d, m in sent if d == CALLEE], "nothing rings for a refused call"
    refused = [m for d, m in sent if d == CALLER and isinstance(m, Response) and m.status >= 200]
    assert [m.status for m in refused] == [503]
    assert refused[0].headers.get("Retry-After") == "5"
    events = [e for e in h.core.take_events() if e.kind == "refused"]
    assert [e.data["reason"] for e in events] == ["call limit 1 reached"]

    h.feed(invite(call_id="emergency", user="110", branch="z9hG4bKf3"), CALLER)
    inv = [m for m in h.sent_to(CALLEE) if isinstance(m, Request)]
    assert [m.method for m in inv] == ["INVITE"], "an emergency call rings whatever the load"


def test_media_timeout_hangs_up_both_parties_with_that_reason() -> None:
    """A phone that lost power sends no BYE: the relay's media timeout on its leg ends the call."""
    h = Harness()
    establish(h)
    h.sent()
    call = next(iter(h.core.calls.values()))
    callee_media = call.legs[call.callee_leg].media
    h.core.media_timeout(FakeMediaLeg(port=1), h.now)  # no call's leg: nothing happens
    assert h.sent() == []
    h.core.media_timeout(callee_media, h.now)
    byes = {d: m for d, m in h.sent() if isinstance(m, Request) and m.method == "BYE"}
    assert set(byes) == {CALLER, CALLEE}
    for who, bye in byes.items():
        h.feed(answer(bye, 200, tag=bye.to.tag or ""), who)
    assert h.core.calls == {}
    assert h.media.live == set()
    assert call.ended_reason == "media timeout"
    hangups = [e for e in h.core.take_events() if e.kind == "hangup"]
    assert [e.data["reason"] for e in hangups] == ["media timeout"]


def test_media_lost_with_its_worker_ends_the_call_with_that_reason() -> None:
    h = Harness()
    establish(h)
    h.sent()
    call = next(iter(h.core.calls.values()))
    h.core.media_timeout(call.caller.media, h.now, "media worker died")
    byes = {d: m for d, m in h.sent() if isinstance(m, Request) and m.method == "BYE"}
    assert set(byes) == {CALLER, CALLEE}
    assert call.ended_reason == "media worker died"
    notes = [e for e in h.core.take_events() if e.kind == "media_timeout"]
    assert [e.data["reason"] for e in notes] == ["media worker died"]


# -- delayed offer: an INVITE without SDP (RFC 3261 §13.2.1, RFC 3264 §5) ---------------------

CALLER_ANSWER = (
    b"v=0\r\no=- 7 7 IN IP4 127.0.0.9\r\ns=-\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\n"
    b"m=audio 7000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)
CALLEE_PCMU = SDP.replace(b"RTP/AVP 8 0 101", b"RTP/AVP 0 101").replace(
    b"a=rtpmap:8 PCMA/8000\r\n", b""
)


def invite_without_sdp(call_id: str = "c1") -> bytes:
    head = invite(call_id).split(b"Content-Type")[0]
    return head + b"Content-Length: 0\r\n\r\n"


def ack_with(ok: Response, body: bytes) -> bytes:
    head = request_in_dialog("ACK", ok, 1, "z9hG4bKack1").split(b"Content-Length")[0]
    if not body:
        return head + b"Content-Length: 0\r\n\r\n"
    return (
        head
        + f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def delayed_offer_answered(h: Harness) -> tuple[Request, Response]:
    """A bodiless INVITE through the bridge to an answering callee: its INVITE and the
    caller's 200 OK."""
    h.feed(invite_without_sdp(), CALLER)
    inv = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(answer(inv, 200, sdp=CALLEE_PCMU), CALLEE)
    ok = next(m for m in h.sent_to(CALLER) if isinstance(m, Response) and m.status == 200)
    return inv, ok


def test_a_delayed_offer_gets_the_bridges_offer_and_its_ack_answer_is_used() -> None:
    """The callee gets an ordinary offer of the bridge's own; the caller's 200 carries an
    offer naming the bridge's caller-side port, the callee's codec first, and the answer in
    the caller's ACK points the caller's media (§13.2.2.4)."""
    h = Harness()
    inv, ok = delayed_offer_answered(h)
    call = next(iter(h.core.calls.values()))
    caller, callee = call.caller, call.legs[call.callee_leg]
    assert inv.content_type == "application/sdp"
    offer = SessionDescription.parse(inv.body)
    assert offer.audio_endpoint == ("127.0.0.1", callee.media.port)
    assert callee.media.remote == ("127.0.0.1", 6000, 0)

    assert ok.content_type == "application/sdp"
    ours = SessionDescription.parse(ok.body)
    assert ours.audio_endpoint == ("127.0.0.1", caller.media.port)
    assert ours.audio is not None
    assert ours.audio.codecs[0].name == "PCMU"
    assert caller.media.remote is None, "nothing to send to before the answer"

    h.feed(ack_with(ok, CALLER_ANSWER), CALLER)
    assert caller.media.remote == ("127.0.0.9", 7000, 0)
    assert call.state is CallState.ANSWERED
    assert not [m for m in h.sent() if isinstance(m[1], Request) and m[1].method == "BYE"]
    h.feed(ack_with(ok, CALLER_ANSWER.replace(b"7000", b"7100")), CALLER)
    assert caller.media.remote == ("127.0.0.9", 7000, 0), "a repeated ACK answers nothing"


def test_an_ack_without_the_answer_to_the_bridges_offer_hangs_up() -> None:
    h = Harness()
    _inv, ok = delayed_offer_answered(h)
    h.sent()
    h.feed(ack_with(ok, b""), CALLER)
    byes = [d for d, m in h.sent() if isinstance(m, Request) and m.method == "BYE"]
    assert sorted(byes) == [CALLER, CALLEE]
    call = next(iter(h.core.calls.values()))
    assert call.ended_reason == "no answer in ACK"


def test_an_sdp_in_an_ack_to_an_answer_is_ignored() -> None:
    """The caller's INVITE had the offer and the 200 the answer: an SDP in its ACK answers
    nothing (§13.2.2.4) and does not move the media."""
    h = Harness()
    _inv, ok = establish(h)
    caller = next(iter(h.core.calls.values())).caller
    before = caller.media.remote
    h.feed(ack_with(ok, CALLER_ANSWER), CALLER)
    assert caller.media.remote == before


def test_an_offerless_reinvite_mid_call_is_offered_by_the_bridge_and_its_ack_used() -> None:
    """A bodiless re-INVITE is answered with an offer from the bridge's own media under the
    o= line it last sent (RFC 3264 §8), not mirrored: the other party's offer would need an
    ACK the bridge could not yet answer. The answer in the ACK re-points the media."""
    h = Harness()
    _inv, ok = establish(h)
    h.sent()
    caller = next(iter(h.core.calls.values())).caller
    h.feed(request_in_dialog("INVITE", ok, 2, "z9hG4bKnosdp"), CALLER)
    sent = h.sent()
    assert not [m for d, m in sent if d == CALLEE], "nothing mirrored onto the callee"
    reply = next(m for d, m in sent if isinstance(m, Response) and m.status == 200)
    offer = SessionDescription.parse(reply.body)
    assert offer.audio_endpoint == ("127.0.0.1", caller.media.port)
    assert offer.origin.session_id == SessionDescription.parse(ok.body).origin.session_id
    ack = ack_with(reply, CALLER_ANSWER).replace(b"CSeq: 1 ACK", b"CSeq: 2 ACK")
    h.feed(ack.replace(b"z9hG4bKack1", b"z9hG4bKack2"), CALLER)
    assert caller.media.remote == ("127.0.0.9", 7000, 0)


def answerless_200(h: Harness, caller_invite: bytes, callee: tuple[str, int]) -> Request:
    """The caller's INVITE, and a 200 OK from ``callee`` that does not answer the bridge's
    offer; the INVITE the bridge sent there."""
    h.feed(caller_invite, CALLER)
    inv = next(m for m in h.sent_to(callee) if isinstance(m, Request))
    assert inv.content_type == "application/sdp", "the bridge's INVITE always has an offer"
    h.feed(answer(inv, 200), callee)
    return inv


@pytest.mark.parametrize("caller_invite", [invite(), invite_without_sdp()])
def test_a_200_without_the_answer_to_the_bridges_offer_fails_over(caller_invite: bytes) -> None:
    """RFC 3264 §4 / RFC 3261 §13.2.1: the answer to an offer in an INVITE is in the 2xx.
    Without it that destination cannot carry audio: its 200 is ACKed and hung up like any
    failed destination, and the next one rings; the caller is answered by that one only."""
    h = Harness(CALLEE, BACKUP)
    answerless_200(h, caller_invite, CALLEE)
    sent = h.sent()
    assert [m.method for d, m in sent if d == CALLEE and isinstance(m, Request)] == ["ACK", "BYE"]
    assert [d for d, m in sent if isinstance(m, Request) and m.method == "INVITE"] == [BACKUP]
    assert not [m for d, m in sent if d == CALLER and isinstance(m, Response)]
    second = next(m for d, m in sent if d == BACKUP and isinstance(m, Request))
    h.feed(answer(second, 200, tag="backup1", sdp=SDP), BACKUP)
    ok = next(m for m in h.sent_to(CALLER) if isinstance(m, Response) and m.status == 200)
    assert ok.content_type == "application/sdp"
    call = next(iter(h.core.calls.values()))
    assert call.state is CallState.ANSWERED
    assert call.legs["b1"].state is LegState.TERMINATING
    (failover,) = [e.data for e in call.history if e.kind == "failover"]
    assert failover == {"status": 502, "leg": "b1", "reason": ANSWERLESS_2XX[1]}


def test_a_200_without_the_answer_from_the_last_destination_fails_the_caller() -> None:
    """With no destination left the caller gets a final failure, never a 200 OK that would
    leave it in a call without audio; the callee's dialog is ACKed and hung up."""
    h = Harness()
    answerless_200(h, invite_without_sdp(), CALLEE)
    sent = h.sent()
    bye = next(m for d, m in sent if d == CALLEE and isinstance(m, Request) and m.method == "BYE")
    final = [m.status for d, m in sent if d == CALLER and isinstance(m, Response)]
    assert final == [503]
    failed = [e.data for e in h.core.take_events() if e.kind == "attempt_failed"]
    assert failed == [{"status": 502, "reason": ANSWERLESS_2XX[1]}]
    h.feed(answer(bye, 200, tag=""), CALLEE)
    assert h.core.calls == {}
    assert h.media.live == set()


def test_early_media_sdp_is_not_relayed_to_a_caller_that_made_no_offer() -> None:
    """RFC 3261 §13.2.1 / RFC 3264 §4: a caller whose INVITE had no offer gets the bridge's
    offer in the 2xx; the callee's SDP in a 183 answers the bridge's offer on the callee's
    leg, and relayed to the caller it would be an answer to nothing (the bridge does not do
    reliable provisionals, where an offer could go instead). The caller's 183 has no body,
    the caller's session is still unopened, and its 200 carries the first offer."""
    h = Harness()
    h.feed(invite_without_sdp(), CALLER)
    inv = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(answer(inv, 183, sdp=CALLEE_PCMU), CALLEE)
    (early,) = [m for m in h.sent_to(CALLER) if isinstance(m, Response)]
    assert early.status == 183
    assert early.body == b""
    assert early.content_type == ""
    call = next(iter(h.core.calls.values()))
    assert call.caller.last_sdp == b""
    assert call.legs[call.callee_leg].media.remote == ("127.0.0.1", 6000, 0)
    h.feed(answer(inv, 200, sdp=CALLEE_PCMU), CALLEE)
    ok = next(m for m in h.sent_to(CALLER) if isinstance(m, Response) and m.status == 200)
    offer = SessionDescription.parse(ok.body)
    assert offer.audio_endpoint == ("127.0.0.1", call.caller.media.port)
    assert call.caller.last_sdp == ok.body
    assert call.caller.awaiting_answer
