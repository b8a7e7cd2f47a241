"""JSON bodies and query strings the HTTP API accepts; unknown keys are a 400."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from bridge.sidecar.control import SuperviseMode
from bridge.tickets.model import (
    CategoryKey,
    OwnershipRule,
    PlatformId,
    SeatId,
    ShortText,
    TicketDraft,
    TicketId,
    TicketState,
    TransferMode,
)
from bridge.tickets.store import MAX_LIST_LIMIT

Target = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TransferBody(_Body):
    """``ticket`` describes a new ticket; ``ticket_id`` reuses a stored draft or failed one."""

    target: Target
    mode: TransferMode = "blind"
    ticket: TicketDraft | None = None
    ticket_id: TicketId | None = None

    @model_validator(mode="after")
    def _one_ticket(self) -> TransferBody:
        if (self.ticket is None) == (self.ticket_id is None):
            raise ValueError("give exactly one of ticket or ticket_id")
        return self


class SuperviseBody(_Body):
    supervisor: Target
    mode: SuperviseMode


class RejectBody(_Body):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class OwnershipBody(_Body):
    platform: PlatformId
    rule: OwnershipRule = OwnershipRule.AGREED
    note: ShortText = ""


class SuggestBody(_Body):
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class TicketListQuery(_Body):
    origin: PlatformId | None = None
    destination: PlatformId | None = None
    category: CategoryKey | None = None
    state: TicketState | None = None
    since: float | None = None
    limit: int = Field(default=100, ge=1, le=MAX_LIST_LIMIT)


class EventsQuery(_Body):
    seat: tuple[SeatId, ...] = ()
    platform: tuple[PlatformId, ...] = ()
    access_token: str | None = None
