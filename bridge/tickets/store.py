"""What the rest of the bridge needs from ticket storage, whatever the database.

Writes take a :class:`~bridge.tickets.lifecycle.Transition`: the new ticket snapshot and its
event are stored in one transaction, and only then may the caller signal anyone (send the
INVITE, publish the screen pop). ``update`` runs a pure change function inside that transaction,
so concurrent writers cannot interleave a read-modify-write.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from bridge.tickets.lifecycle import TicketEvent, Transition
from bridge.tickets.model import Ticket, TicketState

MAX_LIST_LIMIT = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class TicketQuery:
    """Filters of the ticket list; ``None`` means any. Newest tickets first."""

    origin: str | None = None
    destination: str | None = None
    category: str | None = None
    state: TicketState | None = None
    since: float | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIST_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIST_LIMIT}")


TicketChange = Callable[[Ticket], Transition]


def new_entry_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One audited step that is not a ticket's: a call's state change, a dial-plan reload."""

    at: float
    actor: str
    kind: str
    subject: str
    data: dict[str, Any]
    seq: int = 0
    entry_id: str | None = field(default_factory=new_entry_id)
    """Given when the step is taken, so a batch written again (retried after its commit's
    acknowledgement was lost, replayed from the journal after a crash) is stored once: nothing
    is lost and nothing is logged twice. ``None`` on entries logged before ids existed."""

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "entry_id": self.entry_id,
            "at": self.at,
            "actor": self.actor,
            "kind": self.kind,
            "subject": self.subject,
            "data": self.data,
        }


class TicketStore(Protocol):
    async def create(self, transition: Transition) -> None:
        """Store a new ticket and its ``created`` event; TicketExists if the id is taken."""

    async def get(self, ticket_id: str) -> Ticket | None: ...

    async def list_tickets(self, query: TicketQuery) -> list[Ticket]: ...

    async def append_event(self, transition: Transition) -> None:
        """Store the new snapshot and its event; ConcurrentUpdate if the ticket moved on."""

    async def update(self, ticket_id: str, change: TicketChange) -> Transition:
        """Read, apply ``change`` and append, atomically; TicketNotFound if absent."""
        ...

    async def create_then(self, transition: Transition, change: TicketChange) -> Transition:
        """:meth:`create` and :meth:`update` in one transaction."""
        ...

    async def events_for(self, ticket_id: str) -> list[TicketEvent]: ...

    async def close(self) -> None: ...


class TicketDatabase(TicketStore, Protocol):
    """What the service opens from ``storage.url``: the tickets, the audit log beside them in
    the same database (one backup holds both), and the schema version for diagnostics."""

    async def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        """Append a batch in one transaction; the log refuses UPDATE and DELETE. An entry whose
        ``entry_id`` is already stored is skipped, so writing a batch again is harmless."""

    async def audit(self, subject: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest first."""
        ...

    async def schema_version(self) -> int: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolFigures:
    """A connection pool at one moment (a store with a pool: PostgreSQL)."""

    in_use: int
    """Connections lent to a store operation (or being opened)."""
    idle: int
    """Connections open and waiting in the pool."""
    waiting: int
    """Store operations queued for a connection (the pool is at ``max_connections``)."""


@runtime_checkable
class PooledStore(Protocol):
    """A store over a connection pool, which /metrics shows (the SQLite store has none)."""

    def pool_figures(self) -> PoolFigures: ...
