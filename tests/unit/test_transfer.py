"""Transfers in the B2BUA core, with raw SIP and a fake clock (no sockets)."""

from __future__ import annotations

import pytest
from test_b2bua import (
    CALLEE,
    CALLER,
    SDP,
    Harness,
    answer,
    establish,
    invite,
    reinvite_from_callee,
    request_in_dialog,
)

from bridge.calls.call import LegState
from bridge.calls.legs import ANSWERLESS_2XX
from bridge.calls.ports import Destination
from bridge.calls.transfer import CALL_ENDED
from bridge.sip.errors import LocalProtocolError
from bridge.sip.message import Request, Response
from bridge.sip.uri import SipUri

TARGET = ("127.0.0.1", 5090)
BACKUP = ("127.0.0.1", 5091)
TICKET = (("X-Ticket-Id", "T1"), ("User-to-User", "5431;encoding=hex"), ("Priority", "emergency"))


def dest(addr: tuple[str, int], ring: float = 15.0) -> Destination:
    return Destination(
        uri=SipUri(user="110", host=addr[0], port=addr[1]),
        address=addr,
        transport="UDP",
        peer="pbx-110",
        ring_timeout=ring,
    )


def transfer(h: Harness, *dests: Destination, refer_leg: str | None = None) -> str:
    call_id = next(iter(h.core.calls))
    h.core.transfers.start(
        call_id, list(dests), h.now, headers=TICKET, ticket_id="T1", refer_leg=refer_leg
    )
    return call_id


def bye_from_callee(inv: Request, cseq: int = 2) -> bytes:
    return (
        "BYE sip:bridge@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bKbye{cseq}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {inv.headers.get('To')};tag=callee1\r\n"
        f"To: {inv.headers.get('From')}\r\n"
        f"Call-ID: {inv.call_id}\r\n"
        f"CSeq: {cseq} BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_blind_transfer_carries_the_ticket_and_releases_the_agent() -> None:
    h = Harness()
    _inv, _ok = establish(h)
    h.sent()
    transfer(h, dest(TARGET))
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    assert target_invite.headers.get("X-Ticket-Id") == "T1"
    assert target_invite.headers.get("Priority") == "emergency"
    assert target_invite.headers.get("Referred-By")
    assert target_invite.from_.uri.user == "13800138000", "the receiving seat sees the caller"
    assert b"m=audio" in target_invite.body
    h.feed(answer(target_invite, 180, tag="t1"), TARGET)
    h.feed(answer(target_invite, 200, tag="t1", sdp=SDP, contact="sip:t@127.0.0.1:5090"), TARGET)
    sent = h.sent()
    assert any(isinstance(m, Request) and m.method == "ACK" for d, m in sent if d == TARGET)
    assert any(isinstance(m, Request) and m.method == "BYE" for d, m in sent if d == CALLEE)
    assert not [m for d, m in sent if d == CALLER], "the caller's leg is untouched"
    call = next(iter(h.core.calls.values()))
    assert (call.caller.media.port, call.legs["t1"].media.port) in h.media.connected
    assert h.media.near[call.legs["t1"].media.port] == call.caller.media.port
    kinds = [e.kind for e in h.core.take_transfer_events()]
    assert kinds == ["trying", "ringing", "transferred"]


def test_failed_transfer_keeps_the_caller_with_the_agent_after_failover() -> None:
    h = Harness()
    establish(h)
    h.sent()
    transfer(h, dest(TARGET), dest(BACKUP))
    first = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(first, 486, tag="t1"), TARGET)
    second = next(m for m in h.sent_to(BACKUP) if isinstance(m, Request) and m.method == "INVITE")
    h.feed(answer(second, 503, tag="t2"), BACKUP)
    sent = h.sent()
    assert not [m for d, m in sent if d in (CALLER, CALLEE) and isinstance(m, Request)]
    events = h.core.take_transfer_events()
    assert events[-1].kind == "failed"
    assert events[-1].status == 503
    call = next(iter(h.core.calls.values()))
    assert call.caller.live
    assert call.legs["b1"].live, "the agent still has the caller"


def failovers(h: Harness) -> list[dict[str, object]]:
    call = next(iter(h.core.calls.values()))
    return [e.data for e in call.history if e.kind == "transfer_failover"]


def pass_over(
    h: Harness, first: Request, phone: tuple[str, int], tag: str, *, timeout: bool
) -> tuple[int, str]:
    """Make the first destination fail: ring out past its 5 s ring timeout, or answer 486.
    The status and reason the failover is expected to record."""
    if timeout:
        h.feed(answer(first, 180, tag=tag), phone)
        h.advance(5.5)
        return 408, "No Answer"
    h.feed(answer(first, 486, tag=tag, reason="Busy Here"), phone)
    return 486, "Busy Here"


@pytest.mark.parametrize("timeout", [False, True], ids=["busy", "ring_timeout"])
def test_a_target_passed_over_is_noted_with_why_and_the_next_one_rings(timeout: bool) -> None:
    """The call's history (the audit log's ``call.transfer_failover``, the live events) says
    why the first target was given up on, and the ``trying`` event for the next one carries
    the same status and reason."""
    h = Harness()
    establish(h)
    h.sent()
    transfer(h, dest(TARGET, ring=5.0), dest(BACKUP))
    first = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    status, reason = pass_over(h, first, TARGET, "t1", timeout=timeout)
    assert [m.method for m in h.sent_to(BACKUP) if isinstance(m, Request)] == ["INVITE"]
    assert failovers(h) == [{"leg": "t1", "status": status, "reason": reason}]
    trying = [e for e in h.core.take_transfer_events() if e.kind == "trying"]
    assert [(e.status, e.reason) for e in trying] == [(None, ""), (status, reason)]


def test_no_answer_within_ring_timeout_fails_the_transfer_not_the_call() -> None:
    h = Harness()
    establish(h)
    h.sent()
    transfer(h, dest(TARGET, ring=5.0))
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_invite, 180, tag="t1"), TARGET)
    h.advance(5.5)
    assert any(isinstance(m, Request) and m.method == "CANCEL" for m in h.sent_to(TARGET))
    assert h.core.take_transfer_events()[-1].kind == "failed"
    assert next(iter(h.core.calls.values())).caller.live


def test_refer_is_accepted_and_progress_is_notified() -> None:
    h = Harness()
    inv, _ok = establish(h)
    h.sent()
    refer = (
        "REFER sip:bridge@127.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bKref1\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {inv.headers.get('To')};tag=callee1\r\n"
        f"To: {inv.headers.get('From')}\r\n"
        f"Call-ID: {inv.call_id}\r\n"
        "CSeq: 2 REFER\r\nRefer-To: sip:110@127.0.0.1:5060\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    h.feed(refer, CALLEE)
    sent = h.sent_to(CALLEE)
    assert [m.status for m in sent if isinstance(m, Response)] == [202]
    notify = next(m for m in sent if isinstance(m, Request))
    assert notify.method == "NOTIFY"
    assert notify.body.startswith(b"SIP/2.0 100")
    (wanted,) = h.core.take_transfer_requests()
    assert wanted.target == "110"
    assert wanted.refer_leg == "b1"
    transfer(h, dest(TARGET), refer_leg="b1")
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_invite, 200, tag="t1", sdp=SDP, contact="sip:t@127.0.0.1:5090"), TARGET)
    final = [m for m in h.sent_to(CALLEE) if isinstance(m, Request) and m.method == "NOTIFY"]
    assert final[-1].body.startswith(b"SIP/2.0 200")
    assert "terminated" in (final[-1].headers.get("Subscription-State") or "")
    # The transferor hangs up itself (RFC 3515); the caller stays with the target.
    h.feed(bye_from_callee(inv, cseq=3), CALLEE)
    assert not [m for m in h.sent_to(CALLER) if isinstance(m, Request)]
    assert next(iter(h.core.calls.values())).caller.live


def test_three_way_conferences_all_three() -> None:
    h = Harness()
    establish(h)
    h.sent()
    call_id = next(iter(h.core.calls))
    h.core.transfers.start(call_id, [dest(TARGET)], h.now, mode="three_way")
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_invite, 200, tag="t1", sdp=SDP, contact="sip:t@127.0.0.1:5090"), TARGET)
    assert not [m for m in h.sent_to(CALLEE) if isinstance(m, Request)], "agent stays"
    assert len(h.media.conferences[-1]) == 3


def test_transfer_of_an_unanswered_call_is_refused() -> None:
    h = Harness()
    from test_b2bua import invite

    h.feed(invite(), CALLER)
    with pytest.raises(LocalProtocolError):
        h.core.transfers.start(next(iter(h.core.calls)), [dest(TARGET)], h.now)


def info_digit(inv: Request, digit: str, cseq: int) -> bytes:
    body = f"Signal={digit}\r\nDuration=160\r\n"
    return (
        "INFO sip:bridge@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bKinfo{cseq}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {inv.headers.get('To')};tag=callee1\r\n"
        f"To: {inv.headers.get('From')}\r\n"
        f"Call-ID: {inv.call_id}\r\n"
        f"CSeq: {cseq} INFO\r\nContent-Type: application/dtmf-relay\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def test_transfer_key_from_the_agent_requests_a_transfer_and_is_kept_private() -> None:
    h = Harness()
    inv, _ok = establish(h)
    call = next(iter(h.core.calls.values()))
    assert call.legs["b1"].media.port in h.media.private, "the agent's digits never leak"
    h.feed(info_digit(inv, "*", 2), CALLEE)
    h.feed(info_digit(inv, "2", 3), CALLEE)
    (wanted,) = h.core.take_transfer_requests()
    assert (wanted.target, wanted.mode) == ("110", "three_way")


def test_digits_from_the_caller_or_too_slow_do_not_transfer() -> None:
    h = Harness()
    _inv, _ok = establish(h)
    agent_media = next(iter(h.core.calls.values())).legs["b1"].media
    caller_media = next(iter(h.core.calls.values())).caller.media
    h.core.on_digit(caller_media, "*", h.now)
    h.core.on_digit(caller_media, "1", h.now)
    h.core.on_digit(agent_media, "*", h.now)
    h.core.on_digit(agent_media, "1", h.now + 10.0)
    assert h.core.take_transfer_requests() == []
    h.core.on_digit(agent_media, "*", h.now + 11.0)
    h.core.on_digit(agent_media, "1", h.now + 11.5)
    assert [r.target for r in h.core.take_transfer_requests()] == ["110"]


def test_cancel_key_stops_ringing_the_target() -> None:
    h = Harness()
    establish(h)
    h.sent()
    transfer(h, dest(TARGET))
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_invite, 180, tag="t1"), TARGET)
    h.sent()
    agent_media = next(iter(h.core.calls.values())).legs["b1"].media
    h.core.on_digit(agent_media, "*", h.now)
    h.core.on_digit(agent_media, "0", h.now)
    assert any(isinstance(m, Request) and m.method == "CANCEL" for m in h.sent_to(TARGET))
    assert h.core.take_transfer_events()[-1].kind == "failed"


def test_target_cancelled_before_it_sent_anything_gets_its_cancel_late_or_a_bye() -> None:
    """RFC 3261 §9.1: the cancel key's CANCEL waits for the target's first provisional
    response. A target that answers instead is ACKed and hung up: the caller stays with the
    agent either way."""
    h = Harness()
    establish(h)
    h.sent()
    transfer(h, dest(TARGET))
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    call = next(iter(h.core.calls.values()))
    h.core.on_digit(call.legs["b1"].media, "*", h.now)
    h.core.on_digit(call.legs["b1"].media, "0", h.now)
    assert h.sent_to(TARGET) == []
    assert h.core.take_transfer_events()[-1].kind == "failed"
    connected = list(h.media.connected)
    h.feed(answer(target_invite, 200, tag="t1", sdp=SDP, contact="sip:t@127.0.0.1:5090"), TARGET)
    sent = h.sent()
    assert [m.method for d, m in sent if d == TARGET and isinstance(m, Request)] == ["ACK", "BYE"]
    assert not [m for d, m in sent if d in (CALLER, CALLEE)]
    assert h.media.connected == connected
    assert call.caller.live
    assert call.legs["b1"].live


def test_hang_up_while_a_transfer_rings_tries_no_further_target() -> None:
    """The target's 487 after the bridge's CANCEL ends that leg only; the transfer's next
    destination is not rung for a call that is going away."""
    h = Harness()
    establish(h)
    call_id = transfer(h, dest(TARGET), dest(BACKUP))
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_invite, 180, tag="t1"), TARGET)
    h.sent()
    h.core.hangup(call_id, h.now)
    sent = h.sent()
    assert [m.method for d, m in sent if d == TARGET and isinstance(m, Request)] == ["CANCEL"]
    h.feed(answer(target_invite, 487, tag="t1"), TARGET)
    assert h.sent_to(BACKUP) == []


def test_a_call_hung_up_by_the_bridge_fails_its_transfer_and_keeps_nothing_of_it() -> None:
    """Hung up through the API while the target rings: the transfer fails with
    ``call ended`` (its ticket gets a final state, not ``ringing`` for ever) and the desk
    keeps nothing of it once the call is gone."""
    h = Harness()
    establish(h)
    call_id = transfer(h, dest(TARGET))
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_invite, 180, tag="t1"), TARGET)
    h.core.take_transfer_events()
    h.core.hangup(call_id, h.now)
    events = h.core.take_transfer_events()
    assert [(e.kind, e.reason, e.ticket_id) for e in events] == [("failed", CALL_ENDED, "T1")]
    assert h.core.transfers.by_call == {}
    for d, m in h.sent():
        if isinstance(m, Request) and m.method == "BYE":
            h.feed(answer(m, 200, tag=""), d)
    h.feed(answer(target_invite, 487, tag="t1"), TARGET)
    assert call_id not in h.core.calls
    assert h.core.take_transfer_events() == []


def test_attended_transfer_consults_then_completes_when_the_agent_hangs_up() -> None:
    h = Harness()
    inv, _ok = establish(h)
    h.sent()
    call_id = next(iter(h.core.calls))
    h.core.transfers.start(call_id, [dest(TARGET)], h.now, mode="attended", ticket_id="T1")
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_invite, 200, tag="t1", sdp=SDP, contact="sip:t@127.0.0.1:5090"), TARGET)
    call = h.core.calls[call_id]
    assert call.caller.media.port in h.media.held, "the caller hears hold while they consult"
    assert (call.legs["b1"].media.port, call.legs["t1"].media.port) in h.media.connected
    assert not [m for m in h.sent_to(CALLEE) if isinstance(m, Request)]
    h.feed(bye_from_callee(inv), CALLEE)
    assert call.caller.media.port not in h.media.held
    assert (call.caller.media.port, call.legs["t1"].media.port) in h.media.connected
    assert [e.kind for e in h.core.take_transfer_events()][-2:] == ["consulting", "transferred"]
    assert not [m for m in h.sent_to(CALLER) if isinstance(m, Request)], "caller keeps talking"


def test_attended_transfer_cancelled_gives_the_caller_back_to_the_agent() -> None:
    h = Harness()
    establish(h)
    h.sent()
    call_id = next(iter(h.core.calls))
    h.core.transfers.start(call_id, [dest(TARGET)], h.now, mode="attended", ticket_id="T1")
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_invite, 200, tag="t1", sdp=SDP, contact="sip:t@127.0.0.1:5090"), TARGET)
    h.sent()
    call = h.core.calls[call_id]
    h.core.on_digit(call.legs["b1"].media, "*", h.now)
    h.core.on_digit(call.legs["b1"].media, "0", h.now)
    assert any(isinstance(m, Request) and m.method == "BYE" for m in h.sent_to(TARGET))
    assert call.caller.media.port not in h.media.held
    assert h.media.connected[-1] == (call.caller.media.port, call.legs["b1"].media.port)
    assert h.core.take_transfer_events()[-1].kind == "failed"


def consult_then_refer(
    h: Harness, inv_a: Request, *, branch: str, cseq: int, refer_to: str = "127.0.0.1"
) -> None:
    """The agent's phone (the callee of call c1) consults the target in a second call through
    the bridge, ACKs its 200 OK, then REFERs the caller with Replaces naming that consultation
    (RFC 3891)."""
    h.feed(invite(call_id="consult", branch=branch), CALLER)
    inv_b = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(answer(inv_b, 200, tag="tgt", sdp=SDP), CALLEE)
    ok_b = next(m for m in h.sent_to(CALLER) if isinstance(m, Response) and m.status == 200)
    h.feed(request_in_dialog("ACK", ok_b, 1, f"{branch}ack"), CALLER)
    replaces = f"consult%3Bto-tag%3D{ok_b.to.tag}%3Bfrom-tag%3Dcaller1"
    refer = (
        "REFER sip:bridge@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bKref{cseq}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {inv_a.headers.get('To')};tag=callee1\r\n"
        f"To: {inv_a.headers.get('From')}\r\n"
        f"Call-ID: {inv_a.call_id}\r\n"
        f"CSeq: {cseq} REFER\r\nRefer-To: <sip:110@{refer_to}?Replaces={replaces}>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    h.feed(refer, CALLEE)


def test_refer_with_replaces_joins_the_caller_to_the_consulted_target() -> None:
    """RFC 3891: the agent consulted the target in a second call through the bridge, then
    REFERs the caller with Replaces naming that consultation dialog."""
    h = Harness()
    inv_a, _ok_a = establish(h)
    h.sent()
    consult_then_refer(h, inv_a, branch="z9hG4bKcons", cseq=2, refer_to="127.0.0.1:5060")
    sent = h.sent()
    assert [m.status for d, m in sent if d == CALLEE and isinstance(m, Response)] == [202]
    notify = [m for d, m in sent if isinstance(m, Request) and m.method == "NOTIFY"]
    assert notify[-1].body.startswith(b"SIP/2.0 200")
    byes = [m for d, m in sent if d == CALLER and isinstance(m, Request) and m.method == "BYE"]
    assert [m.call_id for m in byes] == ["consult"], "the agent's consultation leg is hung up"
    (call_a,) = [c for c in h.core.calls.values() if c.caller.invite.call_id == "c1"]
    moved = call_a.legs[call_a.callee_leg]
    assert moved.leg_id.startswith("r")
    assert (call_a.caller.media.port, moved.media.port) in h.media.connected


def test_refer_with_replaces_for_an_unknown_dialog_is_481() -> None:
    h = Harness()
    inv_a, _ok = establish(h)
    h.sent()
    refer = (
        "REFER sip:bridge@127.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bKrefbad\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {inv_a.headers.get('To')};tag=callee1\r\n"
        f"To: {inv_a.headers.get('From')}\r\n"
        f"Call-ID: {inv_a.call_id}\r\n"
        "CSeq: 2 REFER\r\n"
        "Refer-To: <sip:110@127.0.0.1?Replaces=nope%3Bto-tag%3Dx%3Bfrom-tag%3Dy>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    h.feed(refer, CALLEE)
    assert [m.status for m in h.sent_to(CALLEE) if isinstance(m, Response)] == [481]


def test_after_replaces_a_caller_left_on_hold_is_taken_off_hold() -> None:
    h = Harness()
    inv_a, ok_a = hold_the_caller(h)  # the agent's phone holds the caller before consulting
    consult_then_refer(h, inv_a, branch="z9hG4bKcons2", cseq=3)
    resume = next(
        m
        for m in h.sent_to(CALLER)
        if isinstance(m, Request) and m.method == "INVITE" and m.call_id == ok_a.call_id
    )
    assert b"a=sendrecv" in resume.body, "the caller is taken off hold"
    h.feed(answer(resume, 200, tag="", sdp=SDP, contact="sip:caller@127.0.0.1:5071"), CALLER)
    acks = [m for m in h.sent_to(CALLER) if isinstance(m, Request) and m.method == "ACK"]
    assert [a.cseq.seq for a in acks] == [resume.cseq.seq]


def hold_the_caller(h: Harness) -> tuple[Request, Response]:
    """The agent's phone holds the caller (a mirrored sendonly re-INVITE, answered
    recvonly): the caller's phone stops sending and hears the bridge's hold tone."""
    inv, ok = establish(h)
    h.sent()
    h.feed(reinvite_from_callee(inv, 2, b"a=sendonly"), CALLEE)
    mirrored = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    held_answer = SDP.replace(b"sendrecv", b"recvonly")
    h.feed(
        answer(mirrored, 200, tag="", sdp=held_answer, contact="sip:caller@127.0.0.1:5071"),
        CALLER,
    )
    h.sent()
    call = next(iter(h.core.calls.values()))
    assert call.caller.held
    assert call.caller.media.port in h.media.held
    return inv, ok


def resumes_sent_to_the_caller(h: Harness, ok: Response) -> list[Request]:
    return [
        m
        for m in h.sent_to(CALLER)
        if isinstance(m, Request) and m.method == "INVITE" and m.call_id == ok.call_id
    ]


@pytest.mark.parametrize("mode", ["blind", "three_way"])
def test_a_caller_on_hold_is_taken_off_hold_when_the_target_answers(mode: str) -> None:
    """Nobody else will resume the caller: the agent's phone that held it is hung up (blind)
    or holds the caller no longer matters (three-way). Left recvonly, the caller's phone would
    send nothing and the target would hear silence, with the bridge's hold tone still playing
    to the caller."""
    h = Harness()
    _inv, ok = hold_the_caller(h)
    call_id = transfer_in_mode(h, mode)
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_invite, 200, tag="t1", sdp=SDP, contact="sip:t@127.0.0.1:5090"), TARGET)
    call = h.core.calls[call_id]
    assert call.caller.media.port not in h.media.held, "the caller no longer hears the tone"
    (resume,) = resumes_sent_to_the_caller(h, ok)
    assert b"a=sendrecv" in resume.body
    h.feed(answer(resume, 200, tag="", sdp=SDP, contact="sip:caller@127.0.0.1:5071"), CALLER)
    acks = [m for m in h.sent_to(CALLER) if isinstance(m, Request) and m.method == "ACK"]
    assert [a.cseq.seq for a in acks] == [resume.cseq.seq]
    assert not call.caller.held
    assert not h.core._reinvites


def transfer_in_mode(h: Harness, mode: str) -> str:
    call_id = next(iter(h.core.calls))
    h.core.transfers.start(call_id, [dest(TARGET)], h.now, mode=mode, ticket_id="T1")
    return call_id


def test_a_caller_on_hold_is_taken_off_hold_when_an_attended_transfer_completes() -> None:
    """The caller was held before the consultation; when the agent hangs up to complete it,
    the bridge resumes the caller, as the agent's phone is gone."""
    h = Harness()
    inv, ok = hold_the_caller(h)
    call_id = transfer_in_mode(h, "attended")
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_invite, 200, tag="t1", sdp=SDP, contact="sip:t@127.0.0.1:5090"), TARGET)
    assert resumes_sent_to_the_caller(h, ok) == [], "still on hold while they consult"
    h.feed(bye_from_callee(inv, 3), CALLEE)
    call = h.core.calls[call_id]
    assert call.caller.media.port not in h.media.held
    (resume,) = resumes_sent_to_the_caller(h, ok)
    assert b"a=sendrecv" in resume.body


def test_a_consultation_given_up_leaves_a_held_caller_on_hold() -> None:
    """Back with the agent, whose phone still holds the caller: the caller hears the hold
    tone as before the transfer, not the agent's phone, and is not resumed by the bridge."""
    h = Harness()
    _inv, ok = hold_the_caller(h)
    call_id = transfer_in_mode(h, "attended")
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_invite, 200, tag="t1", sdp=SDP, contact="sip:t@127.0.0.1:5090"), TARGET)
    call = h.core.calls[call_id]
    h.core.on_digit(call.legs["b1"].media, "*", h.now)
    h.core.on_digit(call.legs["b1"].media, "0", h.now)
    assert h.core.take_transfer_events()[-1].kind == "failed"
    assert call.caller.media.port in h.media.held
    assert resumes_sent_to_the_caller(h, ok) == []


def test_a_consulted_target_gone_silent_gives_the_caller_back_to_the_agent() -> None:
    """[media] timeout_s: the target's phone died during the consultation. The bridge hangs up
    on it alone, as if it had hung up; the caller is not lost with it."""
    h = Harness()
    establish(h)
    h.sent()
    call_id = next(iter(h.core.calls))
    h.core.transfers.start(call_id, [dest(TARGET)], h.now, mode="attended", ticket_id="T1")
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_invite, 200, tag="t1", sdp=SDP, contact="sip:t@127.0.0.1:5090"), TARGET)
    h.sent()
    call = h.core.calls[call_id]
    h.core.media_timeout(call.legs["t1"].media, h.now)
    sent = h.sent()
    assert [m.method for d, m in sent if d == TARGET and isinstance(m, Request)] == ["BYE"]
    assert not [m for d, m in sent if d in (CALLER, CALLEE) and isinstance(m, Request)]
    assert call_id in h.core.calls
    assert call.caller.media.port not in h.media.held
    assert h.media.connected[-1] == (call.caller.media.port, call.legs["b1"].media.port)
    notes = [e.data for e in h.core.take_events() if e.kind == "media_timeout"]
    assert notes == [{"leg": "t1", "party": "target", "reason": "media timeout"}]


def test_a_target_answering_without_sdp_is_hung_up_and_the_next_one_rings() -> None:
    """RFC 3264 §4 / RFC 3261 §13.2.1: the answer to the offer in the bridge's INVITE is in
    the 2xx. A target whose 200 has none could not hear the caller: it is ACKed and hung up
    like a target that failed, the next destination rings, and the caller stays with the
    agent meanwhile."""
    h = Harness()
    establish(h)
    h.sent()
    transfer(h, dest(TARGET), dest(BACKUP))
    first = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(first, 200, tag="t1", contact="sip:t@127.0.0.1:5090"), TARGET)
    sent = h.sent()
    assert [m.method for d, m in sent if d == TARGET and isinstance(m, Request)] == ["ACK", "BYE"]
    assert [m.method for d, m in sent if d == BACKUP and isinstance(m, Request)] == ["INVITE"]
    assert not [m for d, m in sent if d in (CALLER, CALLEE)], "caller and agent untouched"
    call = next(iter(h.core.calls.values()))
    assert call.legs["t1"].media.port == 0, "its ports went back to the pool"
    assert (call.caller.media.port, call.legs["t1"].media.port) not in h.media.connected
    assert [e.kind for e in h.core.take_transfer_events()] == ["trying", "trying"]
    assert ("no_answer_in_2xx", {"leg": "t1"}) in [(e.kind, e.data) for e in call.history]
    assert failovers(h) == [{"leg": "t1", "status": 502, "reason": ANSWERLESS_2XX[1]}]


def test_the_last_target_answering_without_sdp_fails_the_transfer_not_the_call() -> None:
    """With no destination left the transfer fails as after a busy target: the agent, and
    a phone that sent REFER, is told why, and still has the caller."""
    h = Harness()
    establish(h)
    h.sent()
    transfer(h, dest(TARGET), refer_leg="b1")
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_invite, 200, tag="t1", contact="sip:t@127.0.0.1:5090"), TARGET)
    sent = h.sent()
    bye = next(m for d, m in sent if d == TARGET and isinstance(m, Request) and m.method == "BYE")
    notify = next(m for d, m in sent if d == CALLEE and isinstance(m, Request))
    assert notify.method == "NOTIFY"
    assert notify.body.startswith(b"SIP/2.0 502")
    assert not [m for d, m in sent if d == CALLER]
    event = h.core.take_transfer_events()[-1]
    assert (event.kind, event.status) == ("failed", 502)
    assert "SDP" in event.reason
    call = next(iter(h.core.calls.values()))
    assert call.caller.live
    assert call.legs["b1"].live, "the agent still has the caller"
    assert h.core.transfers.by_call == {}
    h.feed(answer(bye, 200, tag=""), TARGET)
    assert call.legs["t1"].state is LegState.TERMINATED
    assert call.caller.live


def refer_from_callee(inv: Request, cseq: int = 2) -> bytes:
    return (
        "REFER sip:bridge@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bKref{cseq}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {inv.headers.get('To')};tag=callee1\r\n"
        f"To: {inv.headers.get('From')}\r\n"
        f"Call-ID: {inv.call_id}\r\n"
        f"CSeq: {cseq} REFER\r\nRefer-To: sip:110@127.0.0.1:5060\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def notifies(messages: list[Request | Response]) -> list[Request]:
    return [m for m in messages if isinstance(m, Request) and m.method == "NOTIFY"]


@pytest.mark.parametrize("status", [481, 489, 500, None])
def test_a_failed_notify_ends_the_refer_subscription_but_not_the_transfer(
    status: int | None,
) -> None:
    """The agent's phone answers the bridge's NOTIFY for its REFER with 481 (it no longer
    knows that subscription), another failure, or not at all (408 at Timer F): the implicit
    subscription is over (RFC 6665 §4.2.2), so the target's ringing and answer are not
    notified, and the end is noted in the call's history; the transfer itself goes on and
    completes."""
    h = Harness()
    inv, _ok = establish(h)
    h.sent()
    h.feed(refer_from_callee(inv), CALLEE)
    (trying,) = notifies(h.sent_to(CALLEE))
    if status is None:
        for _ in range(70):
            h.advance(0.5)
        h.sent()
    else:
        h.feed(answer(trying, status, tag=""), CALLEE)
    call = next(iter(h.core.calls.values()))
    notes = [(e.kind, e.data) for e in call.history if e.kind == "refer_subscription_ended"]
    ended = {"leg": "b1", "refer_id": 2, "status": status or 408}
    assert notes == [("refer_subscription_ended", ended)]
    (wanted,) = h.core.take_transfer_requests()
    transfer(h, dest(TARGET), refer_leg=wanted.refer_leg)
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_invite, 180, tag="t1"), TARGET)
    h.feed(answer(target_invite, 200, tag="t1", sdp=SDP, contact="sip:t@127.0.0.1:5090"), TARGET)
    assert notifies(h.sent_to(CALLEE)) == []
    assert [e.kind for e in h.core.take_transfer_events()] == ["trying", "ringing", "transferred"]
    assert (call.caller.media.port, call.legs["t1"].media.port) in h.media.connected
    assert call.legs["b1"].live, "the agent's phone hangs up itself, as after a final NOTIFY"


def test_a_2xx_to_a_notify_keeps_the_subscription_and_a_new_refer_starts_a_new_one() -> None:
    """A NOTIFY answered 200 changes nothing; after a failed one, the next REFER in that dialog
    is a new subscription (RFC 3515 §2.4.6), notified again."""
    h = Harness()
    inv, _ok = establish(h)
    h.sent()
    h.feed(refer_from_callee(inv), CALLEE)
    (trying,) = notifies(h.sent_to(CALLEE))
    h.feed(answer(trying, 200, tag=""), CALLEE)
    h.core.fail_transfer_request(h.core.take_transfer_requests()[0], 404, h.now)
    (final,) = notifies(h.sent_to(CALLEE))
    assert final.body.startswith(b"SIP/2.0 404")
    h.feed(answer(final, 481, tag=""), CALLEE)
    h.feed(refer_from_callee(inv, cseq=3), CALLEE)
    (again,) = notifies(h.sent_to(CALLEE))
    assert again.body.startswith(b"SIP/2.0 100")
