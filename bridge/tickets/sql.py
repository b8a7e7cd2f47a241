"""What the SQLite and PostgreSQL stores share: migrations, write checks, filters and rows.

Both keep a ticket's body and an event's data as the JSON text the model writes, so a row reads
back the same whichever database it came from, and a list filter is one query in both dialects
(they differ only in the parameter mark).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.tickets.errors import StoreVersionError
from bridge.tickets.lifecycle import EventKind, TicketEvent, Transition
from bridge.tickets.model import Ticket
from bridge.tickets.store import AuditEntry, TicketQuery

TICKET_COLUMNS = "id, version, state, origin, category, destination, created_at, updated_at, body"
EVENT_COLUMNS = "ticket_id, seq, kind, at, actor, data"
AUDIT_COLUMNS = "entry_id, at, actor, kind, subject, data"


@dataclass(frozen=True, slots=True, kw_only=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


def pending(migrations: Sequence[Migration], current: int) -> Sequence[Migration]:
    """The migrations a database at ``current`` still needs; a database written by a newer
    release is refused rather than guessed at."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError("migrations must be numbered 1, 2, 3, ... in order")
    known = versions[-1] if versions else 0
    if current > known:
        raise StoreVersionError(
            f"ticket store has schema version {current}, this release knows up to {known}"
        )
    return migrations[current:]


def check_new(transition: Transition) -> None:
    ticket, event = transition.ticket, transition.event
    if event.seq != 1 or ticket.version != 1 or event.kind is not EventKind.CREATED:
        raise ValueError("a new ticket starts with its created event, seq 1")


def check_follows(transition: Transition) -> None:
    ticket, event = transition.ticket, transition.event
    if event.ticket_id != ticket.id or event.seq != ticket.version:
        raise ValueError("the event must be the one that produced this ticket version")


def ticket_row(ticket: Ticket) -> tuple[Any, ...]:
    """The values of :data:`TICKET_COLUMNS`."""
    return (
        ticket.id,
        ticket.version,
        ticket.state.value,
        ticket.origin,
        ticket.category,
        ticket.destination,
        ticket.created_at,
        ticket.updated_at,
        ticket.model_dump_json(),
    )


def update_row(ticket: Ticket) -> tuple[Any, ...]:
    """The values of :func:`update_sql`: the new snapshot, where the previous version is."""
    return (
        ticket.version,
        ticket.state.value,
        ticket.destination,
        ticket.updated_at,
        ticket.model_dump_json(),
        ticket.id,
        ticket.version - 1,
    )


def update_sql(mark: str) -> str:
    return (
        f"UPDATE tickets SET version = {mark}, state = {mark}, destination = {mark},"
        f" updated_at = {mark}, body = {mark} WHERE id = {mark} AND version = {mark}"
    )


def event_row(event: TicketEvent) -> tuple[Any, ...]:
    """The values of :data:`EVENT_COLUMNS`."""
    return (
        event.ticket_id,
        event.seq,
        event.kind.value,
        event.at,
        event.actor,
        json.dumps(dict(event.data), ensure_ascii=False, separators=(",", ":")),
    )


def event_from_row(ticket_id: str, row: Sequence[Any]) -> TicketEvent:
    """A row of ``seq, kind, at, actor, data``."""
    seq, kind, at, actor, data = row
    return TicketEvent(
        ticket_id=ticket_id,
        seq=int(seq),
        kind=EventKind(kind),
        at=float(at),
        actor=str(actor),
        data=json.loads(data),
    )


def audit_row(entry: AuditEntry) -> tuple[Any, ...]:
    """The values of :data:`AUDIT_COLUMNS`."""
    return (
        entry.entry_id,
        entry.at,
        entry.actor,
        entry.kind,
        entry.subject,
        json.dumps(entry.data, ensure_ascii=False),
    )


def insert_audit_sql(mark: str) -> str:
    """Insert-or-ignore on ``entry_id``: a batch whose commit went through but whose
    acknowledgement was lost (the connection dropped after COMMIT) is written again by the
    audit writer, and must not be logged twice. Rows logged before ids existed have none (NULL
    never conflicts)."""
    marks = ", ".join([mark] * 6)
    return (
        f"INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES ({marks})"
        " ON CONFLICT (entry_id) DO NOTHING"
    )


def audit_sql(subject: str | None, limit: int, mark: str) -> tuple[str, tuple[Any, ...]]:
    """Newest first."""
    sql = f"SELECT seq, {AUDIT_COLUMNS} FROM audit_log"
    args: tuple[Any, ...] = ()
    if subject is not None:
        sql += f" WHERE subject = {mark}"
        args = (subject,)
    return sql + f" ORDER BY seq DESC LIMIT {mark}", (*args, limit)


def audit_from_row(row: Sequence[Any]) -> AuditEntry:
    seq, entry_id, at, actor, kind, subject, data = row
    return AuditEntry(
        seq=int(seq),
        entry_id=None if entry_id is None else str(entry_id),
        at=float(at),
        actor=str(actor),
        kind=str(kind),
        subject=str(subject),
        data=json.loads(data),
    )


def list_sql(query: TicketQuery, mark: str) -> tuple[str, tuple[Any, ...]]:
    """The bodies of the tickets ``query`` selects, newest first."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("origin", query.origin),
        ("destination", query.destination),
        ("category", query.category),
        ("state", query.state.value if query.state is not None else None),
    ):
        if value is not None:
            clauses.append(f"{column} = {mark}")
            params.append(value)
    if query.since is not None:
        clauses.append(f"created_at >= {mark}")
        params.append(query.since)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = f"SELECT body FROM tickets{where} ORDER BY created_at DESC, id DESC LIMIT {mark}"
    return sql, (*params, query.limit)
