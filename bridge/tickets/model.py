"""The ticket (工单) that travels with a transferred call.

A ticket is what the receiving seat reads while the call rings: who called, about what, where,
how urgent, and what was already said. It is an immutable pydantic value; every change goes
through :mod:`bridge.tickets.lifecycle`, which returns a new ticket and the event that records
the change. Inputs from the network (:class:`TicketDraft`, :class:`FeedbackInput`) forbid unknown
keys so a desktop's typo is a 400, not a silently dropped field.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# Ticket ids travel in SIP headers (X-Ticket-Id, User-to-User hex) and URLs, so they are kept
# to characters that need no escaping anywhere.
TicketId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
# Platforms are named by the dial plan ("12345", "110", "12313", "power_utility", ...).
PlatformId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]
CategoryKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
# Numbers come from SIP user parts: digits mostly, but "anonymous" and PBX prefixes occur.
PhoneNumber = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+*#._-]{1,64}$")]
SeatId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+._@:-]{1,128}$")]
ActorName = Annotated[str, StringConstraints(min_length=1, max_length=128)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=5000)]

TransferMode = Literal["blind", "attended", "three_way"]

# Crockford base32: no I, L, O, U, so ids read aloud over the phone are unambiguous.
_ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class TicketState(StrEnum):
    DRAFT = "draft"
    TRANSFER_REQUESTED = "transfer_requested"
    RINGING = "ringing"
    TRANSFERRED = "transferred"
    FAILED = "failed"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class OwnershipRule(StrEnum):
    """How a three-way call settled who takes the request (domain.md, 首接负责制)."""

    AGREED = "agreed"
    FIRST_CONTACT = "first_contact"


def new_ticket_id(now: float, *, random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """``T`` + UTC time to the millisecond + 6 random base32 characters.

    Ids sort by creation time (useful in lists and logs) and stay unique across bridge nodes
    creating tickets in the same millisecond (30 random bits).
    """
    whole, millis = divmod(round(now * 1000), 1000)
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(whole))
    value = int.from_bytes(random_bytes(4), "big") & ((1 << 30) - 1)
    suffix = "".join(_ID_ALPHABET[(value >> shift) & 31] for shift in range(25, -1, -5))
    return f"T{stamp}{millis:03d}{suffix}"


class TicketDraft(BaseModel):
    """What an agent fills in before handing the call over (the body of POST /tickets)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    origin: PlatformId
    category: CategoryKey
    caller_number: PhoneNumber | None = None
    callback_number: PhoneNumber | None = None
    summary: ShortText = ""
    location: ShortText = ""
    urgent: bool = False
    sending_seat: SeatId | None = None
    notes: LongText = ""
    destination: PlatformId | None = None


class OwnershipDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    platform: PlatformId
    rule: OwnershipRule
    decided_by: ActorName
    at: float
    note: ShortText = ""


class Feedback(BaseModel):
    """The receiving side's report of how the case ended (互相反馈)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    outcome: LongText
    by: ActorName
    at: float


class FeedbackInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    outcome: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5000)]


class Ticket(TicketDraft):
    """A stored ticket. ``version`` is the sequence number of its latest event."""

    id: TicketId
    state: TicketState
    version: int = Field(ge=1)
    created_at: float
    updated_at: float
    call_id: str | None = None
    target: str | None = None
    transfer_mode: TransferMode | None = None
    attempts: int = 0
    failure_reason: str | None = None
    accepted_by: ActorName | None = None
    rejection_reason: str | None = None
    ownership: OwnershipDecision | None = None
    feedback: tuple[Feedback, ...] = ()
