"""Errors of the ticket layer, each with the HTTP status the sidecar answers with.

Like the SIP layer's LocalProtocolError, :class:`InvalidTransition` means someone asked for a
step the lifecycle forbids (the ticket's state does not allow it): 409 Conflict, never a crash.
"""

from __future__ import annotations

from typing import ClassVar


class TicketError(Exception):
    http_status: ClassVar[int] = 500
    error: ClassVar[str] = "ticket_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidTransition(TicketError):
    http_status = 409
    error = "invalid_transition"


class ConcurrentUpdate(TicketError):
    """Another writer appended an event since this ticket was read."""

    http_status = 409
    error = "concurrent_update"


class InvalidTicketData(TicketError):
    http_status = 422
    error = "invalid_ticket"


class TicketNotFound(TicketError):
    http_status = 404
    error = "ticket_not_found"


class TicketExists(TicketError):
    http_status = 409
    error = "ticket_exists"


class StoreVersionError(TicketError):
    """The database was written by a newer release; refuse rather than corrupt it."""

    error = "store_version"


class StoreUnavailable(TicketError):
    """The database server cannot be reached or refused us (address, password, database)."""

    http_status = 503
    error = "store_unavailable"
