"""A party's telephone-event payload type follows its session, in the B2BUA core with raw SIP
and a fake clock: a new offer may number RFC 4733 events afresh or drop them (RFC 3264 §8.3.2),
and the media layer is told with every point, so DTMF keeps being recognised and sent as the
party now expects (RFC 4733 §2.5.1.1)."""

from __future__ import annotations

import re

import pytest
from test_b2bua import CALLEE, CALLER, SDP, Harness, establish, reinvite_from_callee
from test_races import answer_from_caller, statuses

from bridge.calls.call import Call
from bridge.sip.message import Request

RENUMBERED = SDP.replace(b" 101\r\n", b" 96\r\n").replace(b":101 ", b":96 ")
"""The same session with telephone-event as payload type 96 instead of 101."""
WITHOUT_EVENTS = SDP.replace(b" 101\r\n", b"\r\n").replace(
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n", b""
)


def with_body(message: bytes, body: bytes) -> bytes:
    head = message.split(b"\r\n\r\n", 1)[0]
    head = re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % len(body), head)
    return head + b"\r\n\r\n" + body


def agent_reoffers(h: Harness, body: bytes) -> tuple[Call, Request]:
    """The agent's phone re-INVITEs with ``body``; returns the call and the mirrored offer."""
    inv, _ok = establish(h)
    h.sent()
    call = next(iter(h.core.calls.values()))
    agent = call.legs["b1"].media
    assert (agent.remote, agent.telephone_event_pt) == (("127.0.0.1", 6000, 8), 101)
    assert call.caller.media.telephone_event_pt == 101
    h.feed(with_body(reinvite_from_callee(inv, 2, b"a=sendrecv"), body), CALLEE)
    mirrored = next(m for m in h.sent_to(CALLER) if isinstance(m, Request))
    assert mirrored.method == "INVITE"
    return call, mirrored


def test_test_bodies_differ_only_in_the_event_type() -> None:
    assert b"a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-16" in RENUMBERED
    assert b"m=audio 6000 RTP/AVP 8 0 96\r\n" in RENUMBERED
    assert b"telephone-event" not in WITHOUT_EVENTS
    assert b"m=audio 6000 RTP/AVP 8 0\r\n" in WITHOUT_EVENTS


def test_a_re_invite_renumbering_telephone_event_re_points_with_the_new_type() -> None:
    """The agent's phone now numbers events 96: its media is pointed with 96 as soon as it
    offers (an offerer receives on its new session at once, RFC 3264 §8.3.1), and stays so
    once the caller's phone accepts; the caller's leg follows the caller's answer."""
    h = Harness()
    call, mirrored = agent_reoffers(h, RENUMBERED)
    agent = call.legs["b1"].media
    assert agent.telephone_event_pt == 96
    h.feed(answer_from_caller(mirrored, 200, RENUMBERED), CALLER)
    assert statuses(h.sent_to(CALLEE)) == [200]
    assert (agent.remote, agent.telephone_event_pt) == (("127.0.0.1", 6000, 8), 96)
    assert call.caller.media.telephone_event_pt == 96


@pytest.mark.parametrize("status", [488, 491])
def test_a_refused_renumbering_points_the_old_event_type_back(status: int) -> None:
    """The caller's phone refuses the offer: the agent keeps the session in force before
    (RFC 3261 §14.1), events numbered 101 included."""
    h = Harness()
    call, mirrored = agent_reoffers(h, RENUMBERED)
    h.feed(answer_from_caller(mirrored, status), CALLER)
    assert statuses(h.sent_to(CALLEE)) == [status]
    assert call.legs["b1"].media.telephone_event_pt == 101


def test_a_re_invite_without_telephone_event_leaves_the_leg_without_events() -> None:
    """An offer that no longer names telephone-event takes events out of the session: the
    relay must not send the phone events it no longer expects."""
    h = Harness()
    call, mirrored = agent_reoffers(h, WITHOUT_EVENTS)
    h.feed(answer_from_caller(mirrored, 200, WITHOUT_EVENTS), CALLER)
    assert statuses(h.sent_to(CALLEE)) == [200]
    assert call.legs["b1"].media.telephone_event_pt is None
    assert call.caller.media.telephone_event_pt is None


def test_an_answer_dropping_telephone_event_settles_the_offerer_without_events() -> None:
    """The agent's phone offers events as 96, the caller's phone answers without them: events
    are not in the agent's session (RFC 3264 §6.1: the answer settles it)."""
    h = Harness()
    call, mirrored = agent_reoffers(h, RENUMBERED)
    assert call.legs["b1"].media.telephone_event_pt == 96
    h.feed(answer_from_caller(mirrored, 200, WITHOUT_EVENTS), CALLER)
    assert call.legs["b1"].media.telephone_event_pt is None
