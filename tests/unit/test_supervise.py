"""Supervisor listen / whisper / barge in the B2BUA core, with raw SIP and a fake clock."""

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
    request_in_dialog,
)
from test_transfer import TARGET, bye_from_callee, dest, pass_over

from bridge.calls.call import Call, CallState, LegState
from bridge.calls.ports import Destination
from bridge.calls.supervise import SuperviseMode
from bridge.sip.errors import LocalProtocolError
from bridge.sip.message import Request, Response
from bridge.sip.sdp import SessionDescription
from bridge.sip.uri import SipUri

SUPERVISOR = ("127.0.0.1", 5095)
DESK_PHONE = ("127.0.0.1", 5096)
TICKET = (("X-Ticket-Id", "T7"), ("Call-Info", "<http://bridge.test/t/T7>;purpose=ticket"))
SUPERVISE_KINDS = {
    "supervise_requested",
    "supervise_failover",
    "supervisor_joined",
    "supervise_mode_changed",
    "supervisor_left",
    "supervise_failed",
}


def supervisor_dest(ring: float = 20.0, address: tuple[str, int] = SUPERVISOR) -> Destination:
    return Destination(
        uri=SipUri(user="9001", host=address[0], port=address[1]),
        address=address,
        transport="UDP",
        peer="seat-9001",
        ring_timeout=ring,
    )


def the_call(h: Harness) -> Call:
    return next(iter(h.core.calls.values()))


def supervise(h: Harness, mode: SuperviseMode = "listen", ring: float = 20.0) -> Request:
    """Ask for the supervisor on the harness's answered call; the INVITE it sent."""
    h.sent()
    h.core.supervision.start(
        the_call(h).call_id,
        "seat-9001",
        mode,
        [supervisor_dest(ring)],
        h.now,
        actor="sue",
        headers=TICKET,
    )
    return next(m for m in h.sent_to(SUPERVISOR) if isinstance(m, Request))


def join(h: Harness, mode: SuperviseMode = "listen") -> Request:
    inv = supervise(h, mode)
    h.feed(answer(inv, 200, tag="sup1", sdp=SDP, contact="sip:sup@127.0.0.1:5095"), SUPERVISOR)
    return inv


def bye_from_supervisor(inv: Request, tag: str = "sup1", port: int = SUPERVISOR[1]) -> bytes:
    return (
        "BYE sip:bridge@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKbye{tag}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {inv.headers.get('To')};tag={tag}\r\n"
        f"To: {inv.headers.get('From')}\r\n"
        f"Call-ID: {inv.call_id}\r\n"
        "CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def supervise_events(h: Harness) -> list[tuple[str, dict[str, object]]]:
    return [(e.kind, e.data) for e in the_call(h).history if e.kind in SUPERVISE_KINDS]


def ports(h: Harness) -> tuple[int, int, int]:
    call = the_call(h)
    return call.caller.media.port, call.legs["b1"].media.port, call.legs["s1"].media.port


def test_supervisor_is_rung_with_the_ticket_while_the_call_goes_on() -> None:
    h = Harness()
    establish(h)
    inv = supervise(h)
    assert inv.method == "INVITE"
    assert inv.headers.get("X-Ticket-Id") == "T7"
    assert inv.headers.get("Call-Info") == "<http://bridge.test/t/T7>;purpose=ticket"
    assert b"m=audio" in inv.body
    assert not h.sent(), "nothing reaches caller or agent while the supervisor rings"
    assert h.media.conferences == []
    assert the_call(h).legs["s1"].role == "supervisor"
    assert h.media.near[the_call(h).legs["s1"].media.port] == the_call(h).caller.media.port
    (kind, data), *_ = supervise_events(h)
    assert kind == "supervise_requested"
    assert (data["actor"], data["mode"], data["supervisor"]) == ("sue", "listen", "seat-9001")


def test_without_ticket_headers_the_incoming_ticket_id_is_passed_on() -> None:
    h = Harness()
    h.feed(
        invite().replace(b"CSeq: 1 INVITE\r\n", b"CSeq: 1 INVITE\r\nX-Ticket-Id: T9\r\n"), CALLER
    )
    inv = next(m for m in h.sent_to(CALLEE) if isinstance(m, Request))
    h.feed(answer(inv, 200, sdp=SDP), CALLEE)
    h.sent()
    call_id = the_call(h).call_id
    h.core.supervision.start(call_id, "seat-9001", "listen", [supervisor_dest()], h.now, actor="a")
    sup = next(m for m in h.sent_to(SUPERVISOR) if isinstance(m, Request))
    assert sup.headers.get("X-Ticket-Id") == "T9"


@pytest.mark.parametrize(
    ("mode", "mix", "whispers_to_agent"),
    [("listen", "listen", False), ("whisper", "whisper", True), ("barge", "full", False)],
)
def test_answer_puts_all_three_in_a_conference_with_the_supervisors_mode(
    mode: SuperviseMode, mix: str, whispers_to_agent: bool
) -> None:
    h = Harness()
    establish(h)
    join(h, mode)
    sent = h.sent()
    assert any(isinstance(m, Request) and m.method == "ACK" for d, m in sent if d == SUPERVISOR)
    assert not [m for d, m in sent if d in (CALLER, CALLEE)], "no SIP to the parties"
    caller, agent, supervisor = ports(h)
    assert h.media.conferences[-1] == [caller, agent, supervisor]
    assert h.media.modes[supervisor] == (mix, agent if whispers_to_agent else None)
    assert [k for k, _ in supervise_events(h)] == ["supervise_requested", "supervisor_joined"]
    supervision = h.core.supervision.find(the_call(h).call_id, "seat-9001")
    assert supervision is not None
    assert supervision.summary()["state"] == "joined"


def test_second_request_changes_the_mode_of_the_same_leg() -> None:
    h = Harness()
    establish(h)
    join(h, "listen")
    h.sent()
    call_id = the_call(h).call_id
    conferences = len(h.media.conferences)
    h.core.supervision.change_mode(call_id, "seat-9001", "whisper", h.now, actor="sue")
    _, agent, supervisor = ports(h)
    assert h.media.modes[supervisor] == ("whisper", agent)
    h.core.supervision.change_mode(call_id, "seat-9001", "barge", h.now, actor="boss")
    assert h.media.modes[supervisor] == ("full", None)
    assert not h.sent(), "no second phone call"
    assert len(h.media.conferences) == conferences
    changes = [d for k, d in supervise_events(h) if k == "supervise_mode_changed"]
    assert [(d["previous"], d["mode"], d["actor"]) for d in changes] == [
        ("listen", "whisper", "sue"),
        ("whisper", "barge", "boss"),
    ]


def test_asking_again_while_the_supervisor_rings_changes_the_mode_it_joins_in() -> None:
    h = Harness()
    establish(h)
    inv = supervise(h)
    h.feed(answer(inv, 180, tag="sup1"), SUPERVISOR)
    call_id = the_call(h).call_id
    h.core.supervision.change_mode(call_id, "seat-9001", "barge", h.now, actor="sue")
    with pytest.raises(LocalProtocolError, match="already supervising"):
        h.core.supervision.start(
            call_id, "seat-9001", "barge", [supervisor_dest()], h.now, actor="sue"
        )
    assert not h.sent_to(SUPERVISOR), "no second INVITE"
    assert h.media.modes == {}, "no media touched while it rings"
    h.feed(answer(inv, 200, tag="sup1", sdp=SDP, contact="sip:sup@127.0.0.1:5095"), SUPERVISOR)
    _, _, supervisor = ports(h)
    assert h.media.modes[supervisor] == ("full", None)
    kinds = [(k, d["mode"]) for k, d in supervise_events(h)]
    assert kinds == [
        ("supervise_requested", "listen"),
        ("supervise_mode_changed", "barge"),
        ("supervisor_joined", "barge"),
    ]


def test_a_mode_change_for_someone_not_supervising_is_refused() -> None:
    h = Harness()
    establish(h)
    join(h)
    with pytest.raises(LocalProtocolError, match="seat-9002 is not supervising"):
        h.core.supervision.change_mode(the_call(h).call_id, "seat-9002", "barge", h.now, actor="x")


def test_an_unanswered_call_cannot_be_supervised() -> None:
    h = Harness()
    h.feed(invite(), CALLER)
    with pytest.raises(LocalProtocolError, match="answered"):
        h.core.supervision.start(
            the_call(h).call_id, "seat-9001", "listen", [supervisor_dest()], h.now, actor="sue"
        )
    with pytest.raises(LookupError):
        h.core.supervision.start(
            "nope", "seat-9001", "listen", [supervisor_dest()], h.now, actor=""
        )


def test_supervisor_hanging_up_gives_the_parties_back_their_plain_relay() -> None:
    h = Harness()
    establish(h)
    inv = join(h, "barge")
    h.sent()
    caller, agent, supervisor = ports(h)
    h.feed(bye_from_supervisor(inv), SUPERVISOR)
    sent = h.sent()
    assert [m.status for d, m in sent if d == SUPERVISOR and isinstance(m, Response)] == [200]
    assert not [m for d, m in sent if d in (CALLER, CALLEE)], "the call goes on untouched"
    assert h.media.connected[-1] == (caller, agent)
    assert supervisor not in h.media.live
    call = the_call(h)
    assert call.state is CallState.ANSWERED
    assert call.caller.state is LegState.CONFIRMED
    kind, data = supervise_events(h)[-1]
    assert (kind, data["actor"]) == ("supervisor_left", "seat-9001")
    assert call.call_id not in h.core.supervision.by_call


@pytest.mark.parametrize("who_hangs_up", ["caller", "agent"])
def test_call_ending_hangs_up_the_supervisor_too(who_hangs_up: str) -> None:
    h = Harness()
    callee_inv, ok = establish(h)
    join(h)
    h.sent()
    if who_hangs_up == "caller":
        h.feed(request_in_dialog("BYE", ok, 2, "z9hG4bKcbye"), CALLER)
    else:
        h.feed(bye_from_callee(callee_inv), CALLEE)
    sent = h.sent()
    byes = {d for d, m in sent if isinstance(m, Request) and m.method == "BYE"}
    other = CALLEE if who_hangs_up == "caller" else CALLER
    assert byes == {SUPERVISOR, other}, "nobody is left alone with the supervisor"
    kind, data = supervise_events(h)[-1]
    assert (kind, data["reason"], data["actor"]) == ("supervisor_left", "call ended", "bridge")
    for dest_, message in sent:
        if isinstance(message, Request) and message.method == "BYE":
            h.feed(answer(message, 200, tag=message.to.tag or ""), dest_)
    assert h.core.calls == {}
    assert h.media.live == set()
    assert not h.core._by_client
    assert not h.core._by_dialog
    assert h.core.supervision.by_call == {}


@pytest.mark.parametrize("status", [486, 603, 503])
def test_busy_or_rejecting_supervisor_leaves_the_call_untouched(status: int) -> None:
    h = Harness()
    establish(h)
    connected = list(h.media.connected)
    inv = supervise(h)
    h.feed(answer(inv, status, tag="sup1"), SUPERVISOR)
    sent = h.sent()
    assert not [m for d, m in sent if d in (CALLER, CALLEE)]
    assert h.media.connected == connected
    assert h.media.conferences == []
    call = the_call(h)
    assert call.caller.live
    assert call.legs["b1"].live
    assert call.legs["s1"].state is LegState.TERMINATED
    assert call.legs["s1"].media.port == 0, "its ports went back to the pool"
    kind, data = supervise_events(h)[-1]
    assert (kind, data["status"]) == ("supervise_failed", status)
    assert call.call_id not in h.core.supervision.by_call
    supervise(h)  # asking again is fine, on a new leg
    assert "s2" in call.legs


def test_unanswered_supervisor_is_cancelled_after_the_ring_timeout() -> None:
    """RFC 3261 §9.1: a supervisor's phone that has sent nothing yet gets its CANCEL with its
    first provisional response; the supervision has failed at the timeout all the same."""
    h = Harness()
    establish(h)
    inv = supervise(h, ring=5.0)
    h.advance(5.5)
    sent = h.sent()
    methods = [m.method for d, m in sent if d == SUPERVISOR and isinstance(m, Request)]
    assert set(methods) == {"INVITE"}, "the INVITE's retransmissions, no CANCEL yet"
    assert not [m for d, m in sent if d in (CALLER, CALLEE)]
    kind, data = supervise_events(h)[-1]
    assert (kind, data["status"]) == ("supervise_failed", 480)
    assert the_call(h).caller.live
    h.feed(answer(inv, 180, tag="sup1"), SUPERVISOR)
    assert [m.method for m in h.sent_to(SUPERVISOR) if isinstance(m, Request)] == ["CANCEL"]
    h.feed(answer(inv, 487, tag="sup1"), SUPERVISOR)
    assert the_call(h).legs["s1"].state is LegState.TERMINATED
    assert not [m for d, m in h.sent() if d in (CALLER, CALLEE)]


@pytest.mark.parametrize("timeout", [False, True], ids=["busy", "ring_timeout"])
def test_a_supervisor_phone_passed_over_is_noted_with_why_and_the_next_one_rings(
    timeout: bool,
) -> None:
    """Moving on to the supervisor's next destination is a ``supervise_failover`` event
    (history, audit log, live events) naming the leg given up on and why."""
    h = Harness()
    establish(h)
    h.sent()
    destinations = [supervisor_dest(ring=5.0), supervisor_dest(address=DESK_PHONE)]
    call = the_call(h)
    h.core.supervision.start(call.call_id, "seat-9001", "listen", destinations, h.now, actor="a")
    first = next(m for m in h.sent_to(SUPERVISOR) if isinstance(m, Request))
    status, reason = pass_over(h, first, SUPERVISOR, "sup1", timeout=timeout)
    assert [m.method for m in h.sent_to(DESK_PHONE) if isinstance(m, Request)] == ["INVITE"]
    supervision = h.core.supervision.find(call.call_id, "seat-9001")
    assert supervision is not None
    assert supervision.leg_id == "s2"
    kind, data = supervise_events(h)[-1]
    assert kind == "supervise_failover"
    assert (data["leg"], data["status"], data["reason"]) == ("s1", status, reason)
    assert data["actor"] == "bridge"


def test_call_ending_while_the_supervisor_rings_cancels_it() -> None:
    h = Harness()
    _inv, ok = establish(h)
    inv = supervise(h)
    h.feed(answer(inv, 100, tag=""), SUPERVISOR)
    h.feed(request_in_dialog("BYE", ok, 2, "z9hG4bKcbye"), CALLER)
    sent = h.sent()
    assert [m.method for d, m in sent if d == SUPERVISOR and isinstance(m, Request)] == ["CANCEL"]
    kind, data = supervise_events(h)[-1]
    assert (kind, data["reason"]) == ("supervise_failed", "call ended")


def test_a_late_answer_after_the_call_ended_is_hung_up() -> None:
    h = Harness()
    _inv, ok = establish(h)
    inv = supervise(h)
    h.feed(request_in_dialog("BYE", ok, 2, "z9hG4bKcbye"), CALLER)
    h.sent()
    h.feed(answer(inv, 200, tag="sup1", sdp=SDP, contact="sip:sup@127.0.0.1:5095"), SUPERVISOR)
    methods = [m.method for m in h.sent_to(SUPERVISOR) if isinstance(m, Request)]
    assert methods == ["ACK", "BYE"]
    assert not h.media.conferences


def test_after_a_blind_transfer_the_supervisor_hears_the_new_party() -> None:
    h = Harness()
    establish(h)
    join(h, "whisper")
    call = the_call(h)
    h.core.transfers.start(call.call_id, [dest(TARGET)], h.now)
    target_inv = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_inv, 200, tag="t1", sdp=SDP, contact="sip:t@127.0.0.1:5090"), TARGET)
    caller, target, supervisor = (
        call.caller.media.port,
        call.legs["t1"].media.port,
        call.legs["s1"].media.port,
    )
    assert h.media.conferences[-1] == [caller, target, supervisor]
    assert h.media.modes[supervisor] == ("whisper", target), "coaching the one now talking"


def test_supervisor_reinvite_is_answered_by_the_bridge_not_mirrored() -> None:
    h = Harness()
    establish(h)
    inv = join(h)
    h.sent()
    reinvite = (
        "INVITE sip:bridge@127.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5095;branch=z9hG4bKsupre\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {inv.headers.get('To')};tag=sup1\r\n"
        f"To: {inv.headers.get('From')}\r\n"
        f"Call-ID: {inv.call_id}\r\n"
        "CSeq: 2 INVITE\r\nContact: <sip:sup@127.0.0.1:5095>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n"
    ).encode() + SDP
    h.feed(reinvite, SUPERVISOR)
    sent = h.sent()
    ok = [m for d, m in sent if d == SUPERVISOR and isinstance(m, Response) and m.status == 200]
    assert ok
    assert b"m=audio" in ok[0].body
    assert not [m for d, m in sent if d in (CALLER, CALLEE)]


def test_supervisor_phone_on_hold_is_answered_recvonly_in_the_same_session() -> None:
    h = Harness()
    establish(h)
    inv = join(h)
    h.sent()
    hold_sdp = SDP.replace(b"a=sendrecv", b"a=sendonly")
    reinvite = (
        "INVITE sip:bridge@127.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5095;branch=z9hG4bKsuphold\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {inv.headers.get('To')};tag=sup1\r\n"
        f"To: {inv.headers.get('From')}\r\n"
        f"Call-ID: {inv.call_id}\r\n"
        "CSeq: 2 INVITE\r\nContact: <sip:sup@127.0.0.1:5095>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(hold_sdp)}\r\n\r\n"
    ).encode() + hold_sdp
    h.feed(reinvite, SUPERVISOR)
    ok = next(
        m for d, m in h.sent() if d == SUPERVISOR and isinstance(m, Response) and m.status == 200
    )
    answer = SessionDescription.parse(ok.body)
    offered = SessionDescription.parse(inv.body)
    assert b"a=recvonly" in ok.body
    assert answer.origin.session_id == offered.origin.session_id
    assert answer.origin.session_version == offered.origin.session_version + 1


def test_supervisor_digits_are_no_transfer_key() -> None:
    h = Harness()
    establish(h)
    join(h)
    supervisor_media = the_call(h).legs["s1"].media
    h.core.on_digit(supervisor_media, "*", h.now)
    h.core.on_digit(supervisor_media, "1", h.now)
    assert h.core.take_transfer_requests() == []


def test_supervisor_answering_during_a_consultation_joins_when_it_ends() -> None:
    h = Harness()
    callee_inv, _ok = establish(h)
    sup_inv = supervise(h, "whisper")
    call = the_call(h)
    h.core.transfers.start(call.call_id, [dest(TARGET)], h.now, mode="attended")
    target_inv = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_inv, 200, tag="t1", sdp=SDP, contact="sip:t@127.0.0.1:5090"), TARGET)
    assert call.caller.media.port in h.media.held
    h.feed(answer(sup_inv, 200, tag="sup1", sdp=SDP, contact="sip:sup@127.0.0.1:5095"), SUPERVISOR)
    assert h.media.conferences == [], "the consultation is left alone"
    h.core.supervision.change_mode(call.call_id, "seat-9001", "listen", h.now, actor="sue")
    assert h.media.modes == {}
    h.feed(bye_from_callee(callee_inv), CALLEE)  # the agent hangs up: the transfer completes
    caller, target, supervisor = (
        call.caller.media.port,
        call.legs["t1"].media.port,
        call.legs["s1"].media.port,
    )
    assert h.media.conferences[-1] == [caller, target, supervisor]
    assert h.media.modes[supervisor] == ("listen", None)


def test_a_supervisor_answering_without_sdp_is_hung_up_and_the_call_goes_on() -> None:
    """RFC 3264 §4 / RFC 3261 §13.2.1: a supervisor's 200 without the answer to the bridge's
    offer could hear no one. It is ACKed and hung up, the supervision fails as for a busy
    supervisor, with its reason, and the parties are left exactly as they were."""
    h = Harness()
    establish(h)
    connected = list(h.media.connected)
    inv = supervise(h)
    h.feed(answer(inv, 200, tag="sup1", contact="sip:sup@127.0.0.1:5095"), SUPERVISOR)
    sent = h.sent()
    methods = [m.method for d, m in sent if d == SUPERVISOR and isinstance(m, Request)]
    assert methods == ["ACK", "BYE"]
    assert not [m for d, m in sent if d in (CALLER, CALLEE)]
    assert h.media.connected == connected
    assert h.media.conferences == []
    call = the_call(h)
    assert call.caller.live
    assert call.legs["b1"].live
    assert call.legs["s1"].media.port == 0, "its ports went back to the pool"
    kind, data = supervise_events(h)[-1]
    assert (kind, data["status"]) == ("supervise_failed", 502)
    assert "SDP" in str(data["reason"])
    assert call.call_id not in h.core.supervision.by_call
    bye = [m for d, m in sent if d == SUPERVISOR and isinstance(m, Request)][-1]
    h.feed(answer(bye, 200, tag=""), SUPERVISOR)
    assert call.legs["s1"].state is LegState.TERMINATED
    assert call.caller.live
    supervise(h)  # asking again is fine, on a new leg
    assert "s2" in call.legs
