"""The ticket store for several bridge nodes: one PostgreSQL database that they all share.

It keeps the SQLite store's contract and its tables' shape (:mod:`bridge.tickets.sql` holds what
the two share), so a node cannot tell which database it has. What differs is who else writes:

* ``update`` locks the ticket's row (``SELECT ... FOR UPDATE``) before reading it, so two
  nodes changing one ticket take turns: both changes land, one after the other, and the change
  function always sees the latest version (``create_then`` holds the row it has just inserted
  until it commits). ``append_event`` takes no lock: a stale snapshot is a
  :class:`~bridge.tickets.errors.ConcurrentUpdate`, as with SQLite.
* Migrations run under an advisory lock, so nodes starting together migrate once. A database
  written by a newer release is refused; the event and audit tables refuse UPDATE, DELETE and
  TRUNCATE by trigger.
* A server that cannot be reached, or that refuses the password, is a one-line
  :class:`~bridge.tickets.errors.StoreUnavailable` naming the address (never the password).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bridge.tickets.errors import ConcurrentUpdate, StoreUnavailable, TicketExists, TicketNotFound
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
from bridge.tickets.store import AuditEntry, PoolFigures, TicketChange, TicketQuery

Connection = psycopg.AsyncConnection[tuple[Any, ...]]

MIGRATION_LOCK = 0x6272_6964_6765
"""The advisory lock key ("bridge") nodes take while they check and migrate the schema."""

CONNECT_TIMEOUT_S = 10
"""Seconds a connection attempt may take, unless the URL sets ``connect_timeout``."""


def _append_only(table: str, message: str) -> tuple[str, ...]:
    return (
        f"""CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
            FOR EACH ROW EXECUTE FUNCTION bridge_refuse_rewrite('{message}')""",
        f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION bridge_refuse_rewrite('{message}')""",
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="tickets, their append-only event log and the indexes of the list filters",
        statements=(
            """CREATE TABLE tickets (
                id TEXT PRIMARY KEY,
                version INTEGER NOT NULL,
                state TEXT NOT NULL,
                origin TEXT NOT NULL,
                category TEXT NOT NULL,
                destination TEXT,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                body TEXT NOT NULL
            )""",
            """CREATE TABLE ticket_events (
                ticket_id TEXT NOT NULL REFERENCES tickets(id),
                seq INTEGER NOT NULL,
                kind TEXT NOT NULL,
                at DOUBLE PRECISION NOT NULL,
                actor TEXT NOT NULL,
                data TEXT NOT NULL,
                PRIMARY KEY (ticket_id, seq)
            )""",
            """CREATE FUNCTION bridge_refuse_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN
                 RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'restrict_violation';
               END $$""",
            *_append_only("ticket_events", "ticket events are append-only"),
            "CREATE INDEX tickets_by_created ON tickets (created_at, id)",
            "CREATE INDEX tickets_by_origin ON tickets (origin, created_at)",
            "CREATE INDEX tickets_by_destination ON tickets (destination, created_at)",
            "CREATE INDEX tickets_by_state ON tickets (state, created_at)",
        ),
    ),
    Migration(
        version=2,
        description="append-only audit log of calls and admin actions",
        statements=(
            """CREATE TABLE audit_log (
                seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                at DOUBLE PRECISION NOT NULL,
                actor TEXT NOT NULL,
                kind TEXT NOT NULL,
                subject TEXT NOT NULL,
                data TEXT NOT NULL
            )""",
            "CREATE INDEX audit_by_subject ON audit_log (subject, seq)",
            *_append_only("audit_log", "the audit log is append-only"),
        ),
    ),
    Migration(
        version=3,
        description="audit entries carry their own id, so a batch written twice is stored once",
        statements=(
            # Adding a column without a default rewrites no row (the trigger stays quiet); the
            # rows already logged keep a NULL id, and NULLs never conflict in a unique index.
            "ALTER TABLE audit_log ADD COLUMN entry_id TEXT",
            "CREATE UNIQUE INDEX audit_by_entry_id ON audit_log (entry_id)",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def describe(url: str) -> str:
    """The URL as a log line may show it: user, host, port and database, no password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://?"
    user = f"{params['user']}@" if params.get("user") else ""
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return f"postgresql://{user}{host}:{port}/{params.get('dbname') or ''}"


def unavailable(url: str, exc: Exception) -> StoreUnavailable:
    """libpq's reason, shortened to its last clause on one line ("Connection refused",
    "password authentication failed for user ...")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[0].rsplit("failed: ", 1)[-1] if lines else type(exc).__name__
    reason = reason.removeprefix("FATAL:").strip()
    return StoreUnavailable(f"cannot open the ticket database {describe(url)}: {reason}")


def connection_options(url: str) -> dict[str, Any]:
    """Autocommit (transactions are explicit), and a bounded connect time and a name in
    ``pg_stat_activity`` unless the URL chose its own."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise StoreUnavailable(f"the storage url is not a PostgreSQL URL: {reason}") from None
    return {
        "autocommit": True,
        "connect_timeout": params.get("connect_timeout", CONNECT_TIMEOUT_S),
        "application_name": params.get("application_name", "bridge"),
    }


async def connect(url: str) -> Connection:
    options = connection_options(url)
    try:
        return await psycopg.AsyncConnection.connect(url, **options)
    except psycopg.OperationalError as exc:
        raise unavailable(url, exc) from None


async def schema_version(conn: Connection) -> int:
    cursor = await conn.execute("SELECT to_regclass('schema_version') IS NOT NULL")
    exists = await cursor.fetchone()
    if exists is None or not exists[0]:
        return 0
    cursor = await conn.execute("SELECT version FROM schema_version")
    row = await cursor.fetchone()
    return int(row[0]) if row is not None else 0


async def migrate(conn: Connection, migrations: Sequence[Migration]) -> None:
    """Each migration in its own transaction, all of them under the advisory lock."""
    await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        for migration in pending(migrations, await schema_version(conn)):
            async with conn.transaction():
                if migration.version == 1:
                    await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                    await conn.execute("INSERT INTO schema_version (version) VALUES (0)")
                for statement in migration.statements:
                    await conn.execute(statement)
                await conn.execute("UPDATE schema_version SET version = %s", (migration.version,))
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))


class PostgresTicketStore:
    """The async :class:`~bridge.tickets.store.TicketDatabase` over a pool of connections."""

    def __init__(self, pool: AsyncConnectionPool[Connection], url: str) -> None:
        self._pool = pool
        self._url = url

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        migrations: Sequence[Migration] = MIGRATIONS,
        max_connections: int = 8,
    ) -> PostgresTicketStore:
        """Connect once to check the server and migrate, then open the pool: a node that
        cannot reach its database or runs an older release fails start-up, not a call."""
        conn = await connect(url)
        try:
            await migrate(conn, migrations)
        finally:
            await conn.close()
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            url,
            kwargs=connection_options(url),
            min_size=1,
            max_size=max_connections,
            open=False,
            # A connection the server dropped (restart, failover) is replaced when it is
            # taken, rather than failing the next ticket request.
            check=AsyncConnectionPool.check_connection,
            name="ticket-store",
        )
        try:
            await pool.open(wait=True, timeout=float(CONNECT_TIMEOUT_S))
        except PoolTimeout as exc:
            await pool.close()
            raise unavailable(url, exc) from None
        return cls(pool, url)

    def pool_figures(self) -> PoolFigures:
        """The pool's connections in use and idle, and the operations queued for one."""
        stats = self._pool.get_stats()
        size = stats.get("pool_size", 0)
        available = stats.get("pool_available", 0)
        return PoolFigures(
            in_use=size - available, idle=available, waiting=stats.get("requests_waiting", 0)
        )

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        """A pooled connection; losing the server mid-way is a StoreUnavailable (503)."""
        try:
            async with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise unavailable(self._url, exc) from exc

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Connection]:
        async with self._connection() as conn, conn.transaction():
            yield conn

    # -- writes -----------------------------------------------------------------------------

    async def create(self, transition: Transition) -> None:
        async with self._transaction() as conn:
            await self._create(conn, transition)

    async def _create(self, conn: Connection, transition: Transition) -> None:
        check_new(transition)
        ticket = transition.ticket
        cursor = await conn.execute(
            f"INSERT INTO tickets ({TICKET_COLUMNS})"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
            ticket_row(ticket),
        )
        if cursor.rowcount != 1:
            raise TicketExists(f"ticket {ticket.id} already exists")
        await self._insert_event(conn, transition.event)

    async def append_event(self, transition: Transition) -> None:
        async with self._transaction() as conn:
            await self._append(conn, transition)

    async def update(self, ticket_id: str, change: TicketChange) -> Transition:
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "SELECT body FROM tickets WHERE id = %s FOR UPDATE", (ticket_id,)
            )
            row = await cursor.fetchone()
            if row is None:
                raise TicketNotFound(f"no ticket {ticket_id}")
            transition = change(Ticket.model_validate_json(row[0]))
            await self._append(conn, transition)
            return transition

    async def create_then(self, transition: Transition, change: TicketChange) -> Transition:
        """As with SQLite: one round of commits before the INVITE, not two."""
        async with self._transaction() as conn:
            await self._create(conn, transition)
            following = change(transition.ticket)
            await self._append(conn, following)
            return following

    async def _append(self, conn: Connection, transition: Transition) -> None:
        check_follows(transition)
        ticket = transition.ticket
        cursor = await conn.execute(update_sql("%s"), update_row(ticket))
        if cursor.rowcount != 1:
            cursor = await conn.execute("SELECT version FROM tickets WHERE id = %s", (ticket.id,))
            row = await cursor.fetchone()
            if row is None:
                raise TicketNotFound(f"no ticket {ticket.id}")
            raise ConcurrentUpdate(
                f"ticket {ticket.id} is at version {row[0]}, not {ticket.version - 1}"
            )
        await self._insert_event(conn, transition.event)

    async def _insert_event(self, conn: Connection, event: TicketEvent) -> None:
        await conn.execute(
            f"INSERT INTO ticket_events ({EVENT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)",
            event_row(event),
        )

    async def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        """One transaction for a batch: call events arrive in bursts under load."""
        if not entries:
            return
        async with self._transaction() as conn, conn.cursor() as cursor:
            await cursor.executemany(insert_audit_sql("%s"), [audit_row(e) for e in entries])

    # -- reads ------------------------------------------------------------------------------

    async def get(self, ticket_id: str) -> Ticket | None:
        async with self._connection() as conn:
            cursor = await conn.execute("SELECT body FROM tickets WHERE id = %s", (ticket_id,))
            row = await cursor.fetchone()
        return Ticket.model_validate_json(row[0]) if row is not None else None

    async def list_tickets(self, query: TicketQuery) -> list[Ticket]:
        sql, params = list_sql(query, "%s")
        async with self._connection() as conn:
            rows = await (await conn.execute(sql, params)).fetchall()
        return [Ticket.model_validate_json(row[0]) for row in rows]

    async def events_for(self, ticket_id: str) -> list[TicketEvent]:
        async with self._connection() as conn:
            cursor = await conn.execute(
                "SELECT seq, kind, at, actor, data FROM ticket_events"
                " WHERE ticket_id = %s ORDER BY seq",
                (ticket_id,),
            )
            rows = await cursor.fetchall()
        return [event_from_row(ticket_id, row) for row in rows]

    async def audit(self, subject: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest first."""
        sql, args = audit_sql(subject, limit, "%s")
        async with self._connection() as conn:
            rows = await (await conn.execute(sql, args)).fetchall()
        return [audit_from_row(row) for row in rows]

    async def schema_version(self) -> int:
        async with self._connection() as conn:
            return await schema_version(conn)

    async def close(self) -> None:
        await self._pool.close()
