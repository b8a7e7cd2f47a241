"""The ticket lifecycle: one transition table, pure functions, an append-only event per change.

Theory of operation
-------------------
An agent fills in a ticket (``draft``) and asks for a transfer (``transfer_requested``). The
bridge rings the target (``ringing``); the target answers (``transferred``) or the attempt
fails (``failed``: busy, rejected, no answer, unreachable, cancelled). A failed ticket may be
requested again, for the dial plan's next destination or a retry, while the caller is back with
the agent. A target may answer without a provisional response, so ``transfer_requested`` can go
straight to ``transferred`` or ``failed``. Once transferred, the receiving side ``accepted`` or
``rejected`` the request; a three-way call may record who owns it (``ownership_decided``, a
self-loop) and an accepted ticket collects ``feedback`` (another self-loop) as the case is
handled. Nothing here performs I/O: each function takes ``now`` and returns a :class:`Transition`
(the new ticket and its event), which the store persists in one transaction before anyone is
told (store first, then signal).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bridge.tickets.errors import InvalidTicketData, InvalidTransition
from bridge.tickets.model import (
    Feedback,
    OwnershipDecision,
    OwnershipRule,
    Ticket,
    TicketDraft,
    TicketState,
    TransferMode,
)


class EventKind(StrEnum):
    CREATED = "created"
    TRANSFER_REQUESTED = "transfer_requested"
    RINGING = "ringing"
    TRANSFERRED = "transferred"
    FAILED = "failed"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    OWNERSHIP_DECIDED = "ownership_decided"
    FEEDBACK = "feedback"


S = TicketState
K = EventKind

TRANSITIONS: Mapping[tuple[TicketState | None, EventKind], TicketState] = {
    (None, K.CREATED): S.DRAFT,
    (S.DRAFT, K.TRANSFER_REQUESTED): S.TRANSFER_REQUESTED,
    (S.FAILED, K.TRANSFER_REQUESTED): S.TRANSFER_REQUESTED,
    (S.TRANSFER_REQUESTED, K.RINGING): S.RINGING,
    (S.TRANSFER_REQUESTED, K.TRANSFERRED): S.TRANSFERRED,
    (S.TRANSFER_REQUESTED, K.FAILED): S.FAILED,
    (S.RINGING, K.TRANSFERRED): S.TRANSFERRED,
    (S.RINGING, K.FAILED): S.FAILED,
    (S.TRANSFERRED, K.ACCEPTED): S.ACCEPTED,
    (S.TRANSFERRED, K.REJECTED): S.REJECTED,
    (S.TRANSFERRED, K.OWNERSHIP_DECIDED): S.TRANSFERRED,
    (S.ACCEPTED, K.OWNERSHIP_DECIDED): S.ACCEPTED,
    (S.REJECTED, K.OWNERSHIP_DECIDED): S.REJECTED,
    (S.ACCEPTED, K.FEEDBACK): S.ACCEPTED,
}


def allowed_events(state: TicketState) -> frozenset[EventKind]:
    return frozenset(kind for (source, kind) in TRANSITIONS if source is state)


@dataclass(frozen=True, slots=True, kw_only=True)
class TicketEvent:
    """One entry of a ticket's append-only log; ``seq`` starts at 1 and has no gaps."""

    ticket_id: str
    seq: int
    kind: EventKind
    at: float
    actor: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "ticket_id": self.ticket_id,
            "seq": self.seq,
            "kind": self.kind.value,
            "at": self.at,
            "actor": self.actor,
            "data": dict(self.data),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    ticket: Ticket
    event: TicketEvent


def _next_state(current: TicketState | None, kind: EventKind, ticket_id: str) -> TicketState:
    target = TRANSITIONS.get((current, kind))
    if target is None:
        shown = current.value if current is not None else "nothing"
        raise InvalidTransition(f"ticket {ticket_id}: cannot record {kind.value} in state {shown}")
    return target


def _advance(
    ticket: Ticket,
    kind: EventKind,
    *,
    actor: str,
    now: float,
    data: Mapping[str, Any],
    changes: Mapping[str, Any],
) -> Transition:
    state = _next_state(ticket.state, kind, ticket.id)
    seq = ticket.version + 1
    updated = ticket.model_copy(
        update={**changes, "state": state, "version": seq, "updated_at": now}
    )
    event = TicketEvent(ticket_id=ticket.id, seq=seq, kind=kind, at=now, actor=actor, data=data)
    return Transition(ticket=updated, event=event)


def create(draft: TicketDraft, *, ticket_id: str, actor: str, now: float) -> Transition:
    state = _next_state(None, K.CREATED, ticket_id)
    ticket = Ticket(
        **draft.model_dump(),
        id=ticket_id,
        state=state,
        version=1,
        created_at=now,
        updated_at=now,
    )
    event = TicketEvent(
        ticket_id=ticket_id,
        seq=1,
        kind=K.CREATED,
        at=now,
        actor=actor,
        data={"origin": draft.origin, "category": draft.category, "urgent": draft.urgent},
    )
    return Transition(ticket=ticket, event=event)


def request_transfer(
    ticket: Ticket,
    *,
    target: str,
    mode: TransferMode,
    actor: str,
    now: float,
    call_id: str | None = None,
    destination: str | None = None,
) -> Transition:
    """Record the request before any INVITE leaves, so a crash cannot lose it."""
    data: dict[str, Any] = {"target": target, "mode": mode, "attempt": ticket.attempts + 1}
    changes: dict[str, Any] = {
        "target": target,
        "transfer_mode": mode,
        "attempts": ticket.attempts + 1,
        "failure_reason": None,
    }
    if call_id is not None:
        data["call_id"] = changes["call_id"] = call_id
    if destination is not None:
        data["destination"] = changes["destination"] = destination
    return _advance(ticket, K.TRANSFER_REQUESTED, actor=actor, now=now, data=data, changes=changes)


def mark_ringing(ticket: Ticket, *, actor: str, now: float, status: int = 180) -> Transition:
    return _advance(ticket, K.RINGING, actor=actor, now=now, data={"status": status}, changes={})


def mark_transferred(ticket: Ticket, *, actor: str, now: float) -> Transition:
    data = {"target": ticket.target} if ticket.target else {}
    return _advance(ticket, K.TRANSFERRED, actor=actor, now=now, data=data, changes={})


def mark_failed(
    ticket: Ticket, *, reason: str, actor: str, now: float, sip_status: int | None = None
) -> Transition:
    """``reason`` is a short code (busy, rejected, no_answer, unreachable, cancelled)."""
    data: dict[str, Any] = {"reason": reason, "target": ticket.target}
    if sip_status is not None:
        data["sip_status"] = sip_status
    return _advance(
        ticket, K.FAILED, actor=actor, now=now, data=data, changes={"failure_reason": reason}
    )


def accept(ticket: Ticket, *, actor: str, now: float) -> Transition:
    return _advance(
        ticket, K.ACCEPTED, actor=actor, now=now, data={}, changes={"accepted_by": actor}
    )


def reject(ticket: Ticket, *, reason: str, actor: str, now: float) -> Transition:
    return _advance(
        ticket,
        K.REJECTED,
        actor=actor,
        now=now,
        data={"reason": reason},
        changes={"rejection_reason": reason},
    )


def decide_ownership(
    ticket: Ticket,
    *,
    platform: str,
    rule: OwnershipRule,
    actor: str,
    now: float,
    note: str = "",
) -> Transition:
    """Record which platform took the request after a three-way call.

    Under first-contact responsibility (domain.md, 首接负责制) the platform that received the
    request first keeps it, which is the ticket's origin; any other platform is a mistake.
    """
    if rule is OwnershipRule.FIRST_CONTACT and platform != ticket.origin:
        raise InvalidTicketData(
            f"first-contact responsibility assigns the ticket to its origin {ticket.origin}"
        )
    decision = OwnershipDecision(platform=platform, rule=rule, decided_by=actor, at=now, note=note)
    return _advance(
        ticket,
        K.OWNERSHIP_DECIDED,
        actor=actor,
        now=now,
        data={"platform": platform, "rule": rule.value},
        changes={"ownership": decision},
    )


def add_feedback(ticket: Ticket, *, outcome: str, actor: str, now: float) -> Transition:
    entry = Feedback(outcome=outcome, by=actor, at=now)
    return _advance(
        ticket,
        K.FEEDBACK,
        actor=actor,
        now=now,
        data={"outcome": outcome},
        changes={"feedback": (*ticket.feedback, entry)},
    )
