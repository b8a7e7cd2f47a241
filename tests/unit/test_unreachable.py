"""A party the bridge cannot send a response to (RFC 3261 §17.2.4), in the B2BUA core with raw
SIP and a fake clock: the transport's report ends the right legs, and never crashes the core."""

from __future__ import annotations

from test_b2bua import (
    CALLEE,
    CALLER,
    SDP,
    Harness,
    answer,
    bye_from_callee,
    establish,
    invite,
    reinvite_from_callee,
)
from test_races import answer_from_caller, assert_nothing_left, requests, statuses

from bridge.calls.call import CallState
from bridge.sip.message import Request, Response


def history(h: Harness) -> list[tuple[str, dict[str, object]]]:
    return [(e.kind, e.data) for e in h.core.take_events()]


def test_a_caller_gone_while_ringing_has_the_callee_cancelled_and_the_reason_recorded() -> None:
    h = Harness()
    h.feed(invite(), CALLER)
    inv = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(answer(inv, 180), CALLEE)
    assert statuses(h.sent_to(CALLER)) == [180]
    h.core.take_events()

    h.core.transport_error(CALLER, "UDP", h.now)
    sent = h.sent()
    assert [(d, m.method) for d, m in sent if isinstance(m, Request)] == [(CALLEE, "CANCEL")]
    assert not [m for d, m in sent if d == CALLER], "nothing more for a caller that is gone"
    events = history(h)
    assert ("unreachable", {"leg": "a", "party": "caller"}) in events
    reason = "caller unreachable (response not delivered)"
    assert ("hangup", {"reason": reason}) in events
    call = next(iter(h.core.calls.values()))
    assert call.state is CallState.ENDING
    assert call.ended_reason == reason

    h.feed(answer(inv, 487), CALLEE)
    assert_nothing_left(h)


def test_a_caller_whose_200_is_lost_is_hung_up_and_the_callee_gets_bye() -> None:
    h = Harness()
    h.feed(invite(), CALLER)
    inv = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(answer(inv, 200, sdp=SDP), CALLEE)
    assert statuses(h.sent_to(CALLER)) == [200]

    h.core.transport_error(CALLER, "UDP", h.now)
    sent = h.sent()
    byes = {d: m for d, m in sent if isinstance(m, Request) and m.method == "BYE"}
    assert set(byes) == {CALLER, CALLEE}, "the caller's BYE goes to its Contact, best effort"
    events = history(h)
    assert ("unreachable", {"leg": "a", "party": "caller", "method": "INVITE"}) in events
    assert h.media.live == {20002}, "the caller's ports back now, the callee's at its BYE's end"

    h.feed(answer(byes[CALLEE], 200, tag=byes[CALLEE].to.tag or ""), CALLEE)
    h.core.transport_error(CALLER, "UDP", h.now)  # the BYE to the caller fails as well
    assert_nothing_left(h)


def test_a_lost_200_to_a_caller_being_hung_up_only_sends_the_bye_that_waited() -> None:
    h = Harness()
    h.feed(invite(), CALLER)
    inv = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(answer(inv, 200, sdp=SDP), CALLEE)
    h.sent()
    h.core.hangup(next(iter(h.core.calls)), h.now, reason="agent hung up")
    assert [m.method for m in h.sent_to(CALLEE) if isinstance(m, Request)] == ["BYE"]

    h.core.transport_error(CALLER, "UDP", h.now)
    assert requests(h.sent_to(CALLER)) == ["BYE"]
    assert next(iter(h.core.calls.values())).ended_reason == "agent hung up"


def test_a_lost_final_failure_or_out_of_dialog_answer_changes_nothing() -> None:
    h = Harness()
    h.feed(invite(user="404"), CALLER)
    assert 404 in statuses(h.sent_to(CALLER))
    h.feed(
        b"OPTIONS sip:bridge@127.0.0.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKopt1\r\nMax-Forwards: 70\r\n"
        b"From: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:bridge@127.0.0.1>\r\n"
        b"Call-ID: probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        CALLER,
    )
    assert statuses(h.sent_to(CALLER)) == [200]
    h.core.take_events()
    assert len(h.core.txl) == 2  # the 404's INVITE waits for its ACK, OPTIONS in Completed

    h.core.transport_error(CALLER, "UDP", h.now)
    assert len(h.core.txl) == 0
    assert h.sent() == []
    assert h.core.take_events() == []
    assert_nothing_left(h)


def test_a_lost_200_to_a_bye_changes_nothing_more() -> None:
    h = Harness()
    inv, _ok = establish(h)
    h.sent()
    h.feed(bye_from_callee(inv), CALLEE)
    bye = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    h.core.take_events()

    h.core.transport_error(CALLEE, "UDP", h.now)
    assert h.sent() == []
    assert not [kind for kind, _ in history(h) if kind == "unreachable"]
    h.feed(answer_from_caller(bye, 200), CALLER)
    assert_nothing_left(h)


def test_a_reinvite_whose_answer_cannot_reach_its_sender_ends_that_leg() -> None:
    """The callee's re-INVITE (hold) waits for the caller's answer; the callee cannot be
    reached any more: its leg leaves as after a 408, the caller of a two-party call gets BYE,
    and the caller's answer to the mirrored re-INVITE is still ACKed (§13.2.2.4)."""
    h = Harness()
    inv, ok = establish(h)
    h.sent()
    h.feed(reinvite_from_callee(inv, 2, b"a=sendonly"), CALLEE)
    mirrored = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    h.advance(0.3)
    assert statuses(h.sent_to(CALLEE)) == [100]
    h.core.take_events()

    h.core.transport_error(CALLEE, "UDP", h.now)
    sent = h.sent()
    assert [(d, m.method) for d, m in sent if isinstance(m, Request)] == [
        (CALLEE, "BYE"),
        (CALLER, "BYE"),
    ]
    assert not [m for d, m in sent if isinstance(m, Response)], "no 487 to a party gone"
    events = history(h)
    assert ("unreachable", {"leg": "b1", "party": "callee", "method": "INVITE"}) in events
    assert ("hangup", {"reason": "callee unreachable (response not delivered)"}) in events

    h.feed(answer_from_caller(mirrored, 200, SDP.replace(b"sendrecv", b"recvonly")), CALLER)
    assert requests(h.sent_to(CALLER)) == ["ACK"]
    byes = {d: m for d, m in sent if isinstance(m, Request)}
    h.feed(answer_from_caller(byes[CALLER], 200), CALLER)
    h.feed(answer(byes[CALLEE], 200, tag=byes[CALLEE].to.tag or ""), CALLEE)
    assert_nothing_left(h)
    assert ok.status == 200
