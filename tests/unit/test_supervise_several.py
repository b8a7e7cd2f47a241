"""Several supervisors on one call, in the B2BUA core, with raw SIP and a fake clock: each its
own leg and mode in the call's one conference, leaving and failing without disturbing the
others, bounded by MAX_SUPERVISORS."""

from __future__ import annotations

import pytest
from test_b2bua import CALLEE, CALLER, SDP, Harness, answer, establish, request_in_dialog
from test_supervise import (
    SUPERVISOR,
    bye_from_supervisor,
    supervise_events,
    supervisor_dest,
    the_call,
)
from test_transfer import TARGET, bye_from_callee, dest

from bridge.calls.call import CallState, LegState
from bridge.calls.supervise import MAX_SUPERVISORS, SuperviseMode
from bridge.sidecar.fakes import FakeCallControl
from bridge.sip.errors import LocalProtocolError
from bridge.sip.message import Request, Response

TRAINER = ("127.0.0.1", 5097)
"""The second supervisor's phone (the first one's is test_supervise.SUPERVISOR)."""


def ring(h: Harness, who: str, address: tuple[str, int], mode: SuperviseMode) -> Request:
    """Ask for ``who`` (rung at ``address``) on the harness's call; the INVITE it sent."""
    h.sent()
    h.core.supervision.start(
        the_call(h).call_id, who, mode, [supervisor_dest(address=address)], h.now, actor="sue"
    )
    return next(m for m in h.sent_to(address) if isinstance(m, Request))


def answer_as(h: Harness, inv: Request, address: tuple[str, int], tag: str) -> None:
    contact = f"sip:sup@{address[0]}:{address[1]}"
    h.feed(answer(inv, 200, tag=tag, sdp=SDP, contact=contact), address)


def two_joined(
    h: Harness, first: SuperviseMode = "listen", second: SuperviseMode = "whisper"
) -> tuple[Request, Request]:
    """seat-9001 (leg s1, at SUPERVISOR) and seat-9002 (leg s2, at TRAINER) both joined."""
    one = ring(h, "seat-9001", SUPERVISOR, first)
    answer_as(h, one, SUPERVISOR, "sup1")
    two = ring(h, "seat-9002", TRAINER, second)
    answer_as(h, two, TRAINER, "sup2")
    h.sent()
    return one, two


def port(h: Harness, leg_id: str) -> int:
    """The media port of leg ``leg_id`` ("caller" for the caller's)."""
    call = the_call(h)
    return int(call.legs[call.caller_leg if leg_id == "caller" else leg_id].media.port)


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("listen", "whisper", {"s1": ("listen", None), "s2": ("whisper", "b1")}),
        ("barge", "listen", {"s1": ("full", None), "s2": ("listen", None)}),
        ("whisper", "barge", {"s1": ("whisper", "b1"), "s2": ("full", None)}),
    ],
)
def test_two_supervisors_share_the_conference_each_in_its_own_mode(
    first: SuperviseMode, second: SuperviseMode, expected: dict[str, tuple[str, str | None]]
) -> None:
    """The media port starts a conference's members at ``full``: each join sets every
    supervisor's mode again, a whisper going to the agent (b1) alone."""
    h = Harness()
    establish(h)
    two_joined(h, first, second)
    assert h.media.conferences[-1] == [port(h, leg) for leg in ("caller", "b1", "s1", "s2")]
    for leg, (mix, target) in expected.items():
        assert h.media.modes[port(h, leg)] == (mix, port(h, target) if target else None)
    events = [(k, d["supervisor"], d.get("leg")) for k, d in supervise_events(h)]
    assert events == [
        ("supervise_requested", "seat-9001", None),
        ("supervisor_joined", "seat-9001", "s1"),
        ("supervise_requested", "seat-9002", None),
        ("supervisor_joined", "seat-9002", "s2"),
    ]
    shown = [s.summary() for s in h.core.supervision.of_call(the_call(h).call_id)]
    assert [(s["supervisor"], s["mode"], s["state"], s["leg"]) for s in shown] == [
        ("seat-9001", first, "joined", "s1"),
        ("seat-9002", second, "joined", "s2"),
    ]


def test_the_second_supervisor_rings_without_touching_the_first_ones_conference() -> None:
    h = Harness()
    establish(h)
    one = ring(h, "seat-9001", SUPERVISOR, "whisper")
    answer_as(h, one, SUPERVISOR, "sup1")
    conferences, modes = list(h.media.conferences), dict(h.media.modes)
    ring(h, "seat-9002", TRAINER, "barge")
    assert (h.media.conferences, h.media.modes) == (conferences, modes)
    assert not [m for d, m in h.sent() if d in (CALLER, CALLEE, SUPERVISOR)]


def test_a_mode_change_of_one_supervisor_leaves_the_other_as_it_was() -> None:
    h = Harness()
    establish(h)
    two_joined(h, "listen", "listen")
    conferences = len(h.media.conferences)
    call_id = the_call(h).call_id
    h.core.supervision.change_mode(call_id, "seat-9001", "barge", h.now, actor="boss")
    assert h.media.modes[port(h, "s1")] == ("full", None)
    assert h.media.modes[port(h, "s2")] == ("listen", None)
    assert len(h.media.conferences) == conferences, "no conference rebuilt for a mode"
    assert not h.sent(), "no SIP to anyone"
    kind, data = supervise_events(h)[-1]
    assert (kind, data["supervisor"], data["leg"], data["previous"]) == (
        "supervise_mode_changed", "seat-9001", "s1", "listen",
    )  # fmt: skip
    second = h.core.supervision.find(call_id, "seat-9002")
    assert second is not None
    assert second.mode == "listen"


def test_one_supervisor_leaving_leaves_the_others_conference_then_the_last_the_relay() -> None:
    """The leaving supervisor's ports are released (which takes it out of the mix): the
    conference of the others is not rebuilt, nor anyone's mode set again. After the last one
    the parties are back on their plain relay."""
    h = Harness()
    establish(h)
    one, two = two_joined(h, "barge", "whisper")
    caller, agent = port(h, "caller"), port(h, "b1")
    conferences, connected = len(h.media.conferences), len(h.media.connected)
    modes = dict(h.media.modes)
    h.feed(bye_from_supervisor(one), SUPERVISOR)
    sent = h.sent()
    assert [m.status for d, m in sent if d == SUPERVISOR and isinstance(m, Response)] == [200]
    assert not [m for d, m in sent if d != SUPERVISOR], "no SIP to the others"
    assert len(h.media.conferences) == conferences
    assert len(h.media.connected) == connected
    assert h.media.modes == modes
    assert port(h, "s1") not in h.media.live
    assert port(h, "s2") in h.media.live
    call = the_call(h)
    assert [s.supervisor for s in h.core.supervision.of_call(call.call_id)] == ["seat-9002"]
    kind, data = supervise_events(h)[-1]
    assert (kind, data["supervisor"], data["leg"]) == ("supervisor_left", "seat-9001", "s1")

    h.feed(bye_from_supervisor(two, tag="sup2", port=TRAINER[1]), TRAINER)
    assert h.media.connected[-1] == (caller, agent)
    assert len(h.media.conferences) == conferences
    assert call.state is CallState.ANSWERED
    assert call.caller.state is LegState.CONFIRMED
    assert h.core.supervision.by_call == {}
    kind, data = supervise_events(h)[-1]
    assert (kind, data["supervisor"], data["leg"]) == ("supervisor_left", "seat-9002", "s2")


def test_a_failing_supervisor_leaves_the_joined_one_undisturbed() -> None:
    h = Harness()
    establish(h)
    one = ring(h, "seat-9001", SUPERVISOR, "whisper")
    answer_as(h, one, SUPERVISOR, "sup1")
    conferences, connected, modes = (
        list(h.media.conferences), list(h.media.connected), dict(h.media.modes),
    )  # fmt: skip
    two = ring(h, "seat-9002", TRAINER, "barge")
    h.feed(answer(two, 486, tag="sup2", reason="Busy Here"), TRAINER)
    assert (h.media.conferences, h.media.connected, h.media.modes) == (
        conferences, connected, modes,
    )  # fmt: skip
    assert not [m for d, m in h.sent() if d in (CALLER, CALLEE, SUPERVISOR)]
    kind, data = supervise_events(h)[-1]
    assert (kind, data["supervisor"], data["status"]) == ("supervise_failed", "seat-9002", 486)
    call_id = the_call(h).call_id
    assert [s.supervisor for s in h.core.supervision.of_call(call_id)] == ["seat-9001"]


def test_the_call_ending_hangs_up_every_supervisor_ringing_or_joined() -> None:
    h = Harness()
    _inv, ok = establish(h)
    two_joined(h)
    third = ring(h, "seat-9003", ("127.0.0.1", 5098), "listen")
    h.feed(answer(third, 180, tag="sup3"), ("127.0.0.1", 5098))
    h.sent()
    h.feed(request_in_dialog("BYE", ok, 2, "z9hG4bKcbye"), CALLER)
    sent = h.sent()
    requests = {(d, m.method) for d, m in sent if isinstance(m, Request)}
    assert requests == {
        (CALLEE, "BYE"), (SUPERVISOR, "BYE"), (TRAINER, "BYE"), (("127.0.0.1", 5098), "CANCEL"),
    }  # fmt: skip
    ended = [(k, d["supervisor"], d["reason"]) for k, d in supervise_events(h)[-3:]]
    assert ended == [
        ("supervisor_left", "seat-9001", "call ended"),
        ("supervisor_left", "seat-9002", "call ended"),
        ("supervise_failed", "seat-9003", "call ended"),
    ]
    for dest_, message in sent:
        if isinstance(message, Request) and message.method == "BYE":
            h.feed(answer(message, 200, tag=message.to.tag or ""), dest_)
    h.feed(answer(third, 487, tag="sup3"), ("127.0.0.1", 5098))
    assert h.core.calls == {}
    assert h.media.live == set()
    assert h.core.supervision.by_call == {}


def test_at_most_max_supervisors_on_a_call() -> None:
    """One more supervisor than the bound is refused (409 through the API); a mode change of
    one already on is not a new supervisor, and a failed one makes room again."""
    h = Harness()
    establish(h)
    call_id = the_call(h).call_id
    phones = [("127.0.0.1", 5100 + n) for n in range(MAX_SUPERVISORS + 1)]
    invites = [
        ring(h, f"seat-{n}", phone, "listen") for n, phone in enumerate(phones[:MAX_SUPERVISORS])
    ]
    with pytest.raises(LocalProtocolError, match=f"already has {MAX_SUPERVISORS} supervisors"):
        ring(h, "seat-extra", phones[-1], "listen")
    assert not h.sent_to(phones[-1])
    h.core.supervision.change_mode(call_id, "seat-0", "barge", h.now, actor="sue")
    h.feed(answer(invites[0], 486, tag="busy"), phones[0])
    ring(h, "seat-extra", phones[-1], "listen")
    assert len(h.core.supervision.of_call(call_id)) == MAX_SUPERVISORS


def test_the_fake_call_control_has_the_engines_bound() -> None:
    assert FakeCallControl().max_supervisors == MAX_SUPERVISORS


def test_a_blind_transfer_keeps_both_supervisors_on_with_the_new_party() -> None:
    h = Harness()
    establish(h)
    two_joined(h, "whisper", "listen")
    call = the_call(h)
    h.core.transfers.start(call.call_id, [dest(TARGET)], h.now)
    target_inv = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_inv, 200, tag="t1", sdp=SDP, contact="sip:t@127.0.0.1:5090"), TARGET)
    target = port(h, "t1")
    assert h.media.conferences[-1] == [port(h, "caller"), target, port(h, "s1"), port(h, "s2")]
    assert h.media.modes[port(h, "s1")] == ("whisper", target), "coaching the one now talking"
    assert h.media.modes[port(h, "s2")] == ("listen", None)
    sent = h.sent()
    assert not [m for d, m in sent if d in (SUPERVISOR, TRAINER)], "no SIP to the supervisors"
    assert len(h.core.supervision.of_call(call.call_id)) == 2


def test_an_attended_transfer_keeps_a_joined_supervisor_and_one_answering_meanwhile() -> None:
    """seat-9001 is in the conference when the consultation starts; seat-9002 answers during
    it, which leaves the consultation alone. Once the agent hangs up, both hear the caller and
    the target."""
    h = Harness()
    callee_inv, _ok = establish(h)
    one = ring(h, "seat-9001", SUPERVISOR, "listen")
    answer_as(h, one, SUPERVISOR, "sup1")
    two = ring(h, "seat-9002", TRAINER, "whisper")
    call = the_call(h)
    h.core.transfers.start(call.call_id, [dest(TARGET)], h.now, mode="attended")
    target_inv = next(m for m in h.sent_to(TARGET) if isinstance(m, Request))
    h.feed(answer(target_inv, 200, tag="t1", sdp=SDP, contact="sip:t@127.0.0.1:5090"), TARGET)
    conferences = len(h.media.conferences)
    answer_as(h, two, TRAINER, "sup2")
    assert len(h.media.conferences) == conferences, "the consultation is left alone"
    h.feed(bye_from_callee(callee_inv), CALLEE)  # the agent hangs up: the transfer completes
    target = port(h, "t1")
    assert h.media.conferences[-1] == [port(h, "caller"), target, port(h, "s1"), port(h, "s2")]
    assert h.media.modes[port(h, "s1")] == ("listen", None)
    assert h.media.modes[port(h, "s2")] == ("whisper", target)
