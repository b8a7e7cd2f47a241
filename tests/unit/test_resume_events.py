"""A refused resume reaches the agent's screen, not only the supervisor console: the events
WebSocket's hub, fed the call core's real ``resume_refused`` and ``resume_failed`` events by
the service, addresses them to the seat that handed the caller over and to a seat the caller
now talks to; other seats do not see them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from test_b2bua import CALLER, Harness, request_in_dialog
from test_resume_refused import held_then_transferred, refuse
from test_transfer import TARGET, dest

from bridge.calls.call import Call
from bridge.config import load_config
from bridge.engine import Engine
from bridge.service import Service
from bridge.sidecar.events import Subscription
from bridge.sip.message import Request

ROOT = Path(__file__).resolve().parents[2]
SENDING_SEAT = "agent2001"
TARGET_SEAT = "agent1002"
BYSTANDER = "agent2002"


def service_over(h: Harness) -> Service:
    """The service of a bridge whose call core is the harness's (seats and plan of
    config.example.toml; nothing is bound or started)."""
    engine = Engine(load_config(ROOT / "config.example.toml"))
    engine.b2bua = h.core
    return Service(engine, engine.config)


def kinds_for(subscription: Subscription) -> list[str]:
    seen = []
    while (message := subscription.get_nowait()) is not None:
        if message.event.get("type") == "call":
            seen.append(str(message.event["kind"]))
    return seen


def refused_twice(h: Harness, service: Service, call: Call, resume: Request) -> None:
    """The caller's phone refuses the resume and its retry; the events go out as the
    engine's flush hands them over."""
    refuse(h, resume, 488)
    service._on_call_events(h.core.take_events())
    retries: list[Request] = []
    while not retries:
        h.advance(0.1)
        retries = [m for m in h.sent_to(CALLER) if isinstance(m, Request) and m.method == "INVITE"]
    refuse(h, retries[0], 488)
    service._on_call_events(h.core.take_events())
    assert call.caller.live


async def test_the_sending_seat_and_a_seat_target_see_the_refused_resume() -> None:
    h = Harness()
    service = service_over(h)
    sender = service.hub.subscribe(seats=[SENDING_SEAT])
    target = service.hub.subscribe(seats=[TARGET_SEAT])
    bystander = service.hub.subscribe(seats=[BYSTANDER], platforms=["12313"])
    console = service.hub.subscribe(everything=True)
    call, _ok, resume = held_then_transferred(
        h, "blind", target=replace(dest(TARGET), peer=TARGET_SEAT)
    )
    call.agent_seat = SENDING_SEAT  # as the transfer's ticket named it
    refused_twice(h, service, call, resume)
    assert kinds_for(sender) == ["resume_refused", "resume_refused", "resume_failed"]
    assert kinds_for(target) == ["resume_refused", "resume_refused", "resume_failed"]
    assert kinds_for(bystander) == []
    assert kinds_for(console) == ["resume_refused", "resume_refused", "resume_failed"]


async def test_a_trunk_target_is_no_seat_and_the_sender_still_sees_it() -> None:
    """The caller now talks to the 110 desk's trunk: only the sending seat is addressed."""
    h = Harness()
    service = service_over(h)
    sender = service.hub.subscribe(seats=[SENDING_SEAT])
    other = service.hub.subscribe(seats=[BYSTANDER, "pbx-110"])
    call, _ok, resume = held_then_transferred(h, "blind")
    call.agent_seat = SENDING_SEAT
    refused_twice(h, service, call, resume)
    assert kinds_for(sender)[-1] == "resume_failed"
    assert kinds_for(other) == []


async def test_other_call_events_stay_with_the_console() -> None:
    """A call's ordinary progress is not pushed to seats (their ticket events are)."""
    h = Harness()
    service = service_over(h)
    sender = service.hub.subscribe(seats=[SENDING_SEAT])
    call, ok, _resume = held_then_transferred(h, "blind")
    call.agent_seat = SENDING_SEAT
    h.feed(request_in_dialog("BYE", ok, 9, "z9hG4bKcbye9"), CALLER)
    events = h.core.take_events()
    assert events
    service._on_call_events(events)
    assert kinds_for(sender) == []
