"""RFC 3261 §9.1 in the B2BUA core: no CANCEL before a provisional response, with a fake clock.

Every way the bridge gives up on a leg it is calling (the caller's CANCEL, the ring timeout,
a hang-up) must hold the CANCEL while that leg's INVITE has drawn no provisional response, send
it on the first one, end a leg that answers anyway with ACK and BYE, and send nothing when the
INVITE ends by a final response or Timer B. The caller's side never waits for any of that.
"""

from __future__ import annotations

import pytest
from test_b2bua import BACKUP, CALLEE, CALLER, SDP, Harness, answer, invite

from bridge.calls.call import CallState, LegState
from bridge.sip.message import Request, Response


def cancel_from_caller() -> bytes:
    """The caller's CANCEL of ``invite()``: its Request-URI, Via, From, To and Call-ID (§9.1)."""
    head = invite().split(b"\r\n\r\n")[0]
    lines = [
        line
        for line in head.split(b"\r\n")
        if not line.startswith((b"Content-Type", b"Content-Length", b"Contact"))
    ]
    text = b"\r\n".join(lines).replace(b"INVITE sip", b"CANCEL sip", 1)
    return text.replace(b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL") + b"\r\nContent-Length: 0\r\n\r\n"


def requests(messages: list[Request | Response]) -> list[str]:
    return [m.method for m in messages if isinstance(m, Request)]


def statuses(messages: list[Request | Response]) -> list[int]:
    return [m.status for m in messages if isinstance(m, Response)]


def call_out(h: Harness) -> Request:
    """The caller's INVITE fed in; the INVITE the bridge sent the first destination."""
    h.feed(invite(), CALLER)
    sent = h.sent()
    return next(m for d, m in sent if d == CALLEE and isinstance(m, Request))


def assert_nothing_left(h: Harness) -> None:
    assert h.core.calls == {}
    assert h.media.live == set()
    assert not h.core._by_client
    assert not h.core._by_dialog
    assert not h.core._ring_deadlines


@pytest.mark.parametrize("provisional", [100, 180, 183])
def test_caller_cancel_before_any_provisional_is_held_until_one_arrives(provisional: int) -> None:
    h = Harness()
    out = call_out(h)
    h.feed(cancel_from_caller(), CALLER)
    sent = h.sent()
    assert sorted(statuses([m for d, m in sent if d == CALLER])) == [200, 487]
    assert requests([m for d, m in sent if d == CALLEE]) == [], "§9.1: no CANCEL yet"

    h.feed(answer(out, provisional), CALLEE)
    sent = h.sent()
    (cancel,) = [m for d, m in sent if d == CALLEE]
    assert isinstance(cancel, Request)
    assert cancel.method == "CANCEL"
    assert cancel.top_via.branch == out.top_via.branch
    assert cancel.cseq.seq == out.cseq.seq
    assert not [m for d, m in sent if d == CALLER], "nothing rings for a caller who left"
    h.feed(answer(out, 180), CALLEE)
    assert h.sent() == [], "one CANCEL, however many provisional responses"

    h.feed(answer(out, 487), CALLEE)
    assert requests(h.sent_to(CALLEE)) == ["ACK"]
    assert_nothing_left(h)


def test_cancel_after_a_100_trying_goes_at_once() -> None:
    """100 Trying is a provisional response too (§9.1 says any), though it leaves the leg
    without a dialog."""
    h = Harness()
    out = call_out(h)
    h.feed(answer(out, 100, tag=""), CALLEE)
    h.feed(cancel_from_caller(), CALLER)
    assert requests(h.sent_to(CALLEE)) == ["CANCEL"]


def test_a_held_cancel_answered_with_200_is_acked_and_hung_up() -> None:
    """The callee answered before it saw any CANCEL: the dialog exists, the bridge ends it (§15)
    and the caller, who has its 487 already, hears nothing of it."""
    h = Harness()
    out = call_out(h)
    h.feed(cancel_from_caller(), CALLER)
    h.sent()
    h.feed(answer(out, 200, sdp=SDP), CALLEE)
    sent = h.sent()
    assert requests([m for d, m in sent if d == CALLEE]) == ["ACK", "BYE"]
    assert not [m for d, m in sent if d == CALLER]
    assert h.media.connected == []
    bye = next(m for d, m in sent if isinstance(m, Request) and m.method == "BYE")
    h.feed(answer(bye, 200, tag="callee1"), CALLEE)
    assert_nothing_left(h)


def test_a_held_cancel_is_dropped_when_a_final_failure_comes_first() -> None:
    h = Harness()
    out = call_out(h)
    h.feed(cancel_from_caller(), CALLER)
    h.sent()
    h.feed(answer(out, 486), CALLEE)
    sent = h.sent()
    assert requests([m for d, m in sent if d == CALLEE]) == ["ACK"]
    assert not [m for d, m in sent if d == CALLER], "the caller had its 487, and only that"
    assert_nothing_left(h)


def test_a_held_cancel_is_never_sent_when_the_invite_times_out() -> None:
    h = Harness()
    call_out(h)
    h.feed(cancel_from_caller(), CALLER)
    h.sent()
    methods: list[str] = []
    for _ in range(70):  # Timer B: 64*T1 = 32 s
        h.advance(0.5)
        methods += requests(h.sent_to(CALLEE))
    assert set(methods) == {"INVITE"}, "only the INVITE's retransmissions, no CANCEL"
    assert_nothing_left(h)


def test_ring_timeout_before_any_provisional_fails_over_and_cancels_later() -> None:
    h = Harness(CALLEE, BACKUP, ring=5.0)
    out = call_out(h)
    h.advance(5.1)
    sent = h.sent()
    assert "CANCEL" not in requests([m for d, m in sent if d == CALLEE])
    backup = next(m for d, m in sent if d == BACKUP and isinstance(m, Request))
    assert backup.method == "INVITE"

    h.feed(answer(out, 180), CALLEE)
    sent = h.sent()
    assert requests([m for d, m in sent if d == CALLEE]) == ["CANCEL"]
    assert not [m for d, m in sent if d == CALLER], "the given-up leg's ringing is not relayed"
    h.feed(answer(out, 487), CALLEE)
    assert not h.sent_to(CALLER), "its 487 fails neither the caller nor the backup"
    call = next(iter(h.core.calls.values()))
    assert call.state is CallState.RINGING
    assert call.legs["b1"].state is LegState.TERMINATED

    h.feed(answer(backup, 200, tag="backup1", sdp=SDP), BACKUP)
    assert statuses(h.sent_to(CALLER)) == [200]


def test_a_leg_given_up_by_ring_timeout_that_answers_is_hung_up_not_bridged() -> None:
    h = Harness(CALLEE, BACKUP, ring=5.0)
    out = call_out(h)
    h.advance(5.1)
    backup = next(m for d, m in h.sent() if d == BACKUP and isinstance(m, Request))
    h.feed(answer(out, 200, sdp=SDP), CALLEE)
    sent = h.sent()
    assert requests([m for d, m in sent if d == CALLEE]) == ["ACK", "BYE"]
    assert not [m for d, m in sent if d == CALLER]
    assert h.media.connected == []
    h.feed(answer(backup, 200, tag="backup1", sdp=SDP), BACKUP)
    assert statuses(h.sent_to(CALLER)) == [200]
    call = next(iter(h.core.calls.values()))
    assert call.state is CallState.ANSWERED
    assert h.media.connected == [(call.caller.media.port, call.legs["b2"].media.port)]


def test_last_destination_ringing_out_fails_the_caller_at_once() -> None:
    """The caller hears 480 at the ring timeout; the call is only given back once the leg it
    held a CANCEL for has ended."""
    h = Harness(ring=5.0)
    out = call_out(h)
    h.advance(5.1)
    sent = h.sent()
    assert [s for s in statuses([m for d, m in sent if d == CALLER]) if s >= 200] == [480]
    assert "CANCEL" not in requests([m for d, m in sent if d == CALLEE])
    h.feed(answer(out, 180), CALLEE)
    assert requests(h.sent_to(CALLEE)) == ["CANCEL"]
    assert h.core.calls, "still waiting for that leg's INVITE to end"
    h.feed(answer(out, 487), CALLEE)
    assert_nothing_left(h)
    assert h.core.counters.calls_failed == 1


def test_hang_up_while_the_callee_has_sent_nothing_holds_the_cancel() -> None:
    """A shutdown (or the API) hangs up a call whose callee has not answered the INVITE yet."""
    h = Harness()
    out = call_out(h)
    h.core.hangup(next(iter(h.core.calls)), h.now, reason="shutdown")
    sent = h.sent()
    assert [s for s in statuses([m for d, m in sent if d == CALLER]) if s >= 200] == [480]
    assert [m for d, m in sent if d == CALLEE] == []
    h.feed(answer(out, 100, tag=""), CALLEE)
    assert requests(h.sent_to(CALLEE)) == ["CANCEL"]
    h.feed(answer(out, 487), CALLEE)
    assert_nothing_left(h)
