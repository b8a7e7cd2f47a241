"""The bridge's own re-INVITEs, in the B2BUA core with raw SIP and a fake clock: a 491 retry
that finds the session changed meanwhile (RFC 3261 §14.1), and a cancelled codec change whose
2xx crossed the CANCEL (§9.1)."""

from __future__ import annotations

import pytest
from test_b2bua import (
    CALLEE,
    CALLER,
    SDP,
    Harness,
    establish,
    reinvite_from_callee,
    request_in_dialog,
)
from test_races import (
    HOLD_ANSWER,
    answer_from_caller,
    cancel_from_callee,
    hold_cancelled_as_the_caller_accepts,
    origin_version,
    requests,
    resume_cancelled_as_the_caller_accepts,
    statuses,
)

from bridge.sip.message import Request, Response

AGENT_INVITE_CSEQ = 5


class Recording(Harness):
    """Keeps what went out, for the agent's INVITE the helpers do not return."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[tuple[str, int], Request | Response]] = []

    def sent(self) -> list[tuple[tuple[str, int], Request | Response]]:
        out = super().sent()
        self.log += out
        return out


def invites_to_caller_over(h: Harness, seconds: float) -> list[Request]:
    sent: list[Request] = []
    for _ in range(round(seconds * 10)):
        h.advance(0.1)
        sent += [m for m in h.sent_to(CALLER) if isinstance(m, Request) and m.method == "INVITE"]
    return sent


def agent_offers(h: Recording, direction: bytes) -> None:
    """The agent's phone sends a re-INVITE of its own, which the caller's phone accepts."""
    inv = next(m for d, m in h.log if d == CALLEE and isinstance(m, Request))
    h.feed(reinvite_from_callee(inv, AGENT_INVITE_CSEQ, direction), CALLEE)
    mirrored = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    assert mirrored.method == "INVITE"
    answer_sdp = HOLD_ANSWER if direction == b"a=sendonly" else SDP
    h.feed(answer_from_caller(mirrored, 200, answer_sdp), CALLER)
    assert statuses(h.sent_to(CALLEE)) == [200]


def test_a_queued_rehold_is_dropped_once_the_agent_resumed_the_caller_itself() -> None:
    """The bridge's hold put back meets 491 and waits out its §14.1 delay; meanwhile the
    agent's phone resumes the caller with a re-INVITE of its own, which the caller's phone
    accepts. That is the session both now want: the retry must not hold the caller again."""
    h = Recording()
    _mirrored, rehold = resume_cancelled_as_the_caller_accepts(h)
    call = next(iter(h.core.calls.values()))
    h.feed(answer_from_caller(rehold, 491), CALLER)
    assert requests(h.sent_to(CALLER)) == ["ACK"]
    agent_offers(h, b"a=sendrecv")
    assert invites_to_caller_over(h, 4.5) == []
    assert not call.caller.held
    assert call.caller.media.port not in h.media.held
    assert not h.core._reinvites
    assert h.core.next_deadline() is None or not h.core._reinvite_retries


def test_a_queued_resume_is_dropped_once_the_agent_held_the_caller_again() -> None:
    """The bridge's resume undoing a cancelled hold meets 491; meanwhile the agent's phone
    holds the caller again, and the caller's phone accepts. The stale resume must not take the
    caller off the hold the agent just asked for."""
    h = Recording()
    call, _ok, _mirrored = hold_cancelled_as_the_caller_accepts(h)
    resume = [m for m in h.sent_to(CALLER) if isinstance(m, Request)][-1]
    assert b"a=sendrecv" in resume.body
    h.feed(answer_from_caller(resume, 491), CALLER)
    assert requests(h.sent_to(CALLER)) == ["ACK"]
    agent_offers(h, b"a=sendonly")
    assert invites_to_caller_over(h, 4.5) == []
    assert call.caller.held
    assert call.caller.media.port in h.media.held
    assert not h.core._reinvites


def test_a_queued_rehold_still_goes_when_nothing_changed_meanwhile() -> None:
    """Control for the two above: with nothing changed meanwhile the retry still goes, and
    holds the caller."""
    h = Harness()
    _mirrored, rehold = resume_cancelled_as_the_caller_accepts(h)
    call = next(iter(h.core.calls.values()))
    h.feed(answer_from_caller(rehold, 491), CALLER)
    h.sent()
    retried = invites_to_caller_over(h, 2.1)
    assert len({m.top_via.branch for m in retried}) == 1
    assert b"a=sendonly" in retried[0].body
    assert call.caller.held


def test_a_queued_resume_for_a_call_that_ended_sends_nothing() -> None:
    """The caller hangs up while the bridge's resume waits out its delay: nothing goes to a
    dialog that is over."""
    h = Harness()
    call, ok, _mirrored = hold_cancelled_as_the_caller_accepts(h)
    resume = [m for m in h.sent_to(CALLER) if isinstance(m, Request)][-1]
    h.feed(answer_from_caller(resume, 491), CALLER)
    h.feed(request_in_dialog("BYE", ok, 9, "z9hG4bKcbye9"), CALLER)
    h.sent()
    assert invites_to_caller_over(h, 4.5) == []
    assert not call.caller.live


# -- a cancelled codec change whose 2xx crossed the CANCEL (RFC 3261 §9.1, §14.1) -------------

CODEC_CHANGE = (b"m=audio 6000 RTP/AVP 8 0 101", b"m=audio 6002 RTP/AVP 0 8 101")
"""The agent's phone prefers PCMU and moves its media port: a re-INVITE that only changes
codec and media address (same length, so Content-Length holds)."""


def codec_change_cancelled_as_the_caller_accepts(
    h: Harness,
) -> tuple[bytes, Request, list[Request]]:
    """What the bridge last sent the caller before the change, the mirrored change, and what
    the bridge sent the caller after its 200 OK crossed the agent's CANCEL."""
    inv, _ok = establish(h)
    h.sent()
    call = next(iter(h.core.calls.values()))
    before = call.caller.last_sdp
    h.feed(reinvite_from_callee(inv, 2, b"a=sendrecv").replace(*CODEC_CHANGE), CALLEE)
    mirrored = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    assert b"RTP/AVP 0 8 101" in mirrored.body
    h.feed(answer_from_caller(mirrored, 100), CALLER)
    h.feed(cancel_from_callee(inv, 2), CALLEE)
    assert sorted(statuses(h.sent_to(CALLEE))) == [200, 487]
    h.feed(answer_from_caller(mirrored, 200, SDP.replace(b"8 0 101", b"0 101")), CALLER)
    return before, mirrored, [m for m in h.sent_to(CALLER) if isinstance(m, Request)]


def test_a_cancelled_codec_change_that_took_effect_anyway_is_put_back() -> None:
    """The agent's phone was told 487, so by §14.1 its session is the one before the change,
    while the caller's phone accepted it. The bridge ACKs the 2xx and re-offers the caller the
    session description in force before (RFC 3264 §8), one o= version up, so both sides agree
    on the media again."""
    h = Harness()
    before, mirrored, sent = codec_change_cancelled_as_the_caller_accepts(h)
    assert [m.method for m in sent] == ["ACK", "INVITE"]
    restore = sent[1]
    assert restore.cseq.seq > mirrored.cseq.seq
    assert restore.call_id == mirrored.call_id
    assert b"RTP/AVP 8 0 101" in restore.body
    assert b"a=sendrecv" in restore.body
    assert origin_version(restore.body) == origin_version(mirrored.body) + 1
    assert restore.body.split(b"s=-", 1)[1] == before.split(b"s=-", 1)[1]
    call = next(iter(h.core.calls.values()))
    h.feed(answer_from_caller(restore, 200, SDP), CALLER)
    assert requests(h.sent_to(CALLER)) == ["ACK"]
    assert call.caller.media.remote == ("127.0.0.1", 6000, 8)
    assert not call.caller.held
    assert not h.core._reinvites
    assert h.sent_to(CALLEE) == []


def test_a_refused_codec_put_back_on_a_held_caller_keeps_the_hold_tone() -> None:
    """The put-back is refused: the caller's session stays as it is (§14.1), and a caller
    on hold keeps hearing the hold tone."""
    h = Harness()
    inv, _ok = establish(h)
    h.sent()
    call = next(iter(h.core.calls.values()))
    h.feed(reinvite_from_callee(inv, 2, b"a=sendonly"), CALLEE)
    hold = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    h.feed(answer_from_caller(hold, 200, HOLD_ANSWER), CALLER)
    h.sent()
    change = reinvite_from_callee(inv, 3, b"a=sendonly").replace(*CODEC_CHANGE)
    h.feed(change, CALLEE)
    mirrored = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    h.feed(answer_from_caller(mirrored, 100), CALLER)
    h.feed(cancel_from_callee(inv, 3), CALLEE)
    h.sent()
    h.feed(answer_from_caller(mirrored, 200, HOLD_ANSWER), CALLER)
    sent = [m for m in h.sent_to(CALLER) if isinstance(m, Request)]
    assert [m.method for m in sent] == ["ACK", "INVITE"]
    assert b"a=sendonly" in sent[1].body
    assert b"RTP/AVP 8 0 101" in sent[1].body
    h.feed(answer_from_caller(sent[1], 488), CALLER)
    assert requests(h.sent_to(CALLER)) == ["ACK"]
    assert call.caller.held
    assert call.caller.media.port in h.media.held
    assert not h.core._reinvites


def test_a_queued_rehold_survives_the_agents_session_refresh_without_an_offer() -> None:
    """An UPDATE without SDP from the agent's phone (a session refresh, RFC 3311 §5.1) changes
    no session: the hold put back that waits out its 491 delay still goes."""
    h = Recording()
    _mirrored, rehold = resume_cancelled_as_the_caller_accepts(h)
    call = next(iter(h.core.calls.values()))
    h.feed(answer_from_caller(rehold, 491), CALLER)
    h.sent()
    inv = next(m for d, m in h.log if d == CALLEE and isinstance(m, Request))
    head = reinvite_from_callee(inv, AGENT_INVITE_CSEQ, b"a=sendrecv").split(b"Content-Type")[0]
    update = head.replace(b"INVITE sip:", b"UPDATE sip:").replace(b" INVITE\r\n", b" UPDATE\r\n")
    h.feed(update + b"Content-Length: 0\r\n\r\n", CALLEE)
    mirrored = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    assert (mirrored.method, mirrored.body) == ("UPDATE", b"")
    h.feed(answer_from_caller(mirrored, 200), CALLER)
    assert statuses(h.sent_to(CALLEE)) == [200]
    retried = invites_to_caller_over(h, 2.1)
    assert len({m.top_via.branch for m in retried}) == 1
    assert b"a=sendonly" in retried[0].body
    assert call.caller.held


# -- a mirrored offer that fails leaves the offering party's media as it was (§14.1) ----------

MOVE = (b"m=audio 6000 ", b"m=audio 6002 ")
"""The agent's phone moves its media port, and nothing else."""

BEFORE = ("127.0.0.1", 6000, 8)
"""Where the agent's audio goes once the call is up: its answer's address, PCMA."""


def agent_offers_a_change(h: Harness, change: tuple[bytes, bytes]) -> tuple[Request, Request]:
    """The agent's re-INVITE changing its media, and the one mirrored to the caller, which has
    drawn a 100 Trying; the agent's audio already goes where the offer says."""
    inv, _ok = establish(h)
    h.sent()
    call = next(iter(h.core.calls.values()))
    assert call.legs["b1"].media.remote == BEFORE
    h.feed(reinvite_from_callee(inv, 2, b"a=sendrecv").replace(*change), CALLEE)
    mirrored = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    assert call.legs["b1"].media.remote[1] == 6002
    h.feed(answer_from_caller(mirrored, 100), CALLER)
    return inv, mirrored


@pytest.mark.parametrize("status", [488, 491, 603])
@pytest.mark.parametrize("change", [MOVE, CODEC_CHANGE], ids=["move", "codec"])
def test_a_refused_media_change_points_the_offerers_audio_back(
    status: int, change: tuple[bytes, bytes]
) -> None:
    """The caller's phone refuses the agent's move or codec change (491 too: the agent's phone
    retries later, and meanwhile the old session holds). The agent is told so and keeps its
    session as it was (§14.1), so its audio goes back to the old port, at the old codec."""
    h = Harness()
    _inv, mirrored = agent_offers_a_change(h, change)
    h.feed(answer_from_caller(mirrored, status), CALLER)
    assert statuses(h.sent_to(CALLEE)) == [status]
    call = next(iter(h.core.calls.values()))
    assert call.legs["b1"].media.remote == BEFORE
    assert not h.core._reinvites


@pytest.mark.parametrize("change", [MOVE, CODEC_CHANGE], ids=["move", "codec"])
def test_a_cancelled_media_change_points_the_offerers_audio_back(
    change: tuple[bytes, bytes],
) -> None:
    """The agent's phone cancels its move: told 487 (§9.2), it keeps the old session, so its
    audio goes back at once, and stays there when the caller's 487 comes."""
    h = Harness()
    inv, mirrored = agent_offers_a_change(h, change)
    h.feed(cancel_from_callee(inv, 2), CALLEE)
    out = h.sent()
    assert sorted(statuses([m for d, m in out if d == CALLEE])) == [200, 487]
    assert requests([m for d, m in out if d == CALLER]) == ["CANCEL"]
    call = next(iter(h.core.calls.values()))
    assert call.legs["b1"].media.remote == BEFORE
    h.feed(answer_from_caller(mirrored, 487), CALLER)
    assert call.legs["b1"].media.remote == BEFORE
    assert h.sent_to(CALLEE) == []


def test_an_accepted_media_move_moves_the_offerers_audio() -> None:
    """Control: the caller's phone accepts the move, and the agent's audio goes to the new
    port, at the codec the answer settled on."""
    h = Harness()
    _inv, mirrored = agent_offers_a_change(h, MOVE)
    h.feed(answer_from_caller(mirrored, 200, SDP), CALLER)
    assert statuses(h.sent_to(CALLEE)) == [200]
    call = next(iter(h.core.calls.values()))
    assert call.legs["b1"].media.remote == ("127.0.0.1", 6002, 8)


def test_a_cancelled_codec_change_whose_2xx_crossed_keeps_the_offerers_old_codec() -> None:
    """The caller's 2xx crossed the agent's CANCEL: the caller is put back by the bridge's
    re-offer, and the agent, told 487, keeps hearing its old codec at its old port."""
    h = Harness()
    codec_change_cancelled_as_the_caller_accepts(h)
    call = next(iter(h.core.calls.values()))
    assert call.legs["b1"].media.remote == BEFORE
