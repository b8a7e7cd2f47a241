"""The bridge's own SDP session toward each party (RFC 3264 §8, RFC 4566 §5.2), in the B2BUA
core with raw SIP and a fake clock.

Toward a party the bridge is one session for the whole call: every SDP it sends that party has
the same o= line but for the version, which goes up by one when the description changes. The
other party's o= never shows through, so a transfer that changes who is on the other side does
not look like a new session to a strict SBC.
"""

from __future__ import annotations

import pytest
from test_b2bua import CALLEE, CALLER, SDP, Harness, answer, invite, request_in_dialog
from test_transfer import TARGET, dest

from bridge.sip.message import Request, Response
from bridge.sip.sdp import Origin, SessionDescription

CALLER_SDP = SDP.replace(b"o=- 1 1 ", b"o=caller 5555 1 ")
AGENT_SDP = SDP.replace(b"o=- 1 1 ", b"o=agent 4242 17 ")
PCMU_ONLY = AGENT_SDP.replace(b"RTP/AVP 8 0 101", b"RTP/AVP 0 101").replace(
    b"a=rtpmap:8 PCMA/8000\r\n", b""
)
TARGET_SDP = SDP.replace(b"o=- 1 1 ", b"o=target 9090 300 ")


def caller_invite() -> bytes:
    """The caller's INVITE, its offer under the caller's own o= line."""
    head = invite().split(b"Content-Length")[0]
    return head + f"Content-Length: {len(CALLER_SDP)}\r\n\r\n".encode() + CALLER_SDP


def origin(message: Request | Response) -> Origin:
    return SessionDescription.parse(message.body).origin


def same_session(a: Origin, b: Origin) -> bool:
    """RFC 4566 §5.2: username, session id and address identify the session."""
    return (a.username, a.session_id, a.nettype, a.address) == (
        b.username,
        b.session_id,
        b.nettype,
        b.address,
    )


def reinvite_from(invite_sent: Request, tag: str, cseq: int, body: bytes) -> bytes:
    """A re-INVITE from the party the bridge sent ``invite_sent`` to, which answered ``tag``."""
    port = invite_sent.uri.port
    return (
        "INVITE sip:bridge@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKs{tag}{cseq}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {invite_sent.headers.get('To')};tag={tag}\r\n"
        f"To: {invite_sent.headers.get('From')}\r\n"
        f"Call-ID: {invite_sent.call_id}\r\n"
        f"CSeq: {cseq} INVITE\r\nContact: <sip:{tag}@127.0.0.1:{port}>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def from_caller(request: Request, status: int, body: bytes) -> bytes:
    return answer(request, status, tag="", sdp=body, contact="sip:caller@127.0.0.1:5071")


def connect(h: Harness) -> tuple[Request, Response]:
    """Caller → bridge → agent, answered under the agent's own o= line."""
    h.feed(caller_invite(), CALLER)
    inv = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(answer(inv, 200, sdp=AGENT_SDP), CALLEE)
    ok = next(m for m in h.sent_to(CALLER) if isinstance(m, Response) and m.status == 200)
    h.feed(request_in_dialog("ACK", ok, 1, "z9hG4bKack1"), CALLER)
    h.sent()
    return inv, ok


def mirrored_to_caller(h: Harness) -> Request:
    (request,) = [m for m in h.sent_to(CALLER) if isinstance(m, Request) and m.method == "INVITE"]
    return request


def test_each_party_gets_the_bridges_session_not_the_other_partys() -> None:
    """The INVITE to the agent and the 200 OK to the caller each open a session of the
    bridge's own: a fresh o= line at version 1, not the other party's with its version
    bumped."""
    h = Harness()
    inv, ok = connect(h)
    to_caller, to_agent = origin(ok), origin(inv)
    assert (to_caller.username, to_caller.session_id) != ("agent", 4242)
    assert (to_agent.username, to_agent.session_id) != ("caller", 5555)
    assert to_caller.session_version == to_agent.session_version == 1
    assert to_caller.session_id != to_agent.session_id, "one session per party"
    assert to_caller.address == to_agent.address == "127.0.0.1"
    call = next(iter(h.core.calls.values()))
    assert call.caller.last_sdp == ok.body


def test_a_mirrored_hold_and_resume_follow_the_callers_session() -> None:
    """Hold, resume, then the same resume again (a session refresh): the caller sees one
    session, its version up by one per change and unchanged for the repeat (RFC 3264 §8)."""
    h = Harness()
    inv, ok = connect(h)
    first = origin(ok)
    offers = (
        AGENT_SDP.replace(b"a=sendrecv", b"a=sendonly").replace(b" 17 ", b" 18 "),
        AGENT_SDP.replace(b" 17 ", b" 19 "),
        AGENT_SDP.replace(b" 17 ", b" 19 "),
    )
    versions = []
    for cseq, body in enumerate(offers, start=2):
        h.feed(reinvite_from(inv, "callee1", cseq, body), CALLEE)
        mirrored = mirrored_to_caller(h)
        assert same_session(origin(mirrored), first)
        versions.append(origin(mirrored).session_version)
        h.feed(from_caller(mirrored, 200, CALLER_SDP), CALLER)
        h.sent()
    v = first.session_version
    assert versions == [v + 1, v + 2, v + 2]


def test_the_answer_relayed_back_follows_the_agents_session() -> None:
    h = Harness()
    inv, _ok = connect(h)
    hold = AGENT_SDP.replace(b"a=sendrecv", b"a=sendonly")
    h.feed(reinvite_from(inv, "callee1", 2, hold), CALLEE)
    mirrored = mirrored_to_caller(h)
    h.feed(from_caller(mirrored, 200, CALLER_SDP.replace(b" 5555 1 ", b" 5555 2 ")), CALLER)
    (reply,) = [m for m in h.sent_to(CALLEE) if isinstance(m, Response) and m.status == 200]
    assert same_session(origin(reply), origin(inv))
    # The caller's answer describes the same stream as its offer did: nothing changed.
    assert origin(reply).session_version == origin(inv).session_version


def test_after_a_blind_transfer_the_callers_resume_is_still_the_same_session() -> None:
    h = Harness()
    inv, ok = connect(h)
    h.feed(reinvite_from(inv, "callee1", 2, AGENT_SDP.replace(b"sendrecv", b"sendonly")), CALLEE)
    hold = mirrored_to_caller(h)
    h.feed(from_caller(hold, 200, CALLER_SDP.replace(b"sendrecv", b"recvonly")), CALLER)
    h.sent()
    call_id = next(iter(h.core.calls))
    h.core.transfers.start(call_id, [dest(TARGET)], h.now, ticket_id="T1")
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_invite, 200, tag="t1", sdp=TARGET_SDP), TARGET)
    resume = mirrored_to_caller(h)
    assert b"a=sendrecv" in resume.body
    assert same_session(origin(resume), origin(ok))
    assert origin(resume).session_version == origin(hold).session_version + 1


def test_a_transfer_targets_reinvite_reaches_the_caller_in_the_callers_session() -> None:
    """The target's o= line is not the agent's; the caller must not see either."""
    h = Harness()
    _inv, ok = connect(h)
    call_id = next(iter(h.core.calls))
    h.core.transfers.start(call_id, [dest(TARGET)], h.now, ticket_id="T1")
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_invite, 200, tag="t1", sdp=TARGET_SDP), TARGET)
    h.sent()
    hold = TARGET_SDP.replace(b"a=sendrecv", b"a=sendonly").replace(b" 300 ", b" 301 ")
    h.feed(reinvite_from(target_invite, "t1", 1, hold), TARGET)
    mirrored = mirrored_to_caller(h)
    assert same_session(origin(mirrored), origin(ok))
    assert origin(mirrored).session_version == origin(ok).session_version + 1


@pytest.mark.parametrize(("final", "bump"), [(AGENT_SDP, 0), (PCMU_ONLY, 1)])
def test_early_media_and_the_200_ok_are_one_session_for_the_caller(final: bytes, bump: int) -> None:
    """The 183's SDP and the 200 OK's are one session for the caller: the same o= line, and
    the same version unless the 200 OK describes something else (RFC 3264 §8)."""
    h = Harness()
    h.feed(caller_invite(), CALLER)
    inv = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(answer(inv, 183, sdp=AGENT_SDP), CALLEE)
    (early,) = [m for m in h.sent_to(CALLER) if isinstance(m, Response) and m.status == 183]
    h.feed(answer(inv, 200, sdp=final), CALLEE)
    (ok,) = [m for m in h.sent_to(CALLER) if isinstance(m, Response) and m.status == 200]
    assert same_session(origin(ok), origin(early))
    assert origin(ok).session_version == origin(early).session_version + bump
    assert (ok.body == early.body) is (bump == 0)
