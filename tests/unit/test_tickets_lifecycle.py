"""Ticket model and lifecycle: pure logic, fake clock."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from bridge.tickets import lifecycle
from bridge.tickets.errors import InvalidTicketData, InvalidTransition
from bridge.tickets.lifecycle import TRANSITIONS, EventKind, Transition
from bridge.tickets.model import (
    OwnershipRule,
    Ticket,
    TicketDraft,
    TicketState,
    new_ticket_id,
)

NOW = 1_700_000_000.0


def draft(**overrides: object) -> TicketDraft:
    fields: dict[str, object] = {
        "origin": "12345",
        "category": "public_order",
        "caller_number": "13800000000",
        "summary": "fight outside the market",
        "location": "Market St 5",
        "urgent": True,
        "sending_seat": "seat-1001",
        "notes": "caller hears shouting",
        "destination": "110",
    }
    fields.update(overrides)
    return TicketDraft.model_validate(fields)


def created(ticket_id: str = "T1") -> Ticket:
    return lifecycle.create(draft(), ticket_id=ticket_id, actor="seat-1001", now=NOW).ticket


def ringing(ticket: Ticket) -> Ticket:
    step = lifecycle.request_transfer(
        ticket, target="sip:110@pbx", mode="blind", actor="seat-1001", now=NOW + 1
    )
    return lifecycle.mark_ringing(step.ticket, actor="bridge", now=NOW + 2).ticket


def test_ticket_ids_sort_by_creation_time_and_differ_within_a_millisecond() -> None:
    first = new_ticket_id(NOW)
    later = new_ticket_id(NOW + 0.001)
    same_ms = {new_ticket_id(NOW) for _ in range(50)}
    assert first.startswith("T20231114221320000")
    assert first < later
    assert len(same_ms) == 50


def test_ticket_id_random_part_uses_unambiguous_alphabet() -> None:
    ticket_id = new_ticket_id(NOW, random_bytes=lambda n: b"\xff" * n)
    assert ticket_id == "T20231114221320000ZZZZZZ"
    assert not set(new_ticket_id(NOW)[18:]) & set("ILOU")


def test_draft_rejects_unknown_fields_and_bad_values() -> None:
    with pytest.raises(ValidationError, match="extra_forbidden"):
        draft(colour="red")
    with pytest.raises(ValidationError):
        draft(category="Not A Key")
    with pytest.raises(ValidationError):
        draft(caller_number="138 0000")
    with pytest.raises(ValidationError):
        draft(summary="x" * 501)


def test_create_starts_a_draft_with_event_one() -> None:
    step = lifecycle.create(draft(), ticket_id="T1", actor="seat-1001", now=NOW)
    assert step.ticket.state is TicketState.DRAFT
    assert step.ticket.version == 1
    assert step.ticket.created_at == step.ticket.updated_at == NOW
    assert step.event.seq == 1
    assert step.event.kind is EventKind.CREATED
    assert step.event.actor == "seat-1001"


def test_happy_path_to_feedback_numbers_events_without_gaps() -> None:
    steps: list[Transition] = [lifecycle.create(draft(), ticket_id="T1", actor="a", now=NOW)]
    t = steps[-1].ticket
    makers: list[Callable[[Ticket], Transition]] = [
        lambda t: lifecycle.request_transfer(
            t, target="sip:110@pbx", mode="three_way", actor="a", now=NOW + 1, call_id="c1"
        ),
        lambda t: lifecycle.mark_ringing(t, actor="bridge", now=NOW + 2),
        lambda t: lifecycle.mark_transferred(t, actor="bridge", now=NOW + 3),
        lambda t: lifecycle.decide_ownership(
            t, platform="110", rule=OwnershipRule.AGREED, actor="a", now=NOW + 4
        ),
        lambda t: lifecycle.accept(t, actor="110-desk", now=NOW + 5),
        lambda t: lifecycle.add_feedback(t, outcome="police sent", actor="110-desk", now=NOW + 6),
        lambda t: lifecycle.add_feedback(t, outcome="case closed", actor="110-desk", now=NOW + 7),
    ]
    for make in makers:
        steps.append(make(t))
        t = steps[-1].ticket
    assert [s.event.seq for s in steps] == list(range(1, 9))
    assert t.state is TicketState.ACCEPTED
    assert t.version == 8
    assert t.call_id == "c1"
    assert t.accepted_by == "110-desk"
    assert t.ownership is not None
    assert t.ownership.platform == "110"
    assert [f.outcome for f in t.feedback] == ["police sent", "case closed"]
    assert t.updated_at == NOW + 7


def test_failed_transfer_can_be_requested_again_for_the_next_destination() -> None:
    t = ringing(created())
    failed = lifecycle.mark_failed(t, reason="busy", sip_status=486, actor="bridge", now=NOW + 3)
    assert failed.ticket.state is TicketState.FAILED
    assert failed.ticket.failure_reason == "busy"
    assert failed.event.data == {"reason": "busy", "target": "sip:110@pbx", "sip_status": 486}
    again = lifecycle.request_transfer(
        failed.ticket, target="sip:110b@pbx", mode="blind", actor="bridge", now=NOW + 4
    )
    assert again.ticket.state is TicketState.TRANSFER_REQUESTED
    assert again.ticket.attempts == 2
    assert again.ticket.failure_reason is None
    assert again.ticket.target == "sip:110b@pbx"


def test_answer_without_ringing_is_a_transfer() -> None:
    t = lifecycle.request_transfer(
        created(), target="sip:110@pbx", mode="blind", actor="a", now=NOW
    ).ticket
    assert lifecycle.mark_transferred(t, actor="bridge", now=NOW).ticket.state is (
        TicketState.TRANSFERRED
    )


@pytest.mark.parametrize(
    ("state_of", "action"),
    [
        ("draft", lambda t: lifecycle.mark_ringing(t, actor="x", now=NOW)),
        ("draft", lambda t: lifecycle.accept(t, actor="x", now=NOW)),
        ("ringing", lambda t: lifecycle.add_feedback(t, outcome="done", actor="x", now=NOW)),
        ("ringing", lambda t: lifecycle.mark_ringing(t, actor="x", now=NOW)),
        (
            "ringing",
            lambda t: lifecycle.request_transfer(t, target="x", mode="blind", actor="x", now=NOW),
        ),
        ("transferred", lambda t: lifecycle.add_feedback(t, outcome="x", actor="x", now=NOW)),
        ("rejected", lambda t: lifecycle.accept(t, actor="x", now=NOW)),
        ("rejected", lambda t: lifecycle.add_feedback(t, outcome="x", actor="x", now=NOW)),
    ],
)
def test_invalid_transitions_raise_and_map_to_409(
    state_of: str, action: Callable[[Ticket], Transition]
) -> None:
    t = created()
    if state_of != "draft":
        t = ringing(t)
    if state_of in ("transferred", "rejected"):
        t = lifecycle.mark_transferred(t, actor="bridge", now=NOW).ticket
    if state_of == "rejected":
        t = lifecycle.reject(t, reason="not ours", actor="110", now=NOW).ticket
    with pytest.raises(InvalidTransition) as info:
        action(t)
    assert info.value.http_status == 409
    assert t.state.value in str(info.value)


def test_every_state_is_reachable_and_only_terminal_states_have_no_exit() -> None:
    reachable = {TicketState.DRAFT}
    for _ in range(len(TicketState)):
        reachable |= {dst for (src, _), dst in TRANSITIONS.items() if src in reachable}
    assert reachable == set(TicketState)
    for state in TicketState:
        exits = {dst for (src, _), dst in TRANSITIONS.items() if src is state and dst is not state}
        if state in (TicketState.ACCEPTED, TicketState.REJECTED):
            assert exits == set()
        else:
            assert exits, state


def test_first_contact_ownership_must_be_the_origin_platform() -> None:
    t = lifecycle.mark_transferred(ringing(created()), actor="bridge", now=NOW).ticket
    with pytest.raises(InvalidTicketData) as info:
        lifecycle.decide_ownership(
            t, platform="110", rule=OwnershipRule.FIRST_CONTACT, actor="a", now=NOW
        )
    assert info.value.http_status == 422
    step = lifecycle.decide_ownership(
        t, platform="12345", rule=OwnershipRule.FIRST_CONTACT, actor="a", now=NOW
    )
    assert step.ticket.ownership is not None
    assert step.ticket.ownership.rule is OwnershipRule.FIRST_CONTACT


def test_transition_does_not_mutate_the_previous_ticket() -> None:
    before = created()
    after = lifecycle.request_transfer(before, target="x", mode="blind", actor="a", now=NOW + 9)
    assert before.state is TicketState.DRAFT
    assert before.version == 1
    assert after.ticket.version == 2


def test_event_json_is_plain_data() -> None:
    event = lifecycle.create(draft(), ticket_id="T9", actor="a", now=NOW).event
    assert event.to_json() == {
        "ticket_id": "T9",
        "seq": 1,
        "kind": "created",
        "at": NOW,
        "actor": "a",
        "data": {"origin": "12345", "category": "public_order", "urgent": True},
    }


def test_allowed_events_lists_the_table_rows() -> None:
    assert lifecycle.allowed_events(TicketState.FAILED) == {EventKind.TRANSFER_REQUESTED}
    kinds = set(itertools.chain.from_iterable(lifecycle.allowed_events(s) for s in TicketState))
    assert kinds == set(EventKind) - {EventKind.CREATED}
