"""A party refuses the bridge's resume (RFC 3264 §8.4), in the B2BUA core with raw SIP and a
fake clock: one more offer of the party's own codecs after a delay, then events saying who
hears what; the call stays up."""

from __future__ import annotations

from typing import Any

import pytest
from test_b2bua import (
    CALLEE,
    CALLER,
    SDP,
    Harness,
    answer,
    establish,
    reinvite_from_callee,
    request_in_dialog,
)
from test_races import origin_version, requests
from test_transfer import TARGET, bye_from_callee, resumes_sent_to_the_caller, transfer_in_mode

from bridge.calls.call import Call
from bridge.calls.ports import Destination
from bridge.calls.reoffer import MAX_REINVITE_ATTEMPTS, RESUME_RETRY_S
from bridge.sip.message import Request, Response

CALLER_SDP = SDP.replace(b"8 0 101", b"0 101").replace(b"a=rtpmap:8 PCMA/8000\r\n", b"")
"""The caller's phone speaks PCMU only, which the bridge's defaults do not put first."""

CALLER_HELD = CALLER_SDP.replace(b"sendrecv", b"recvonly")
CALLER_CONTACT = "sip:caller@127.0.0.1:5071"


def held_then_transferred(
    h: Harness, mode: str, held: bytes = CALLER_HELD, target: Destination | None = None
) -> tuple[Call, Response, Request]:
    """The agent's phone holds the caller (answered recvonly with ``held``: PCMU only), then
    the agent transfers (to ``target``, by default the 110 desk's trunk); once the target
    talks to the caller the bridge resumes it. The call, the bridge's 200 OK to the caller,
    and the resume."""
    inv, ok = establish(h)
    h.sent()
    h.feed(reinvite_from_callee(inv, 2, b"a=sendonly"), CALLEE)
    mirrored = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    h.feed(answer(mirrored, 200, tag="", sdp=held, contact=CALLER_CONTACT), CALLER)
    h.sent()
    if target is None:
        call_id = transfer_in_mode(h, mode)
    else:
        call_id = next(iter(h.core.calls))
        h.core.transfers.start(call_id, [target], h.now, mode=mode, ticket_id="T1")
    target_invite = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_invite, 200, tag="t1", sdp=SDP, contact="sip:t@127.0.0.1:5090"), TARGET)
    if mode == "attended":
        h.feed(bye_from_callee(inv, 3), CALLEE)
    (resume,) = resumes_sent_to_the_caller(h, ok)
    assert b"a=sendrecv" in resume.body
    h.core.take_events()
    return h.core.calls[call_id], ok, resume


NO_EVENTS = CALLER_HELD.replace(b"0 101", b"0").replace(
    b"a=rtpmap:101 telephone-event/8000\r\n", b""
)
EVENTS_96 = CALLER_HELD.replace(b"101", b"96")


def caller_hears_target_unheard(
    call: Call, status: int, reason: str, attempt: int
) -> dict[str, Any]:
    """``resume_failed`` of a caller left recvonly after a transfer to the target."""
    return {
        "leg": call.caller.leg_id,
        "party": "caller",
        "status": status,
        "reason": reason,
        "attempt": attempt,
        "peer": call.caller.peer,
        "hears": True,
        "heard": False,
        "other_party": "target",
    }


def assert_nothing_more_and_the_call_up(h: Harness, call: Call) -> None:
    assert invites_to_caller_over(h, 15.0) == []
    assert call.call_id in h.core.calls
    assert call.caller.live
    assert call.legs["t1"].live


@pytest.mark.parametrize(
    ("held", "media_line", "events"),
    [
        (CALLER_HELD, b"m=audio 20000 RTP/AVP 0 101\r\n", b"a=rtpmap:101 telephone-event"),
        (EVENTS_96, b"m=audio 20000 RTP/AVP 0 96\r\n", b"a=rtpmap:96 telephone-event"),
        (NO_EVENTS, b"m=audio 20000 RTP/AVP 0\r\n", None),
    ],
)
def test_the_first_resume_offers_the_codecs_the_caller_accepted(
    held: bytes, media_line: bytes, events: bytes | None
) -> None:
    """RFC 3264 §8: a new offer in the session keeps the formats the answerer accepted. The
    caller answered the hold with PCMU only, so the bridge's resume offers PCMU only, with
    the caller's own telephone-event under its payload type, or none when it had none; not
    the bridge's defaults (PCMA first), which a PCMU-only phone may refuse with 488."""
    h = Harness()
    _call, _ok, resume = held_then_transferred(h, "blind", held)
    assert media_line in resume.body
    assert b"PCMA" not in resume.body
    if events is None:
        assert b"telephone-event" not in resume.body
    else:
        assert events in resume.body


def refuse(h: Harness, resume: Request, status: int, retry_after: str | None = None) -> None:
    out = answer(resume, status, tag="", contact=CALLER_CONTACT, reason="Not Acceptable Here")
    if retry_after is not None:
        out = out.replace(
            b"Content-Length", f"Retry-After: {retry_after}\r\nContent-Length".encode()
        )
    h.feed(out, CALLER)
    assert requests(h.sent_to(CALLER)) == ["ACK"]


def invites_to_caller_over(h: Harness, seconds: float) -> list[tuple[float, Request]]:
    """The re-INVITEs sent to the caller meanwhile, when each first went (retransmissions
    of an unanswered one, §17.1.1.2, left out)."""
    sent: dict[str | None, tuple[float, Request]] = {}
    for _ in range(round(seconds * 10)):
        h.advance(0.1)
        for m in h.sent_to(CALLER):
            if isinstance(m, Request) and m.method == "INVITE":
                sent.setdefault(m.top_via.branch, (h.now, m))
    return list(sent.values())


def kinds(h: Harness) -> list[str]:
    return [e.kind for e in h.core.take_events()]


@pytest.mark.parametrize("mode", ["blind", "attended"])
def test_a_refused_resume_goes_again_as_it_was_after_a_delay(
    mode: str,
) -> None:
    """488 to the resume: 2 s later the bridge offers sendrecv again, built of the codecs the
    caller's phone itself accepted (PCMU, not the bridge's PCMA first). It is the description
    the phone refused, so under the same o= version (RFC 3264 §8: never one version for two
    descriptions). The caller's 200 takes it off hold; nothing more is said."""
    h = Harness()
    call, _ok, resume = held_then_transferred(h, mode)
    started = h.now
    refuse(h, resume, 488)
    events = h.core.take_events()
    assert [e.kind for e in events] == ["resume_refused"]
    assert events[0].data == {
        "leg": call.caller.leg_id,
        "party": "caller",
        "status": 488,
        "reason": "Not Acceptable Here",
        "attempt": 1,
    }
    assert call.caller.held
    (sent_at, retry), *more = invites_to_caller_over(h, 3.0)
    assert more == []
    assert sent_at - started == pytest.approx(RESUME_RETRY_S, abs=0.11)
    assert retry.call_id == resume.call_id
    assert retry.cseq.seq > resume.cseq.seq
    assert retry.body == resume.body
    assert origin_version(retry.body) == origin_version(resume.body)
    assert b"a=sendrecv" in retry.body
    assert b"RTP/AVP 0 101" in retry.body
    assert b"PCMA" not in retry.body
    h.feed(answer(retry, 200, tag="", sdp=CALLER_SDP, contact=CALLER_CONTACT), CALLER)
    assert requests(h.sent_to(CALLER)) == ["ACK"]
    assert not call.caller.held
    assert call.caller.reoffer is None
    assert not h.core._reinvites
    assert invites_to_caller_over(h, 15.0) == []
    assert kinds(h) == []


def test_a_resume_refused_twice_is_reported_and_the_call_stays() -> None:
    """The retry is refused too: a ``resume_failed`` event says the caller hears the target but
    is not heard, for the agent's screen and the supervisor console. No hang-up, and no
    third offer."""
    h = Harness()
    call, _ok, resume = held_then_transferred(h, "blind")
    refuse(h, resume, 488)
    (_, retry), *_ = invites_to_caller_over(h, 2.1)
    h.core.take_events()
    refuse(h, retry, 606)
    events = h.core.take_events()
    assert [e.kind for e in events] == ["resume_refused", "resume_failed"]
    assert events[0].data["attempt"] == 2
    assert events[0].data["status"] == 606
    assert events[1].data == caller_hears_target_unheard(call, 606, "Not Acceptable Here", 2)
    assert_nothing_more_and_the_call_up(h, call)
    assert not [m for m in h.sent_to(TARGET) if isinstance(m, Request)]
    assert call.caller.held
    assert call.caller.media.port not in h.media.held, "the caller still hears the target"


@pytest.mark.parametrize(("status", "header", "wait"), [(503, "5", 5.0), (500, "60", 10.0)])
def test_retry_after_sets_the_wait_up_to_ten_seconds(status: int, header: str, wait: float) -> None:
    """§21.5.4: a 503 (or 500) with Retry-After says when to ask again; the wait is bounded,
    as a caller who cannot be heard should not wait a minute."""
    h = Harness()
    _call, _ok, resume = held_then_transferred(h, "blind")
    started = h.now
    refuse(h, resume, status, retry_after=header)
    (sent_at, retry), *more = invites_to_caller_over(h, 12.0)
    assert more == []
    assert sent_at - started == pytest.approx(wait, abs=0.11)
    assert b"a=sendrecv" in retry.body


def test_a_call_that_ends_before_the_retry_sends_nothing() -> None:
    """The caller hangs up while the retry waits: nothing goes, and nothing is reported as a
    failed resume."""
    h = Harness()
    call, ok, resume = held_then_transferred(h, "blind")
    refuse(h, resume, 488)
    assert kinds(h) == ["resume_refused"]
    assert call.caller.reoffer is not None, "a retry waits"
    h.feed(request_in_dialog("BYE", ok, 9, "z9hG4bKcbye9"), CALLER)
    assert not call.caller.live
    h.sent()
    assert invites_to_caller_over(h, 4.0) == []
    assert "resume_failed" not in kinds(h)


def test_a_resume_that_meets_491_every_time_is_reported_when_given_up() -> None:
    """The caller's phone answers every resume with 491 (RFC 3261 §14.1): after the last of
    MAX_REINVITE_ATTEMPTS the bridge stops, and says so with ``resume_failed`` as for a
    resume refused twice, for the agent's screen. The call stays up; no further offer."""
    h = Harness()
    call, _ok, resume = held_then_transferred(h, "blind")
    sent = [resume]
    for _ in range(MAX_REINVITE_ATTEMPTS):
        pending = answer(sent[-1], 491, tag="", contact=CALLER_CONTACT, reason="Request Pending")
        h.feed(pending, CALLER)
        assert requests(h.sent_to(CALLER)) == ["ACK"]
        if len(sent) < MAX_REINVITE_ATTEMPTS:
            assert kinds(h) == []
            sent += [request for _, request in invites_to_caller_over(h, 4.5)]
    assert len(sent) == MAX_REINVITE_ATTEMPTS
    events = h.core.take_events()
    assert [e.kind for e in events] == ["resume_failed"]
    assert events[0].data == caller_hears_target_unheard(
        call, 491, "Request Pending", MAX_REINVITE_ATTEMPTS
    )
    assert_nothing_more_and_the_call_up(h, call)
    assert call.caller.reoffer is None
    assert kinds(h) == []
