"""The embedded ticket store: one SQLite file in WAL mode, schema migrated on open.

:class:`SqliteTicketDb` is the blocking implementation; every call is a short transaction.
:class:`SqliteTicketStore` is what the engine and the sidecar use: it runs those calls on one
dedicated thread, so the event loop never waits on the disk and SQLite sees a single writer.

The schema version lives in ``schema_version``; :data:`MIGRATIONS` is applied in order, each in
its own transaction, from whatever version the file has. A file from a newer release is refused
rather than guessed at. The event table refuses UPDATE and DELETE: the log is append-only.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Literal, TypeVar

from bridge.tickets.errors import (
    ConcurrentUpdate,
    StoreVersionError,
    TicketExists,
    TicketNotFound,
)
from bridge.tickets.lifecycle import TicketEvent, Transition
from bridge.tickets.model import Ticket
from bridge.tickets.sql import (
    EVENT_COLUMNS,
    TICKET_COLUMNS,
    Migration,
    audit_from_row,
    audit_row,
    audit_sql,
    check_follows,
    check_new,
    event_from_row,
    event_row,
    insert_audit_sql,
    list_sql,
    pending,
    ticket_row,
    update_row,
    update_sql,
)
from bridge.tickets.store import AuditEntry, TicketChange, TicketQuery

T = TypeVar("T")

Synchronous = Literal["NORMAL", "FULL"]

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="tickets and their append-only event log",
        statements=(
            """CREATE TABLE tickets (
                id TEXT PRIMARY KEY,
                version INTEGER NOT NULL,
                state TEXT NOT NULL,
                origin TEXT NOT NULL,
                category TEXT NOT NULL,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL,
                body TEXT NOT NULL
            )""",
            """CREATE TABLE ticket_events (
                ticket_id TEXT NOT NULL REFERENCES tickets(id),
                seq INTEGER NOT NULL,
                kind TEXT NOT NULL,
                at REAL NOT NULL,
                actor TEXT NOT NULL,
                data TEXT NOT NULL,
                PRIMARY KEY (ticket_id, seq)
            ) WITHOUT ROWID""",
            """CREATE TRIGGER ticket_events_no_update BEFORE UPDATE ON ticket_events
               BEGIN SELECT RAISE(ABORT, 'ticket events are append-only'); END""",
            """CREATE TRIGGER ticket_events_no_delete BEFORE DELETE ON ticket_events
               BEGIN SELECT RAISE(ABORT, 'ticket events are append-only'); END""",
        ),
    ),
    Migration(
        version=2,
        description="receiving platform column and indexes for the list filters",
        statements=(
            "ALTER TABLE tickets ADD COLUMN destination TEXT",
            "UPDATE tickets SET destination = json_extract(body, '$.destination')",
            "CREATE INDEX tickets_by_created ON tickets (created_at, id)",
            "CREATE INDEX tickets_by_origin ON tickets (origin, created_at)",
            "CREATE INDEX tickets_by_destination ON tickets (destination, created_at)",
            "CREATE INDEX tickets_by_state ON tickets (state, created_at)",
        ),
    ),
)

MIGRATIONS = (
    *MIGRATIONS,
    Migration(
        version=3,
        description="append-only audit log of calls and admin actions",
        statements=(
            """CREATE TABLE audit_log (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                at REAL NOT NULL,
                actor TEXT NOT NULL,
                kind TEXT NOT NULL,
                subject TEXT NOT NULL,
                data TEXT NOT NULL
            )""",
            "CREATE INDEX audit_by_subject ON audit_log (subject, seq)",
            """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
               BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
            """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
               BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
        ),
    ),
)

MIGRATIONS = (
    *MIGRATIONS,
    Migration(
        version=4,
        description="audit entries carry their own id, so a batch written twice is stored once",
        statements=(
            # Rows already logged keep a NULL id: the triggers refuse rewriting them, and
            # NULLs never conflict in a unique index.
            "ALTER TABLE audit_log ADD COLUMN entry_id TEXT",
            "CREATE UNIQUE INDEX audit_by_entry_id ON audit_log (entry_id)",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def path_from_url(url: str) -> str:
    """``sqlite:///relative/file`` or ``sqlite:////absolute/file`` (the usual URL forms)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError("not a sqlite:/// storage url")
    path = url[len(prefix) :]
    if not path:
        raise ValueError("the sqlite url names no file")
    return path


class SqliteTicketDb:
    """Blocking store; use it from one thread at a time (the async wrapper guarantees it)."""

    def __init__(
        self,
        path: str | Path,
        *,
        migrations: Sequence[Migration] = MIGRATIONS,
        synchronous: Synchronous = "NORMAL",
    ) -> None:
        # In WAL mode synchronous=NORMAL keeps every committed transaction across a crash of
        # the process; only an OS crash or power loss may roll back the last commits. FULL
        # closes that gap at the price of an fsync per commit.
        in_memory = str(path) == ":memory:"
        if not in_memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        try:
            self._conn.execute("PRAGMA busy_timeout = 5000")
            if not in_memory:
                mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreVersionError(f"cannot switch the ticket store to WAL ({mode})")
            self._conn.execute(f"PRAGMA synchronous = {synchronous}")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._migrate(migrations)
        except BaseException:
            self._conn.close()
            raise

    # -- schema -----------------------------------------------------------------------------

    def schema_version(self) -> int:
        row = self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        if row is None:
            return 0
        version = self._conn.execute("SELECT version FROM schema_version").fetchone()
        return int(version[0]) if version is not None else 0

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        for migration in pending(migrations, self.schema_version()):
            with self._transaction():
                if migration.version == 1:
                    self._conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                    self._conn.execute("INSERT INTO schema_version (version) VALUES (0)")
                for statement in migration.statements:
                    self._conn.execute(statement)
                self._conn.execute("UPDATE schema_version SET version = ?", (migration.version,))

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    # -- writes -----------------------------------------------------------------------------

    def create(self, transition: Transition) -> None:
        with self._transaction():
            self._create(transition)

    def _create(self, transition: Transition) -> None:
        check_new(transition)
        ticket = transition.ticket
        try:
            self._conn.execute(
                f"INSERT INTO tickets ({TICKET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ticket_row(ticket),
            )
        except sqlite3.IntegrityError as exc:
            raise TicketExists(f"ticket {ticket.id} already exists") from exc
        self._insert_event(transition.event)

    def append_event(self, transition: Transition) -> None:
        with self._transaction():
            self._append(transition)

    def create_then(self, transition: Transition, change: TicketChange) -> Transition:
        """Create a ticket and apply its first change in one transaction: a transfer key
        pressed with no ticket yet costs one trip to the disk before the INVITE, not two."""
        with self._transaction():
            self._create(transition)
            following = change(transition.ticket)
            self._append(following)
            return following

    def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        """One transaction for a batch: call events arrive in bursts under load."""
        with self._transaction():
            self._conn.executemany(insert_audit_sql("?"), [audit_row(e) for e in entries])

    def audit(self, subject: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest first."""
        sql, args = audit_sql(subject, limit, "?")
        return [audit_from_row(row) for row in self._conn.execute(sql, args).fetchall()]

    def update(self, ticket_id: str, change: TicketChange) -> Transition:
        with self._transaction():
            ticket = self.get(ticket_id)
            if ticket is None:
                raise TicketNotFound(f"no ticket {ticket_id}")
            transition = change(ticket)
            self._append(transition)
            return transition

    def _append(self, transition: Transition) -> None:
        check_follows(transition)
        ticket = transition.ticket
        cursor = self._conn.execute(update_sql("?"), update_row(ticket))
        if cursor.rowcount != 1:
            row = self._conn.execute(
                "SELECT version FROM tickets WHERE id = ?", (ticket.id,)
            ).fetchone()
            if row is None:
                raise TicketNotFound(f"no ticket {ticket.id}")
            raise ConcurrentUpdate(
                f"ticket {ticket.id} is at version {row[0]}, not {ticket.version - 1}"
            )
        self._insert_event(transition.event)

    def _insert_event(self, event: TicketEvent) -> None:
        self._conn.execute(
            f"INSERT INTO ticket_events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            event_row(event),
        )

    # -- reads ------------------------------------------------------------------------------

    def get(self, ticket_id: str) -> Ticket | None:
        row = self._conn.execute("SELECT body FROM tickets WHERE id = ?", (ticket_id,)).fetchone()
        return Ticket.model_validate_json(row[0]) if row is not None else None

    def list_tickets(self, query: TicketQuery) -> list[Ticket]:
        sql, params = list_sql(query, "?")
        rows = self._conn.execute(sql, params).fetchall()
        return [Ticket.model_validate_json(row[0]) for row in rows]

    def events_for(self, ticket_id: str) -> list[TicketEvent]:
        rows = self._conn.execute(
            "SELECT seq, kind, at, actor, data FROM ticket_events WHERE ticket_id = ? ORDER BY seq",
            (ticket_id,),
        ).fetchall()
        return [event_from_row(ticket_id, row) for row in rows]

    def close(self) -> None:
        self._conn.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception; nests as a no-op."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._outer = False

    def __enter__(self) -> None:
        self._outer = not self._conn.in_transaction
        if self._outer:
            self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._outer:
            return
        if exc_type is None:
            self._conn.execute("COMMIT")
        else:
            self._conn.execute("ROLLBACK")


class SqliteTicketStore:
    """The async :class:`~bridge.tickets.store.TicketStore` over one SQLite file."""

    def __init__(self, db: SqliteTicketDb, executor: ThreadPoolExecutor) -> None:
        self._db = db
        self._executor = executor

    @classmethod
    async def open(
        cls, path: str | Path, *, synchronous: Synchronous = "NORMAL"
    ) -> SqliteTicketStore:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ticket-store")
        loop = asyncio.get_running_loop()
        try:
            db = await loop.run_in_executor(
                executor, partial(SqliteTicketDb, path, synchronous=synchronous)
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(db, executor)

    async def _run(self, fn: partial[T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def create(self, transition: Transition) -> None:
        await self._run(partial(self._db.create, transition))

    async def get(self, ticket_id: str) -> Ticket | None:
        return await self._run(partial(self._db.get, ticket_id))

    async def list_tickets(self, query: TicketQuery) -> list[Ticket]:
        return await self._run(partial(self._db.list_tickets, query))

    async def append_event(self, transition: Transition) -> None:
        await self._run(partial(self._db.append_event, transition))

    async def update(self, ticket_id: str, change: TicketChange) -> Transition:
        return await self._run(partial(self._db.update, ticket_id, change))

    async def create_then(self, transition: Transition, change: TicketChange) -> Transition:
        return await self._run(partial(self._db.create_then, transition, change))

    async def events_for(self, ticket_id: str) -> list[TicketEvent]:
        return await self._run(partial(self._db.events_for, ticket_id))

    async def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        await self._run(partial(self._db.append_audit, entries))

    async def audit(self, subject: str | None = None, limit: int = 100) -> list[AuditEntry]:
        return await self._run(partial(self._db.audit, subject, limit))

    async def schema_version(self) -> int:
        return await self._run(partial(self._db.schema_version))

    async def close(self) -> None:
        try:
            await self._run(partial(self._db.close))
        finally:
            self._executor.shutdown(wait=True)
