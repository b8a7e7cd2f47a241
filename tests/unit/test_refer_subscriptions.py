"""Several REFERs in one dialog, in the B2BUA core with raw SIP and a fake clock: each creates
a subscription of its own, named in its NOTIFYs by ``Event: refer;id=`` and the REFER's CSeq
number (RFC 3515 §2.4.6), and a failed NOTIFY ends only its own (RFC 6665 §4.2.2)."""

from __future__ import annotations

from test_b2bua import CALLEE, SDP, Harness, answer, establish
from test_transfer import TARGET, dest, notifies, refer_from_callee, transfer

from bridge.calls.transfer import TransferRequest
from bridge.sip.message import Request


def event(notify: Request) -> str | None:
    return notify.headers.get("Event")


def two_refers(h: Harness) -> tuple[Request, Request, TransferRequest, Request]:
    """The agent's REFER (CSeq 2) rings the target; a second one (CSeq 3) comes while it rings.
    Returns the first REFER's 100 Trying NOTIFY, the target's INVITE, the second REFER's
    transfer request, and its 100 Trying NOTIFY; neither NOTIFY answered yet."""
    inv, _ok = establish(h)
    h.sent()
    h.feed(refer_from_callee(inv, cseq=2), CALLEE)
    (first,) = notifies(h.sent_to(CALLEE))
    h.core.take_transfer_requests()
    transfer(h, dest(TARGET), refer_leg="b1")
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(refer_from_callee(inv, cseq=3), CALLEE)
    (second,) = notifies(h.sent_to(CALLEE))
    (again,) = h.core.take_transfer_requests()
    return first, target_invite, again, second


def test_each_refers_notifies_carry_its_cseq_number_as_the_event_id() -> None:
    """The first REFER's NOTIFYs carry ``id=2`` (allowed on the first, §2.4.6), the second's
    ``id=3`` (required), so the agent's phone can tell the two subscriptions apart."""
    h = Harness()
    first, target_invite, again, second = two_refers(h)
    assert (event(first), event(second)) == ("refer;id=2", "refer;id=3")
    h.core.fail_transfer_request(again, 404, h.now)
    (refused,) = notifies(h.sent_to(CALLEE))
    assert event(refused) == "refer;id=3"
    assert refused.body.startswith(b"SIP/2.0 404")
    h.feed(answer(target_invite, 180, tag="t1"), TARGET)
    (ringing,) = notifies(h.sent_to(CALLEE))
    assert event(ringing) == "refer;id=2"
    assert ringing.body.startswith(b"SIP/2.0 180")


def test_a_481_to_the_first_refers_notify_does_not_end_the_seconds() -> None:
    """The agent's phone forgot the first subscription (481): the second REFER, refused
    because a transfer already rings, is still told so."""
    h = Harness()
    first, target_invite, again, _second = two_refers(h)
    h.feed(answer(first, 481, tag=""), CALLEE)
    h.feed(answer(target_invite, 180, tag="t1"), TARGET)
    assert notifies(h.sent_to(CALLEE)) == []
    h.core.fail_transfer_request(again, 404, h.now)
    (refused,) = notifies(h.sent_to(CALLEE))
    assert event(refused) == "refer;id=3"
    assert refused.body.startswith(b"SIP/2.0 404")


def test_a_481_to_the_second_refers_notify_does_not_end_the_firsts() -> None:
    """The other way round: the second subscription ends, and the first REFER's transfer is
    still notified through to its final 200."""
    h = Harness()
    _first, target_invite, _again, second = two_refers(h)
    h.feed(answer(second, 481, tag=""), CALLEE)
    h.feed(answer(target_invite, 180, tag="t1"), TARGET)
    h.feed(answer(target_invite, 200, tag="t1", sdp=SDP, contact="sip:t@127.0.0.1:5090"), TARGET)
    sent = notifies(h.sent_to(CALLEE))
    assert [(event(m), m.body[:11]) for m in sent] == [
        ("refer;id=2", b"SIP/2.0 180"),
        ("refer;id=2", b"SIP/2.0 200"),
    ]
    call = next(iter(h.core.calls.values()))
    assert [e.data["refer_id"] for e in call.history if e.kind == "refer_subscription_ended"] == [3]


def test_a_transfer_naming_no_refer_notifies_in_the_legs_latest() -> None:
    """A transfer started for the leg's REFER without its id reports in the subscription of
    that leg's latest REFER at the start (the two-REFER tests above start theirs so too)."""
    h = Harness()
    inv, _ok = establish(h)
    h.sent()
    h.feed(refer_from_callee(inv, cseq=4), CALLEE)
    h.sent()
    transfer(h, dest(TARGET), refer_leg="b1")
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_invite, 180, tag="t1"), TARGET)
    (ringing,) = notifies(h.sent_to(CALLEE))
    assert event(ringing) == "refer;id=4"
