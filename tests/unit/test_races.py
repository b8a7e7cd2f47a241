"""Requests that cross on the wire, in the B2BUA core with raw SIP and a fake clock.

Each test is a race a user would notice if the bridge lost it: a caller left in silence or on
hold, a request never answered, a leg or a transaction that outlives its call.
"""

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
from test_cancel import cancel_from_caller
from test_transfer import TARGET, bye_from_callee, consult_then_refer, dest, hold_the_caller

from bridge.calls.call import Call, CallState, LegState
from bridge.sip.message import Request, Response
from bridge.sip.sdp import SessionDescription

HOLD_ANSWER = SDP.replace(b"sendrecv", b"recvonly")


def reinvite_from_caller(ok: Response, cseq: int, direction: bytes = b"a=sendrecv") -> bytes:
    """The caller's re-INVITE inside the dialog the bridge's 200 OK set up, with an offer."""
    body = SDP.replace(b"a=sendrecv", direction)
    head = request_in_dialog("INVITE", ok, cseq, f"z9hG4bKcre{cseq}").split(b"Content-Length")[0]
    return (
        head
        + b"Contact: <sip:caller@127.0.0.1:5071>\r\nContent-Type: application/sdp\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def requests(messages: list[Request | Response]) -> list[str]:
    return [m.method for m in messages if isinstance(m, Request)]


def statuses(messages: list[Request | Response]) -> list[int]:
    return [m.status for m in messages if isinstance(m, Response)]


def answer_from_caller(request: Request, status: int, sdp: bytes = b"") -> bytes:
    return answer(request, status, tag="", sdp=sdp, contact="sip:caller@127.0.0.1:5071")


def assert_nothing_left(h: Harness) -> None:
    assert h.core.calls == {}
    assert h.media.live == set()
    assert not h.core._by_client
    assert not h.core._by_dialog
    assert not h.core._by_server
    assert all(p.server_key is None for p in h.core._reinvites.values()), "a request unanswered"


def run_out_the_timers(h: Harness) -> None:
    """Long enough for every transaction to end (Timer B, F, H, L, M: 64*T1 = 32 s)."""
    for _ in range(80):
        h.advance(0.5)
    h.sent()


# -- re-INVITE glare (RFC 3261 §14.1, §14.2) -------------------------------------------------


def test_glare_both_phones_reinvite_at_once_and_both_hear_491() -> None:
    """The agent holds while the caller's phone refreshes its session: each phone sent a
    re-INVITE before it saw the other's. The bridge answers the caller's with 491 since its
    own (the mirrored hold) is pending on that dialog; the caller's phone answers the bridge's
    with 491 too, which goes back to the agent's phone. Both retry after their §14.1 delay;
    until then nothing changed, so the caller must not be left hearing the hold tone."""
    h = Harness()
    inv, ok = establish(h)
    h.sent()
    call = next(iter(h.core.calls.values()))
    caller_port = call.caller.media.port
    h.feed(reinvite_from_callee(inv, 2, b"a=sendonly"), CALLEE)
    mirrored = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    h.feed(reinvite_from_caller(ok, 2), CALLER)
    assert statuses(h.sent_to(CALLER)) == [491]
    assert h.sent_to(CALLEE) == [], "the caller's re-INVITE is not mirrored onto the agent's"

    h.feed(answer_from_caller(mirrored, 491), CALLER)
    sent = h.sent()
    assert requests([m for d, m in sent if d == CALLER]) == ["ACK"]
    assert statuses([m for d, m in sent if d == CALLEE]) == [491]
    assert caller_port not in h.media.held, "§14.1: a rejected re-INVITE changes nothing"
    assert not call.caller.held
    assert not h.core._reinvites

    h.advance(3.0)
    h.feed(reinvite_from_callee(inv, 3, b"a=sendonly"), CALLEE)
    retried = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    assert retried.method == "INVITE"
    assert retried.cseq.seq > mirrored.cseq.seq
    h.feed(answer_from_caller(retried, 200, HOLD_ANSWER), CALLER)
    assert statuses(h.sent_to(CALLEE)) == [200]
    assert caller_port in h.media.held


def replace_with_the_caller_on_hold(h: Harness) -> tuple[Response, Request]:
    """The agent's phone holds the caller, consults the target through the bridge, then
    REFERs with Replaces (as in test_transfer): the bridge resumes the caller with a re-INVITE
    of its own. The caller's 200 OK, and that re-INVITE."""
    inv_a, ok_a = establish(h)
    h.sent()
    h.feed(reinvite_from_callee(inv_a, 2, b"a=sendonly"), CALLEE)
    mirrored = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    h.feed(answer_from_caller(mirrored, 200, HOLD_ANSWER), CALLER)
    h.sent()
    consult_then_refer(h, inv_a, branch="z9hG4bKcons", cseq=3)
    resume = next(
        m
        for m in h.sent_to(CALLER)
        if isinstance(m, Request) and m.method == "INVITE" and m.call_id == ok_a.call_id
    )
    return ok_a, resume


def test_the_bridges_own_resume_meets_glare_and_goes_again_after_the_14_1_delay() -> None:
    """The caller's phone re-INVITEs (a session refresh) just as the bridge's resume left.
    Its re-INVITE gets 491 (§14.2: the bridge has an INVITE of its own pending on that
    dialog); the bridge's resume gets 491 from the phone and goes again within 0 to 2 s, the
    delay of a UA that did not choose the Call-ID (§14.1). Given up, the caller's phone would
    stay on hold and the target would never hear the caller."""
    h = Harness()
    ok, resume = replace_with_the_caller_on_hold(h)
    h.sent()
    h.feed(reinvite_from_caller(ok, 5), CALLER)
    assert statuses(h.sent_to(CALLER)) == [491]
    h.feed(answer_from_caller(resume, 491), CALLER)
    assert requests(h.sent_to(CALLER)) == ["ACK"]
    assert h.core.next_deadline() is not None
    retried: list[Request] = []
    for _ in range(21):
        h.advance(0.1)
        retried += [m for m in h.sent_to(CALLER) if isinstance(m, Request) and m.call_id == "c1"]
    assert {m.method for m in retried} == {"INVITE"}
    assert len({m.top_via.branch for m in retried}) == 1, "one re-INVITE (and its Timer A)"
    assert b"a=sendrecv" in retried[0].body
    assert retried[0].cseq.seq > resume.cseq.seq
    h.feed(answer_from_caller(retried[0], 200, SDP), CALLER)
    acks = [m for m in h.sent_to(CALLER) if isinstance(m, Request) and m.call_id == "c1"]
    assert [(m.method, m.cseq.seq) for m in acks] == [("ACK", retried[0].cseq.seq)]
    call = next(c for c in h.core.calls.values() if c.caller.invite.call_id == "c1")
    assert not call.caller.held
    assert not h.core._reinvites


def test_a_resume_that_keeps_meeting_glare_is_given_up() -> None:
    """A phone that answers every re-INVITE with 491 does not draw one every two seconds for
    the rest of the call: three attempts, then the bridge leaves it be."""
    h = Harness()
    _ok, resume = replace_with_the_caller_on_hold(h)
    h.sent()
    sent = [resume]
    for _ in range(10):
        h.feed(answer_from_caller(sent[-1], 491), CALLER)
        h.advance(2.5)
        sent += [
            m
            for m in h.sent_to(CALLER)
            if isinstance(m, Request) and m.method == "INVITE" and m.call_id == "c1"
        ]
    assert len(sent) == 3
    call = next(c for c in h.core.calls.values() if c.caller.invite.call_id == "c1")
    assert call.caller.held, "still held as far as the caller's phone knows"
    assert call.caller.media.port not in h.media.held, "hearing its party, not a tone"


# -- BYE crossing a re-INVITE (RFC 3261 §15.1.2) ---------------------------------------------


def test_caller_hangs_up_while_its_hold_is_pending_at_the_callee() -> None:
    """The caller's phone puts the call on hold and hangs up before the callee answered the
    mirrored re-INVITE. Its re-INVITE gets 487 (§15.1.2), the callee a BYE, and the callee's
    late answer to the re-INVITE is ACKed, never relayed."""
    h = Harness()
    _inv, ok = establish(h)
    h.sent()
    h.feed(reinvite_from_caller(ok, 2, b"a=sendonly"), CALLER)
    mirrored = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    assert mirrored.method == "INVITE"
    h.feed(request_in_dialog("BYE", ok, 3, "z9hG4bKcbye"), CALLER)
    sent = h.sent()
    assert sorted(statuses([m for d, m in sent if d == CALLER])) == [200, 487]
    bye = next(m for d, m in sent if d == CALLEE and isinstance(m, Request))
    assert bye.method == "BYE"

    h.feed(answer(mirrored, 200, tag="", sdp=HOLD_ANSWER), CALLEE)
    sent = h.sent()
    assert requests([m for d, m in sent if d == CALLEE]) == ["ACK"]
    assert [m for d, m in sent if d == CALLER] == []
    h.feed(answer(bye, 200, tag=""), CALLEE)
    assert_nothing_left(h)
    run_out_the_timers(h)
    assert len(h.core.txl) == 0
    assert not h.core._reinvites


def test_caller_hangs_up_instead_of_answering_the_callees_hold() -> None:
    """The agent holds just as the caller hangs up: the agent's re-INVITE is answered 487 at
    once rather than when (or if) the caller's phone answers the mirrored one, and that late
    answer neither reaches the agent twice nor trips up the bridge."""
    h = Harness()
    inv, ok = establish(h)
    h.sent()
    h.feed(reinvite_from_callee(inv, 2, b"a=sendonly"), CALLEE)
    mirrored = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    h.feed(request_in_dialog("BYE", ok, 2, "z9hG4bKcbye"), CALLER)
    sent = h.sent()
    assert statuses([m for d, m in sent if d == CALLER]) == [200]
    to_callee = [m for d, m in sent if d == CALLEE]
    assert statuses(to_callee) == [487]
    assert requests(to_callee) == ["BYE"]
    bye = next(m for m in to_callee if isinstance(m, Request))

    h.feed(answer_from_caller(mirrored, 487), CALLER)
    sent = h.sent()
    assert requests([m for d, m in sent if d == CALLER]) == ["ACK"]
    assert [m for d, m in sent if d == CALLEE] == []
    h.feed(answer(bye, 200, tag=""), CALLEE)
    assert_nothing_left(h)
    run_out_the_timers(h)
    assert len(h.core.txl) == 0


def test_a_2xx_to_a_reinvite_after_the_call_ended_is_still_acked() -> None:
    """The callee answers the bridge's BYE before its re-INVITE: the call is gone when the
    re-INVITE's 200 comes, which must be ACKed all the same or it retransmits for 32 s."""
    h = Harness()
    _inv, ok = establish(h)
    h.sent()
    h.feed(reinvite_from_caller(ok, 2, b"a=sendonly"), CALLER)
    mirrored = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(request_in_dialog("BYE", ok, 3, "z9hG4bKcbye"), CALLER)
    bye = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(answer(bye, 200, tag=""), CALLEE)
    assert_nothing_left(h)
    h.feed(answer(mirrored, 200, tag="", sdp=HOLD_ANSWER), CALLEE)
    acks = [m for m in h.sent_to(CALLEE) if isinstance(m, Request)]
    assert [(m.method, m.cseq.seq) for m in acks] == [("ACK", mirrored.cseq.seq)]


def test_callee_hangs_up_while_the_callers_reinvite_is_pending_there() -> None:
    """The caller's re-INVITE is answered 487 at once, not left until Timer B runs out on the
    caller's side; the callee's own 487 to the mirrored one goes nowhere."""
    h = Harness()
    inv, ok = establish(h)
    h.sent()
    h.feed(reinvite_from_caller(ok, 2, b"a=sendonly"), CALLER)
    mirrored = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(bye_from_callee(inv, cseq=2), CALLEE)
    sent = h.sent()
    to_caller = [m for d, m in sent if d == CALLER]
    assert statuses(to_caller) == [487], "the caller's re-INVITE is not left unanswered"
    assert requests(to_caller) == ["BYE"]
    bye = next(m for m in to_caller if isinstance(m, Request))
    h.feed(answer(mirrored, 487, tag=""), CALLEE)
    assert statuses(h.sent_to(CALLER)) == []
    h.feed(answer(bye, 200, tag=""), CALLER)
    assert_nothing_left(h)
    run_out_the_timers(h)
    assert len(h.core.txl) == 0


def test_a_reinvite_crossing_a_blind_transfer_is_answered_by_the_party_it_reached() -> None:
    """The caller's re-INVITE is mirrored to the agent just before a blind transfer completes.
    The agent's late 200 belongs to the agent's dialog: it is ACKed there, and neither the
    target's dialog nor its audio is pointed at the agent's phone; the caller hears 487 when
    the agent is hung up, its session unchanged (§14.1)."""
    h = Harness()
    _inv, ok = establish(h)
    h.sent()
    h.feed(reinvite_from_caller(ok, 2, b"a=sendonly"), CALLER)
    mirrored = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    call_id = next(iter(h.core.calls))
    h.core.transfers.start(call_id, [dest(TARGET)], h.now)
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_invite, 200, tag="t1", sdp=SDP, contact="sip:t@127.0.0.1:5090"), TARGET)
    sent = h.sent()
    assert statuses([m for d, m in sent if d == CALLER]) == [487]
    target = h.core.calls[call_id].legs["t1"]
    h.feed(answer(mirrored, 200, tag="", sdp=SDP.replace(b"6000", b"7777")), CALLEE)
    sent = h.sent()
    acks = [(d, m) for d, m in sent if isinstance(m, Request)]
    assert [(d, m.method, m.call_id) for d, m in acks] == [(CALLEE, "ACK", mirrored.call_id)]
    assert [m for d, m in sent if d == CALLER] == []
    assert target.media.remote == ("127.0.0.1", 6000, 8)
    assert target.dialog is not None
    assert target.dialog.remote_target.port == 5090


# -- CANCEL crossing the 200 OK (RFC 3261 §9.2) ----------------------------------------------


def test_cancel_crossing_the_200_ok_is_answered_200_and_the_call_goes_on() -> None:
    """The callee answered and the bridge sent the caller its 200 just as the caller's CANCEL
    left: the INVITE is already answered, so the CANCEL gets 200 and changes nothing (§9.2);
    no 487, no BYE to anyone. The caller's phone decides (ACK, then talk or BYE)."""
    h = Harness()
    h.feed(invite(), CALLER)
    out = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(answer(out, 180), CALLEE)
    h.feed(answer(out, 200, sdp=SDP), CALLEE)
    ok = next(m for m in h.sent_to(CALLER) if isinstance(m, Response) and m.status == 200)
    h.feed(cancel_from_caller(), CALLER)
    sent = h.sent()
    assert statuses([m for d, m in sent if d == CALLER]) == [200]
    assert [m for d, m in sent if d == CALLEE] == []
    call = next(iter(h.core.calls.values()))
    assert call.state is CallState.ANSWERED
    h.feed(request_in_dialog("ACK", ok, 1, "z9hG4bKack1"), CALLER)
    h.feed(request_in_dialog("BYE", ok, 2, "z9hG4bKcbye"), CALLER)
    assert requests(h.sent_to(CALLEE)) == ["BYE"]


# -- a re-INVITE while ringing (RFC 3261 §14.2) ----------------------------------------------


def test_reinvite_in_the_early_dialog_gets_500_with_retry_after() -> None:
    """§14.2: a second INVITE before the first is answered gets 500 with Retry-After; a 481
    would tell the caller's phone the dialog is gone (§12.2.1.2) and drop a ringing call."""
    h = Harness()
    h.feed(invite(), CALLER)
    out = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(answer(out, 180), CALLEE)
    ringing = next(m for m in h.sent_to(CALLER) if isinstance(m, Response) and m.status == 180)
    h.feed(reinvite_from_caller(ringing, 2), CALLER)
    sent = h.sent()
    (refusal,) = [m for d, m in sent if d == CALLER]
    assert isinstance(refusal, Response)
    assert refusal.status == 500
    assert 0 <= int(refusal.headers.get("Retry-After") or "-1") <= 10
    assert [m for d, m in sent if d == CALLEE] == []
    call = next(iter(h.core.calls.values()))
    assert call.state is CallState.RINGING
    h.feed(answer(out, 200, sdp=SDP), CALLEE)
    assert 200 in statuses(h.sent_to(CALLER))


def test_bye_in_the_early_dialog_ends_the_call_like_a_cancel() -> None:
    """§15: the caller's phone may end an early dialog with BYE instead of CANCEL. It gets
    200, its INVITE 487, and the ringing desk a CANCEL; with a 481 instead the desk would go
    on ringing and pick up to silence."""
    h = Harness()
    h.feed(invite(), CALLER)
    out = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(answer(out, 180), CALLEE)
    ringing = next(m for m in h.sent_to(CALLER) if isinstance(m, Response) and m.status == 180)
    h.feed(request_in_dialog("BYE", ringing, 2, "z9hG4bKebye"), CALLER)
    sent = h.sent()
    assert sorted(statuses([m for d, m in sent if d == CALLER])) == [200, 487]
    assert requests([m for d, m in sent if d == CALLEE]) == ["CANCEL"]
    h.feed(answer(out, 487), CALLEE)
    assert_nothing_left(h)


# -- BYE while a transfer rings -------------------------------------------------------------


@pytest.mark.parametrize("outcome", [200, 486])
def test_agent_hanging_up_while_the_transfer_rings_leaves_the_caller_to_the_target(
    outcome: int,
) -> None:
    """The agent's phone hangs up (and retransmits its BYE) while the target still rings: the
    caller waits for the target, then talks with it, or is hung up if it fails, never left
    alone on a call nobody else is on."""
    h = Harness()
    inv, _ok = establish(h)
    h.sent()
    call_id = next(iter(h.core.calls))
    h.core.transfers.start(call_id, [dest(TARGET)], h.now)
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_invite, 180, tag="t1"), TARGET)
    h.feed(bye_from_callee(inv), CALLEE)
    sent = h.sent()
    assert statuses([m for d, m in sent if d == CALLEE]) == [200]
    assert [m for d, m in sent if d in (CALLER, TARGET)] == [], "the caller waits for the target"
    h.feed(bye_from_callee(inv), CALLEE)
    assert statuses(h.sent_to(CALLEE)) == [200], "a retransmitted BYE changes nothing"
    call = h.core.calls[call_id]
    sdp = SDP if outcome == 200 else b""
    h.feed(
        answer(target_invite, outcome, tag="t1", sdp=sdp, contact="sip:t@127.0.0.1:5090"), TARGET
    )
    sent = h.sent()
    if outcome == 200:
        assert requests([m for d, m in sent if d == TARGET]) == ["ACK"]
        assert [m for d, m in sent if d == CALLER] == []
        assert h.media.connected[-1] == (call.caller.media.port, call.legs["t1"].media.port)
        assert call.state is CallState.ANSWERED
        return
    assert requests([m for d, m in sent if d == CALLER]) == ["BYE"], "nobody left for the caller"
    bye = next(m for d, m in sent if d == CALLER and isinstance(m, Request))
    h.feed(answer(bye, 200, tag=""), CALLER)
    assert_nothing_left(h)


# -- the ACK that never comes (RFC 3261 §13.3.1.4) -------------------------------------------


def test_no_ack_for_the_callers_200_hangs_up_both_legs_after_64_t1() -> None:
    """The caller's phone never ACKs its 200 OK (it crashed, or the ACK is lost each time):
    the 200 is retransmitted for 64*T1, then both legs get a BYE and the call gives back all
    it held, even though the caller never answers its BYE either."""
    h = Harness()
    h.feed(invite(), CALLER)
    out = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(answer(out, 200, sdp=SDP), CALLEE)
    h.sent()
    answered_at = h.now
    oks = 0
    byes: list[tuple[tuple[str, int], Request]] = []
    while h.now + 0.5 < answered_at + 32.0:
        h.advance(0.5)
        for where, message in h.sent():
            if isinstance(message, Response) and message.status == 200:
                oks += 1
            elif isinstance(message, Request) and message.method == "BYE":
                byes.append((where, message))
    assert oks >= 6, "the 200 is retransmitted until the ACK would have come"
    assert byes == []
    h.advance(0.5)
    for where, message in h.sent():
        if isinstance(message, Request) and message.method == "BYE":
            byes.append((where, message))
    assert sorted(where for where, _ in byes) == [CALLER, CALLEE]
    call = next(iter(h.core.calls.values()))
    assert call.ended_reason == "no ACK for 200 OK"
    callee_bye = next(m for where, m in byes if where == CALLEE)
    h.feed(answer(callee_bye, 200, tag=""), CALLEE)
    run_out_the_timers(h)  # the caller, gone, never answers its BYE: Timer F ends it
    assert_nothing_left(h)
    assert len(h.core.txl) == 0
    assert call.legs["a"].state is LegState.TERMINATED


# -- a re-INVITE with no one to mirror it to (RFC 3261 §13.3.1) ------------------------------


def caller_alone_while_the_transfer_rings(h: Harness) -> tuple[Response, int]:
    """The agent hung up while the blind transfer still rings: the caller's leg has no
    confirmed party to mirror a re-INVITE onto. The caller's 200 OK, and its media port."""
    inv, ok = establish(h)
    h.sent()
    call_id = next(iter(h.core.calls))
    h.core.transfers.start(call_id, [dest(TARGET)], h.now)
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_invite, 180, tag="t1"), TARGET)
    h.feed(bye_from_callee(inv), CALLEE)
    h.sent()
    return ok, h.core.calls[call_id].caller.media.port


@pytest.mark.parametrize(
    ("offered", "answered"), [(b"sendonly", b"recvonly"), (b"sendrecv", b"sendrecv")]
)
def test_a_reinvite_offer_with_no_one_to_mirror_it_to_is_answered_by_the_bridge(
    offered: bytes, answered: bytes
) -> None:
    """§13.3.1: a 2xx to an INVITE with an offer carries the answer. The bridge answers from
    its own media, under the o= line of what it last sent the caller (RFC 3264 §8): the same
    session id, the version one higher. A 200 with no SDP would leave the phone's offer
    unanswered, and many phones drop such a call."""
    h = Harness()
    ok, port = caller_alone_while_the_transfer_rings(h)
    h.feed(reinvite_from_caller(ok, 2, b"a=" + offered), CALLER)
    (reply,) = [m for m in h.sent_to(CALLER) if isinstance(m, Response)]
    assert reply.status == 200
    assert reply.content_type == "application/sdp"
    assert f"m=audio {port} ".encode() in reply.body
    assert b"a=" + answered in reply.body
    before, after = (SessionDescription.parse(m.body).origin for m in (ok, reply))
    assert after.session_id == before.session_id
    assert after.session_version == before.session_version + 1


def test_an_offerless_reinvite_with_no_one_to_mirror_it_to_gets_an_offer() -> None:
    """§14.2: a re-INVITE without a body asks for an offer in the 2xx, answered in the ACK."""
    h = Harness()
    ok, port = caller_alone_while_the_transfer_rings(h)
    h.feed(request_in_dialog("INVITE", ok, 2, "z9hG4bKnosdp"), CALLER)
    (reply,) = [m for m in h.sent_to(CALLER) if isinstance(m, Response)]
    assert reply.status == 200
    assert f"m=audio {port} ".encode() in reply.body
    assert b"a=sendrecv" in reply.body


# -- CANCEL of a re-INVITE (RFC 3261 §9.2) ---------------------------------------------------


def cancel_from_callee(inv: Request, cseq: int) -> bytes:
    """The agent's CANCEL of its ``reinvite_from_callee(inv, cseq, ...)``: same Via branch,
    From, To (with the bridge's tag: the re-INVITE is inside the dialog) and CSeq number."""
    return (
        "CANCEL sip:bridge@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bKre{cseq}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {inv.headers.get('To')};tag=callee1\r\n"
        f"To: {inv.headers.get('From')}\r\n"
        f"Call-ID: {inv.call_id}\r\n"
        f"CSeq: {cseq} CANCEL\r\nContent-Length: 0\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("provisional_first", [True, False])
def test_a_cancelled_hold_is_answered_487_and_cancelled_at_the_caller(
    provisional_first: bool,
) -> None:
    """The agent's phone gives up on its hold before the caller's phone answered the mirrored
    re-INVITE: the CANCEL gets 200 and the re-INVITE 487 (§9.2), not 501, and the mirrored
    re-INVITE is cancelled too, once it drew a provisional response (§9.1). The caller's 487
    undoes the hold tone; nothing more goes back to the agent, whose request is answered."""
    h = Harness()
    inv, _ok = establish(h)
    h.sent()
    call = next(iter(h.core.calls.values()))
    h.feed(reinvite_from_callee(inv, 2, b"a=sendonly"), CALLEE)
    mirrored = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    assert call.caller.media.port in h.media.held
    if provisional_first:
        h.feed(answer_from_caller(mirrored, 100), CALLER)
    h.feed(cancel_from_callee(inv, 2), CALLEE)
    sent = h.sent()
    to_agent = [m for d, m in sent if d == CALLEE and isinstance(m, Response)]
    assert [(m.status, m.cseq.method) for m in to_agent] == [(200, "CANCEL"), (487, "INVITE")]
    to_caller = [m for d, m in sent if d == CALLER]
    if not provisional_first:
        assert to_caller == [], "§9.1: no CANCEL before a provisional response"
        h.feed(answer_from_caller(mirrored, 180), CALLER)
        to_caller = h.sent_to(CALLER)
    (cancel,) = to_caller
    assert isinstance(cancel, Request)
    assert cancel.method == "CANCEL"
    assert cancel.top_via.branch == mirrored.top_via.branch
    assert cancel.cseq.seq == mirrored.cseq.seq
    h.feed(answer_from_caller(cancel, 200), CALLER)
    h.feed(answer_from_caller(mirrored, 487), CALLER)
    assert requests(h.sent_to(CALLER)) == ["ACK"]
    assert h.sent_to(CALLEE) == []
    assert call.caller.media.port not in h.media.held
    assert not call.caller.held
    assert not h.core._reinvites


def test_a_cancel_after_the_reinvite_was_answered_changes_nothing() -> None:
    """§9.2: the re-INVITE's transaction still exists but has its final response: 200 to the
    CANCEL, nothing else. A CANCEL matching no transaction at all gets 481."""
    h = Harness()
    inv, _ok = establish(h)
    h.sent()
    h.feed(reinvite_from_callee(inv, 2, b"a=sendonly"), CALLEE)
    mirrored = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    h.feed(answer_from_caller(mirrored, 200, HOLD_ANSWER), CALLER)
    assert statuses(h.sent_to(CALLEE)) == [200]
    h.feed(cancel_from_callee(inv, 2), CALLEE)
    assert statuses(h.sent_to(CALLEE)) == [200]
    assert h.sent_to(CALLER) == []
    h.feed(cancel_from_callee(inv, 9), CALLEE)
    assert statuses(h.sent_to(CALLEE)) == [481]


def hold_cancelled_as_the_caller_accepts(h: Harness) -> tuple[Call, Response, Request]:
    """The agent's phone holds the caller and CANCELs that re-INVITE; the caller's phone accepts
    the mirrored hold as the CANCEL leaves. The call, its 200 OK to the caller's INVITE, and
    the mirrored hold."""
    inv, ok = establish(h)
    h.sent()
    call = next(iter(h.core.calls.values()))
    h.feed(reinvite_from_callee(inv, 2, b"a=sendonly"), CALLEE)
    mirrored = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    h.feed(answer_from_caller(mirrored, 100), CALLER)
    h.feed(cancel_from_callee(inv, 2), CALLEE)
    h.sent()
    h.feed(answer_from_caller(mirrored, 200, HOLD_ANSWER), CALLER)
    return call, ok, mirrored


def test_a_cancelled_hold_that_took_effect_anyway_is_undone() -> None:
    """The caller's phone accepted the hold just as the CANCEL left: the 200 is ACKed, and
    since the agent's phone was told 487 and believes they talk, the bridge resumes the
    caller rather than leave it ``recvonly`` with the agent hearing nothing."""
    h = Harness()
    call, ok, mirrored = hold_cancelled_as_the_caller_accepts(h)
    sent = [m for m in h.sent_to(CALLER) if isinstance(m, Request)]
    assert [m.method for m in sent] == ["ACK", "INVITE"]
    assert b"a=sendrecv" in sent[1].body
    assert sent[1].cseq.seq > mirrored.cseq.seq
    assert call.caller.media.port not in h.media.held
    h.feed(answer_from_caller(sent[1], 200, SDP), CALLER)
    assert not call.caller.held
    assert not h.core._reinvites
    assert h.sent_to(CALLEE) == []
    assert ok.call_id == sent[1].call_id


@pytest.mark.parametrize("status", [488, 500])
def test_a_refused_resume_of_the_bridges_own_leaves_the_caller_hearing_the_agent(
    status: int,
) -> None:
    """The bridge's resume undoing a cancelled hold is refused: §14.1, the caller's phone is
    still on hold, so the bridge counts it held again; but the agent believes they talk and a
    phone on hold still receives, so the caller goes on hearing the agent, no tone over them."""
    h = Harness()
    call, _ok, _mirrored = hold_cancelled_as_the_caller_accepts(h)
    resume = [m for m in h.sent_to(CALLER) if isinstance(m, Request)][-1]
    assert b"a=sendrecv" in resume.body
    assert call.caller.media.port not in h.media.held
    h.feed(answer_from_caller(resume, status), CALLER)
    assert requests(h.sent_to(CALLER)) == ["ACK"]
    assert call.caller.held
    assert call.caller.media.port not in h.media.held
    assert not h.core._reinvites


def resume_cancelled_as_the_caller_accepts(h: Harness) -> tuple[Request, Request]:
    """The agent's phone holds the caller, then sends a resume and CANCELs it; the caller's
    phone accepts the mirrored resume as the CANCEL leaves. The mirrored resume, and what the
    bridge sent the caller after that 200 OK."""
    inv, _ok = establish(h)
    h.sent()
    h.feed(reinvite_from_callee(inv, 2, b"a=sendonly"), CALLEE)
    hold = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    h.feed(answer_from_caller(hold, 200, HOLD_ANSWER), CALLER)
    h.sent()
    h.feed(reinvite_from_callee(inv, 3, b"a=sendrecv"), CALLEE)
    mirrored = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    h.feed(answer_from_caller(mirrored, 100), CALLER)
    h.feed(cancel_from_callee(inv, 3), CALLEE)
    assert [(m.status, m.cseq.method) for m in h.sent_to(CALLEE) if isinstance(m, Response)] == [
        (200, "CANCEL"),
        (487, "INVITE"),
    ]
    h.sent()
    h.feed(answer_from_caller(mirrored, 200, SDP), CALLER)
    sent = [m for m in h.sent_to(CALLER) if isinstance(m, Request)]
    assert [m.method for m in sent] == ["ACK", "INVITE"]
    return mirrored, sent[1]


def test_a_cancelled_resume_that_took_effect_anyway_is_undone() -> None:
    """The mirror image of the cancelled hold: the agent's phone was told 487, so by §14.1 its
    session is unchanged and it believes the caller on hold, while the caller's phone accepted
    the resume. The bridge holds the caller again (RFC 3264 §8.4), hold tone included, rather
    than leave a caller who can hear an agent who thinks they cannot be heard."""
    h = Harness()
    mirrored, rehold = resume_cancelled_as_the_caller_accepts(h)
    call = next(iter(h.core.calls.values()))
    assert b"a=sendonly" in rehold.body
    assert rehold.cseq.seq > mirrored.cseq.seq
    assert rehold.call_id == mirrored.call_id
    assert origin_version(rehold.body) == origin_version(mirrored.body) + 1
    assert call.caller.media.port in h.media.held
    h.feed(answer_from_caller(rehold, 200, HOLD_ANSWER), CALLER)
    assert requests(h.sent_to(CALLER)) == ["ACK"]
    assert call.caller.held
    assert call.caller.media.port in h.media.held
    assert not h.core._reinvites
    assert h.sent_to(CALLEE) == []


def test_a_rehold_that_meets_glare_goes_again_after_the_14_1_delay() -> None:
    """The caller's phone refuses the bridge's hold with 491 (§14.1): until the retry it is
    not held, hold tone off; the hold goes again within 0 to 2 s and takes effect."""
    h = Harness()
    _mirrored, rehold = resume_cancelled_as_the_caller_accepts(h)
    call = next(iter(h.core.calls.values()))
    h.feed(answer_from_caller(rehold, 491), CALLER)
    assert requests(h.sent_to(CALLER)) == ["ACK"]
    assert not call.caller.held
    assert call.caller.media.port not in h.media.held
    retried: list[Request] = []
    for _ in range(21):
        h.advance(0.1)
        retried += [m for m in h.sent_to(CALLER) if isinstance(m, Request) and m.method == "INVITE"]
    assert len({m.top_via.branch for m in retried}) == 1, "one re-INVITE (and its Timer A)"
    assert b"a=sendonly" in retried[0].body
    assert retried[0].cseq.seq > rehold.cseq.seq
    assert call.caller.held
    assert call.caller.media.port in h.media.held
    h.feed(answer_from_caller(retried[0], 200, HOLD_ANSWER), CALLER)
    assert call.caller.held
    assert not h.core._reinvites


# -- a dialog lost at the far end: 481 or 408 to the bridge's request (RFC 3261 §12.2.1.2) -----


def hangup_reasons(h: Harness) -> list[str]:
    return [e.data["reason"] for e in h.core.take_events() if e.kind == "hangup"]


def test_a_481_to_a_mirrored_hold_ends_the_call_for_both() -> None:
    """The caller's phone rebooted and answers the agent's mirrored hold with 481: that dialog
    is gone (§12.2.1.2), so its leg is too, with no BYE it would only answer 481 again. The
    agent's re-INVITE gets 487, not the 481 that would say its own dialog is gone, then a BYE
    (§15.1.2); the ports of both go back to the pool."""
    h = Harness()
    inv, _ok = establish(h)
    h.sent()
    h.feed(reinvite_from_callee(inv, 2, b"a=sendonly"), CALLEE)
    mirrored = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    h.feed(answer_from_caller(mirrored, 481), CALLER)
    sent = h.sent()
    assert requests([m for d, m in sent if d == CALLER]) == ["ACK"]
    to_callee = [m for d, m in sent if d == CALLEE]
    assert statuses(to_callee) == [487]
    assert requests(to_callee) == ["BYE"]
    call = next(iter(h.core.calls.values()))
    assert call.caller.state is LegState.TERMINATED
    h.feed(answer(next(m for m in to_callee if isinstance(m, Request)), 200, tag=""), CALLEE)
    assert_nothing_left(h)
    assert call.ended_reason == "dialog lost (481)"
    assert hangup_reasons(h) == ["dialog lost (481)"]
    run_out_the_timers(h)
    assert len(h.core.txl) == 0
    assert not h.core._reinvites


def test_a_mirrored_hold_that_times_out_ends_the_call_with_a_bye_to_both() -> None:
    """The agent's phone answers nothing to the caller's mirrored hold: Timer B's 408 ends
    that dialog (§12.2.1.2), with a BYE all the same, since the phone may still think it is up.
    The caller's re-INVITE gets 487 and a BYE; its ports and the agent's are freed at once,
    and the call is gone once the agent's BYE too has run out."""
    h = Harness()
    _inv, ok = establish(h)
    h.sent()
    h.feed(reinvite_from_caller(ok, 2, b"a=sendonly"), CALLER)
    mirrored = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    sent: list[tuple[tuple[str, int], Request | Response]] = []
    for _ in range(66):
        h.advance(0.5)
        sent += h.sent()
    to_callee = [m for d, m in sent if d == CALLEE and isinstance(m, Request)]
    assert {m.method for m in to_callee} == {"INVITE", "BYE"}
    assert all(m.cseq.seq == mirrored.cseq.seq for m in to_callee if m.method == "INVITE")
    to_caller = [m for d, m in sent if d == CALLER]
    assert {s for s in statuses(to_caller) if s >= 200} == {487}
    assert set(requests(to_caller)) == {"BYE"}
    call = next(iter(h.core.calls.values()))
    assert call.ended_reason == "no response (408)"
    h.feed(answer_from_caller(next(m for m in to_caller if isinstance(m, Request)), 200), CALLER)
    assert h.media.live == set()
    run_out_the_timers(h)
    assert_nothing_left(h)
    assert hangup_reasons(h) == ["no response (408)"]
    assert len(h.core.txl) == 0


def test_a_481_to_the_bridges_own_resume_hangs_up_the_target() -> None:
    """After the agent's attended transfer the bridge resumes the caller, whose phone lost
    the dialog meanwhile: the target, left alone with no one, gets a BYE, and the caller's
    leg goes without one."""
    h = Harness()
    ok, resume = replace_with_the_caller_on_hold(h)
    h.sent()
    call = next(c for c in h.core.calls.values() if c.caller.invite.call_id == ok.call_id)
    target = call.legs[call.callee_leg]
    h.feed(answer_from_caller(resume, 481), CALLER)
    sent = h.sent()
    byes = [(d, m) for d, m in sent if isinstance(m, Request) and m.method == "BYE"]
    assert target.invite.call_id in {m.call_id for _d, m in byes}
    assert [m.method for _d, m in sent if isinstance(m, Request) and m.call_id == ok.call_id] == [
        "ACK"
    ], "no BYE to the caller, whose dialog is gone"
    assert call.caller.state is LegState.TERMINATED
    assert call.ended_reason == "dialog lost (481)"
    for who, bye in byes:
        h.feed(answer(bye, 200, tag=""), who)
    assert call.call_id not in h.core.calls


def callee_hangs_up_before_the_callers_ack(h: Harness) -> Response:
    """The callee answers and hangs up at once, before the caller's ACK for the bridge's 200
    OK has come: the caller's 200 OK."""
    h.feed(invite(), CALLER)
    out = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(answer(out, 200, sdp=SDP), CALLEE)
    ok = next(m for m in h.sent_to(CALLER) if isinstance(m, Response) and m.status == 200)
    h.feed(bye_from_callee(out), CALLEE)
    assert statuses(h.sent_to(CALLEE)) == [200]
    return ok


def test_a_bye_to_the_caller_waits_for_its_ack_of_the_200() -> None:
    """§15: a UAS must not send BYE on a confirmed dialog before the ACK for its 2xx came (or
    its transaction gave up): the ACK could still be on its way, and a phone that gets a BYE
    first may answer 481 and keep ringing or, worse, keep the call up. The BYE goes once the
    ACK is in."""
    h = Harness()
    ok = callee_hangs_up_before_the_callers_ack(h)
    h.advance(1.0)
    assert requests(h.sent_to(CALLER)) == []
    h.feed(request_in_dialog("ACK", ok, 1, "z9hG4bKack1"), CALLER)
    (bye,) = [m for m in h.sent_to(CALLER) if isinstance(m, Request)]
    assert bye.method == "BYE"
    assert bye.call_id == ok.call_id
    h.feed(answer_from_caller(bye, 200), CALLER)
    run_out_the_timers(h)
    assert_nothing_left(h)
    assert len(h.core.txl) == 0


def test_a_bye_waiting_for_an_ack_that_never_comes_goes_when_the_200_gives_up() -> None:
    """§13.3.1.4: after 64*T1 of 200 OK retransmissions without an ACK the dialog is
    confirmed but the session is to end with a BYE; the one waiting goes then, once, and the
    call gives back all it held even though the caller never answers it."""
    h = Harness()
    callee_hangs_up_before_the_callers_ack(h)
    answered_at = h.now
    byes: dict[str, float] = {}
    while h.now < answered_at + 33.0:
        h.advance(0.5)
        for m in h.sent_to(CALLER):
            if isinstance(m, Request) and m.method == "BYE":
                byes.setdefault(m.top_via.branch or "", h.now)
    assert len(byes) == 1, "one BYE (its retransmissions are its transaction's)"
    assert min(byes.values()) >= answered_at + 32.0
    run_out_the_timers(h)
    assert_nothing_left(h)
    assert len(h.core.txl) == 0


# -- a re-offer the phone refused changes nothing, its o= version included (RFC 3264 §8) -------


def origin_version(body: bytes) -> int:
    return SessionDescription.parse(body).origin.session_version


@pytest.mark.parametrize("status", [488, 491])
def test_a_refused_reoffer_leaves_the_next_sdp_version_one_above_the_accepted(
    status: int,
) -> None:
    """The caller's phone refuses the agent's hold: §14.1, the session is as it was, so the
    next offer the bridge sends it follows the last one that phone accepted, one version up
    (RFC 3264 §8), rather than skipping the number of the refused one."""
    h = Harness()
    inv, ok = establish(h)
    h.sent()
    accepted = origin_version(ok.body)
    h.feed(reinvite_from_callee(inv, 2, b"a=sendonly"), CALLEE)
    refused = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    assert origin_version(refused.body) == accepted + 1
    h.feed(answer_from_caller(refused, status), CALLER)
    assert statuses(h.sent_to(CALLEE)) == [status]
    h.feed(reinvite_from_callee(inv, 3, b"a=inactive"), CALLEE)
    again = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    assert b"a=inactive" in again.body
    assert origin_version(again.body) == accepted + 1


def test_a_refused_resume_of_the_bridges_own_leaves_the_sdp_version_as_it_was() -> None:
    """The same for the bridge's own re-INVITE: the caller's phone refuses the resume after a
    blind transfer, and the target's next offer, mirrored onto the caller, follows the SDP
    the caller last accepted (its hold), one version up."""
    h = Harness()
    _inv, ok = hold_the_caller(h)
    call = next(iter(h.core.calls.values()))
    accepted = origin_version(call.caller.last_sdp)
    h.core.transfers.start(call.call_id, [dest(TARGET)], h.now, mode="blind", ticket_id="T1")
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_invite, 200, tag="t1", sdp=SDP, contact="sip:t@127.0.0.1:5090"), TARGET)
    resume = next(m for m in h.sent_to(CALLER) if isinstance(m, Request) and m.call_id == "c1")
    assert origin_version(resume.body) == accepted + 1
    h.feed(answer_from_caller(resume, 488), CALLER)
    h.sent()
    offer = reinvite_from_callee(target_invite, 7, b"a=inactive").replace(b"callee1", b"t1")
    h.feed(offer, TARGET)
    mirrored = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    assert b"a=inactive" in mirrored.body
    assert origin_version(mirrored.body) == accepted + 1
    assert ok.call_id == mirrored.call_id
