"""The ticket store contract on both databases: SQLite (embedded) and PostgreSQL (several nodes).

Each contract test runs once per store, through :func:`bridge.tickets.backends.open_store` as
the service opens it; the PostgreSQL runs need a local server (`make peers` installs one) and
get a new database each. Then what only PostgreSQL has: its migrations, its start-up errors,
and bridge nodes sharing one database.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psycopg
import pytest
from integration.bridge_under_test import ADMIN_HEADERS, BridgeUnderTest
from peers.ports import PortAllocator
from peers.postgres import PASSWORD, PostgresCluster
from peers.process import eventually
from peers.sipp import SippRun

from bridge.tickets import lifecycle, sqlite_store
from bridge.tickets import postgres_store as pg
from bridge.tickets.backends import open_store
from bridge.tickets.errors import (
    ConcurrentUpdate,
    InvalidTransition,
    StoreUnavailable,
    StoreVersionError,
    TicketExists,
    TicketNotFound,
)
from bridge.tickets.lifecycle import EventKind, Transition
from bridge.tickets.model import Ticket, TicketDraft, TicketState
from bridge.tickets.store import AuditEntry, TicketDatabase, TicketQuery

NOW = 1_700_000_000.0
UPDATES_PER_NODE = 15


@dataclass(frozen=True, slots=True, kw_only=True)
class Backend:
    name: str
    url: str
    base_dir: Path

    async def open(self) -> TicketDatabase:
        return await open_store(self.url, base_dir=self.base_dir)

    def execute(self, sql: str) -> None:
        """Run ``sql`` on a connection of the database's own client, past the store."""
        if self.name == "sqlite":
            conn = sqlite3.connect(self.base_dir / "tickets.sqlite3", isolation_level=None)
            try:
                conn.execute(sql)
            finally:
                conn.close()
        else:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(sql.encode())

    @property
    def error(self) -> type[Exception]:
        return sqlite3.DatabaseError if self.name == "sqlite" else psycopg.Error


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.peers("postgres"))])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend(name="sqlite", url="sqlite:///tickets.sqlite3", base_dir=tmp_path)
    url = request.getfixturevalue("postgres_url")
    return Backend(name="postgres", url=url, base_dir=tmp_path)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[TicketDatabase]:
    opened = await backend.open()
    yield opened
    await opened.close()


def new_ticket(
    ticket_id: str, *, now: float = NOW, origin: str = "12345", category: str = "public_order"
) -> Transition:
    draft = TicketDraft(
        origin=origin,
        category=category,
        caller_number="13800000000",
        summary="夜间噪音",
        destination="110",
    )
    return lifecycle.create(draft, ticket_id=ticket_id, actor="seat-1", now=now)


def requested(ticket: Ticket) -> Transition:
    return lifecycle.request_transfer(ticket, target="110", mode="blind", actor="a", now=NOW + 1)


async def accepted(store: TicketDatabase, ticket_id: str) -> Ticket:
    await store.create_then(new_ticket(ticket_id), requested)
    await store.update(
        ticket_id, lambda t: lifecycle.mark_transferred(t, actor="bridge", now=NOW + 2)
    )
    step = await store.update(ticket_id, lambda t: lifecycle.accept(t, actor="110", now=NOW + 3))
    return step.ticket


# -- the contract, on both stores -------------------------------------------------------------


async def test_tickets_events_and_audit_survive_a_restart(backend: Backend) -> None:
    store = await backend.open()
    try:
        assert await store.schema_version() >= 1
        await store.create_then(new_ticket("T1"), requested)
        await store.update("T1", lambda t: lifecycle.mark_ringing(t, actor="bridge", now=NOW + 2))
        await store.append_audit(
            [AuditEntry(at=NOW, actor="api", kind="dialplan.reload", subject="plan.toml", data={})]
        )
        before = await store.get("T1")
    finally:
        await store.close()
    store = await backend.open()
    try:
        after = await store.get("T1")
        events = await store.events_for("T1")
        audit = await store.audit()
    finally:
        await store.close()
    assert after == before
    assert after is not None
    assert after.state is TicketState.RINGING
    assert after.summary == "夜间噪音"
    assert [(e.seq, e.kind) for e in events] == [
        (1, EventKind.CREATED),
        (2, EventKind.TRANSFER_REQUESTED),
        (3, EventKind.RINGING),
    ]
    assert events[1].data == {"target": "110", "mode": "blind", "attempt": 1}
    assert (events[2].at, events[2].actor) == (NOW + 2, "bridge")
    assert [(e.kind, e.subject) for e in audit] == [("dialplan.reload", "plan.toml")]


async def test_list_filters_and_orders_newest_first(store: TicketDatabase) -> None:
    await store.create(new_ticket("T1", now=NOW, category="criminal"))
    await store.create(new_ticket("T2", now=NOW + 10, origin="110", category="health"))
    await store.create(new_ticket("T3", now=NOW + 20, category="criminal"))
    await store.update("T3", requested)

    async def ids(**filters: object) -> list[str]:
        return [t.id for t in await store.list_tickets(TicketQuery(**filters))]  # type: ignore[arg-type]

    assert await ids() == ["T3", "T2", "T1"]
    assert await ids(origin="12345") == ["T3", "T1"]
    assert await ids(category="health") == ["T2"]
    assert await ids(destination="110", state=TicketState.TRANSFER_REQUESTED) == ["T3"]
    assert await ids(since=NOW + 10) == ["T3", "T2"]
    assert await ids(limit=1) == ["T3"]
    assert await ids(origin="999") == []


async def test_duplicate_ids_and_missing_tickets_are_reported(store: TicketDatabase) -> None:
    await store.create(new_ticket("T1"))
    with pytest.raises(TicketExists):
        await store.create(new_ticket("T1"))
    with pytest.raises(TicketExists):
        await store.create_then(new_ticket("T1"), requested)
    with pytest.raises(TicketNotFound):
        await store.update("T404", requested)
    with pytest.raises(TicketNotFound):
        await store.append_event(requested(new_ticket("T404").ticket))
    assert await store.get("T404") is None
    assert await store.events_for("T404") == []
    assert len(await store.events_for("T1")) == 1


async def test_append_with_a_stale_snapshot_is_a_conflict(store: TicketDatabase) -> None:
    created = new_ticket("T1")
    await store.create(created)
    first, second = (
        lifecycle.request_transfer(created.ticket, target=t, mode="blind", actor="x", now=NOW)
        for t in ("a", "b")
    )
    await store.append_event(first)
    with pytest.raises(ConcurrentUpdate):
        await store.append_event(second)
    stored = await store.get("T1")
    assert stored is not None
    assert stored.target == "a"
    assert len(await store.events_for("T1")) == 2


async def test_a_refused_change_stores_nothing(store: TicketDatabase) -> None:
    def refused(t: Ticket) -> Transition:
        return lifecycle.accept(t, actor="a", now=NOW)

    await store.create(new_ticket("T1"))
    with pytest.raises(InvalidTransition):
        await store.update("T1", refused)
    stored = await store.get("T1")
    assert stored is not None
    assert stored.version == 1
    assert len(await store.events_for("T1")) == 1
    with pytest.raises(InvalidTransition):
        await store.create_then(new_ticket("T2"), refused)
    assert await store.get("T2") is None, "a refused first change stores nothing at all"


async def test_the_audit_log_reads_newest_first_by_subject(store: TicketDatabase) -> None:
    def entry(kind: str, subject: str) -> AuditEntry:
        return AuditEntry(at=NOW, actor="bridge", kind=kind, subject=subject, data={"呼叫": 1})

    await store.append_audit([entry("call.ringing", "c1"), entry("call.ringing", "c2")])
    await store.append_audit([entry("call.answered", "c1")])
    await store.append_audit([])
    by_c1 = await store.audit("c1")
    assert [e.kind for e in by_c1] == ["call.answered", "call.ringing"]
    assert by_c1[0].seq > by_c1[1].seq
    assert by_c1[0].data == {"呼叫": 1}
    assert [e.subject for e in await store.audit(limit=2)] == ["c1", "c2"]


async def test_an_audit_batch_written_twice_is_stored_once(store: TicketDatabase) -> None:
    """The audit writer writes a batch again when its commit's acknowledgement was lost."""
    batch = [
        AuditEntry(at=NOW + n, actor="bridge", kind="call.ringing", subject=f"c{n}", data={})
        for n in range(3)
    ]
    await store.append_audit(batch)
    await store.append_audit(
        [*batch[1:], AuditEntry(at=NOW, actor="b", kind="k", subject="c3", data={})]
    )
    stored = await store.audit()
    assert [e.subject for e in stored] == ["c3", "c2", "c1", "c0"]
    assert [e.entry_id for e in reversed(stored[1:])] == [e.entry_id for e in batch]


async def old_audit_database(backend: Backend) -> None:
    """A database at the schema before audit entries had ids, with one entry logged."""
    if backend.name == "sqlite":
        sqlite_store.SqliteTicketDb(
            backend.base_dir / "tickets.sqlite3", migrations=sqlite_store.MIGRATIONS[:3]
        ).close()
    else:
        await (await pg.PostgresTicketStore.open(backend.url, migrations=pg.MIGRATIONS[:2])).close()
    backend.execute(
        "INSERT INTO audit_log (at, actor, kind, subject, data)"
        " VALUES (1, 'bridge', 'call.ringing', 'old', '{}')"
    )


async def test_audit_entries_logged_before_ids_are_kept_and_stay_append_only(
    backend: Backend,
) -> None:
    await old_audit_database(backend)
    store = await backend.open()
    try:
        entry = AuditEntry(at=NOW, actor="bridge", kind="call.answered", subject="new", data={})
        await store.append_audit([entry])
        await store.append_audit([entry])
        stored = await store.audit()
    finally:
        await store.close()
    assert [(e.subject, e.entry_id) for e in stored] == [("new", entry.entry_id), ("old", None)]
    for sql in ("UPDATE audit_log SET entry_id = 'forged'", "DELETE FROM audit_log"):
        with pytest.raises(backend.error, match="append-only"):
            backend.execute(sql)


async def test_the_event_and_audit_logs_refuse_rewrites(
    backend: Backend, store: TicketDatabase
) -> None:
    await store.create(new_ticket("T1"))
    await store.append_audit(
        [AuditEntry(at=NOW, actor="bridge", kind="call.ringing", subject="c1", data={})]
    )
    for sql in (
        "UPDATE ticket_events SET actor = 'mallory'",
        "DELETE FROM ticket_events",
        "UPDATE audit_log SET actor = 'mallory'",
        "DELETE FROM audit_log",
    ):
        with pytest.raises(backend.error, match="append-only"):
            backend.execute(sql)
    if backend.name == "postgres":
        for table in ("ticket_events", "audit_log"):
            with pytest.raises(backend.error, match="append-only"):
                backend.execute(f"TRUNCATE {table} CASCADE")
    assert [e.actor for e in await store.events_for("T1")] == ["seat-1"]
    assert len(await store.audit()) == 1


async def test_a_database_from_a_newer_release_is_refused(backend: Backend) -> None:
    await (await backend.open()).close()
    backend.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreVersionError, match="99"):
        await backend.open()


async def test_two_nodes_changing_one_ticket_take_turns(backend: Backend) -> None:
    """Both nodes' changes land, each on the version the other left: none is lost or refused."""
    first, second = await backend.open(), await backend.open()
    try:
        start = await accepted(first, "T1")

        async def node(store: TicketDatabase, name: str) -> None:
            for n in range(UPDATES_PER_NODE):
                await store.update(
                    "T1",
                    lambda t, n=n: lifecycle.add_feedback(
                        t, outcome=f"{name}-{n}", actor=name, now=NOW + 10
                    ),
                )

        await asyncio.gather(node(first, "a"), node(second, "b"))
        ticket = await second.get("T1")
        events = await first.events_for("T1")
    finally:
        await first.close()
        await second.close()
    assert ticket is not None
    assert ticket.version == start.version + 2 * UPDATES_PER_NODE
    assert [e.seq for e in events] == list(range(1, ticket.version + 1))
    outcomes = [f.outcome for f in ticket.feedback]
    assert sorted(outcomes) == sorted(
        f"{name}-{n}" for name in "ab" for n in range(UPDATES_PER_NODE)
    )
    assert [e.data["outcome"] for e in events[start.version :]] == outcomes
    for name in "ab":
        mine = [o for o in outcomes if o.startswith(name)]
        assert mine == [f"{name}-{n}" for n in range(UPDATES_PER_NODE)]


# -- PostgreSQL only ------------------------------------------------------------------------


@pytest.mark.peers("postgres")
async def test_postgres_migrates_an_older_database_and_nodes_migrate_once(
    postgres_url: str,
) -> None:
    old = await pg.PostgresTicketStore.open(postgres_url, migrations=pg.MIGRATIONS[:1])
    try:
        assert await old.schema_version() == 1
        await old.create(new_ticket("T1"))
    finally:
        await old.close()
    nodes = await asyncio.gather(*(pg.PostgresTicketStore.open(postgres_url) for _ in range(3)))
    try:
        assert [await n.schema_version() for n in nodes] == [pg.LATEST_VERSION] * 3
        assert await nodes[0].get("T1") is not None
        await nodes[1].append_audit(
            [AuditEntry(at=NOW, actor="bridge", kind="call.ringing", subject="c1", data={})]
        )
        assert len(await nodes[2].audit("c1")) == 1
    finally:
        for n in nodes:
            await n.close()


@pytest.mark.peers("postgres")
async def test_a_node_holds_no_more_postgres_connections_than_configured(
    postgres_url: str, tmp_path: Path
) -> None:
    """Several nodes share the server's connection limit: a node's requests queue for its
    own connections rather than open more."""
    store = await open_store(postgres_url, base_dir=tmp_path, max_connections=2)
    assert isinstance(store, pg.PostgresTicketStore)
    try:
        await accepted(store, "T1")
        async with (
            await psycopg.AsyncConnection.connect(postgres_url) as holder,
            # pg_stat_activity stays as first read for the rest of a transaction: watch from
            # outside the holder's.
            await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as watcher,
        ):
            await holder.execute("SELECT 1 FROM tickets WHERE id = 'T1' FOR UPDATE")
            updates = [
                asyncio.create_task(
                    store.update(
                        "T1",
                        lambda t, n=n: lifecycle.add_feedback(
                            t, outcome=f"call back {n}", actor="110", now=NOW + 10
                        ),
                    )
                )
                for n in range(6)
            ]

            async def blocked() -> tuple[int, int, int]:
                """(connections waiting on the row lock, requests queued in the node, the
                node's connections)"""
                cursor = await watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                row = await cursor.fetchone()
                stats = store._pool.get_stats()
                locked = int(row[0]) if row else 0
                return locked, stats.get("requests_waiting", 0), stats.get("pool_size", 0)

            # The pool grows one connection at a time while requests queue: wait until it
            # has stopped growing (at its limit) or every update holds a connection.
            state = await blocked()
            deadline = asyncio.get_running_loop().time() + 10
            while asyncio.get_running_loop().time() < deadline:
                locked, queued, size = state
                if locked == 6 or (locked + queued == 6 and locked == size == 2):
                    break
                state = await blocked()
            await holder.rollback()
        await asyncio.gather(*updates)
        ticket = await store.get("T1")
    finally:
        await store.close()
    assert state == (2, 4, 2), "two updates on the node's two connections, four queued"
    assert ticket is not None
    assert len(ticket.feedback) == 6


async def test_an_unreachable_postgres_is_one_line_naming_host_and_port(
    ports: PortAllocator,
) -> None:
    port = ports.port()  # free: nothing listens there
    url = f"postgresql://bridge:hunter2-secret@127.0.0.1:{port}/bridge"
    with pytest.raises(StoreUnavailable) as caught:
        await open_store(url, base_dir=Path("."))
    detail = caught.value.detail
    assert f"127.0.0.1:{port}" in detail
    assert "refused" in detail.lower()
    assert "\n" not in detail
    assert "hunter2" not in detail


async def test_a_malformed_postgres_url_is_one_line() -> None:
    with pytest.raises(StoreUnavailable, match="not a PostgreSQL URL") as caught:
        await open_store("postgresql://bridge:pw@db/bridge?no_such_option=1", base_dir=Path("."))
    assert "\n" not in caught.value.detail


@pytest.mark.peers("postgres")
async def test_a_wrong_postgres_password_is_one_line(postgres: PostgresCluster) -> None:
    url = postgres.url(password="wrong-" + PASSWORD)
    with pytest.raises(StoreUnavailable) as caught:
        await open_store(url, base_dir=Path("."))
    detail = caught.value.detail
    assert f"127.0.0.1:{postgres.port}" in detail
    assert "password authentication failed" in detail
    assert "\n" not in detail
    assert PASSWORD not in detail


async def test_bridge_run_reports_an_unreachable_database_in_one_line(
    tmp_path: Path, ports: PortAllocator
) -> None:
    dead = ports.port()
    node = BridgeUnderTest(
        tmp_path,
        ports,
        carrier_port=ports.port(),
        pbx_ports=[ports.port()],
        storage_url=f"postgresql://bridge:pw@127.0.0.1:{dead}/bridge",
    )
    try:
        run = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bridge", "run", "--config", str(node.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        await node.close()
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if "Traceback" in line or "bridge:" in line]
    assert errors == [
        f"bridge: cannot open the ticket database postgresql://bridge@127.0.0.1:{dead}/bridge:"
        " Connection refused"
    ], run.stderr


@pytest.mark.peers("postgres")
async def test_two_bridges_on_one_postgres_database_serve_the_same_tickets(
    bridge: Callable[..., Awaitable[BridgeUnderTest]],
    ports: PortAllocator,
    postgres_url: str,
) -> None:
    nodes = [
        await bridge(carrier_port=ports.port(), pbx_ports=[ports.port()], storage_url=postgres_url)
        for _ in range(2)
    ]
    draft = {"origin": "12345", "category": "criminal", "summary": "呼救声", "destination": "110"}
    async with aiohttp.ClientSession(headers=ADMIN_HEADERS) as session:
        async with session.post(f"{nodes[0].http_url}/api/v1/tickets", json=draft) as created:
            assert created.status == 201, await created.text()
            ticket_id = (await created.json())["ticket"]["id"]
        async with session.get(f"{nodes[1].http_url}/api/v1/tickets/{ticket_id}") as fetched:
            assert fetched.status == 200
            body = await fetched.json()
        async with session.get(f"{nodes[1].http_url}/api/v1/tickets?origin=12345") as listed:
            assert [t["id"] for t in (await listed.json())["tickets"]] == [ticket_id]
    assert body["ticket"]["summary"] == "呼救声"
    assert [e["kind"] for e in body["events"]] == ["created"]


# -- the store on /metrics ----------------------------------------------------------------------


async def nothing_pending(node: BridgeUnderTest) -> bool:
    return (await storage_samples(node.http_url))["bridge_audit_pending"] == 0


async def storage_samples(url: str) -> dict[str, float]:
    """The ticket store's samples of ``GET /metrics`` (bridge_storage_*, bridge_audit_pending)."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("bridge_storage_", "bridge_audit_pending")):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


CREATED = 'bridge_storage_operation_seconds_count{operation="create"}'
UNAVAILABLE = 'bridge_storage_errors_total{kind="store_unavailable"}'
IN_USE = 'bridge_storage_connections{state="in_use"}'
IDLE = 'bridge_storage_connections{state="idle"}'
DRAFT = {"origin": "12345", "category": "criminal", "summary": "呼救声", "destination": "110"}


async def test_metrics_time_a_ticket_post_on_sqlite(
    bridge: Callable[..., Awaitable[BridgeUnderTest]], ports: PortAllocator
) -> None:
    node = await bridge(carrier_port=ports.port(), pbx_ports=[ports.port()])
    before = await storage_samples(node.http_url)
    assert before.get(CREATED, 0) == 0
    assert "bridge_audit_pending" in before
    async with (
        aiohttp.ClientSession(headers=ADMIN_HEADERS) as session,
        session.post(f"{node.http_url}/api/v1/tickets", json=DRAFT) as created,
    ):
        assert created.status == 201, await created.text()
    after = await storage_samples(node.http_url)
    assert after[CREATED] == 1
    assert after['bridge_storage_operation_seconds_bucket{operation="create",le="+Inf"}'] == 1
    assert 0 < after['bridge_storage_operation_seconds_sum{operation="create"}'] < 5
    # No pool on SQLite, and no failure.
    assert not [name for name in after if "connections" in name or "waiting" in name]
    assert not [name for name in after if name.startswith("bridge_storage_errors_total")]


@pytest.mark.peers("postgres")
async def test_metrics_show_the_postgres_pool_and_count_a_lost_connection(
    bridge: Callable[..., Awaitable[BridgeUnderTest]],
    ports: PortAllocator,
    postgres_url: str,
) -> None:
    """The bridge's connection is killed while its update waits on a row lock: the request is
    answered 503 and counted once, and the pool's figures show the connection in use."""
    node = await bridge(
        carrier_port=ports.port(), pbx_ports=[ports.port()], storage_url=postgres_url
    )
    async with aiohttp.ClientSession(headers=ADMIN_HEADERS) as session:
        async with session.post(f"{node.http_url}/api/v1/tickets", json=DRAFT) as created:
            assert created.status == 201, await created.text()
            ticket_id = (await created.json())["ticket"]["id"]
        idle = await storage_samples(node.http_url)
        assert idle[CREATED] == 1
        assert idle[IN_USE] == 0
        assert idle[IDLE] >= 1
        assert idle["bridge_storage_requests_waiting"] == 0
        assert idle.get(UNAVAILABLE, 0) == 0
        async with (
            await psycopg.AsyncConnection.connect(postgres_url) as holder,
            await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as watcher,
        ):
            await holder.execute("SELECT 1 FROM tickets WHERE id = %s FOR UPDATE", (ticket_id,))
            feedback = asyncio.create_task(
                session.post(
                    f"{node.http_url}/api/v1/tickets/{ticket_id}/feedback",
                    json={"outcome": "已出警"},
                )
            )
            waiting = "application_name = 'bridge' AND wait_event_type = 'Lock'"
            pids: list[int] = []
            deadline = asyncio.get_running_loop().time() + 10
            while not pids and asyncio.get_running_loop().time() < deadline:
                cursor = await watcher.execute(f"SELECT pid FROM pg_stat_activity WHERE {waiting}")
                pids = [int(row[0]) for row in await cursor.fetchall()]
            assert len(pids) == 1, "the bridge's update waits on the row lock"
            busy = await storage_samples(node.http_url)
            await watcher.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
            async with await feedback as answered:
                assert answered.status == 503, await answered.text()
                assert (await answered.json())["error"] == "store_unavailable"
            await holder.rollback()
    assert busy[IN_USE] == 1
    after = await storage_samples(node.http_url)
    assert after[UNAVAILABLE] == 1
    assert after['bridge_storage_operation_seconds_count{operation="update"}'] == 1


@pytest.mark.peers("postgres", "sipp")
async def test_calls_audit_entries_survive_killed_postgres_connections_exactly_once(
    bridge: Callable[..., Awaitable[BridgeUnderTest]],
    ports: PortAllocator,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bridge's connections are killed while its audit writes wait on a lock, and again
    while idle, as calls go through: once the database is back, the audit log holds every entry
    the calls made, in order, each once (retried, not dropped, not doubled)."""
    calls = 30
    uas = SippRun("uas", workdir=tmp_path, allocator=ports, name="callee", calls=calls).start()
    uac = SippRun(
        "uac", workdir=tmp_path, allocator=ports, name="caller", calls=calls, service="110",
        rate=15, timeout=40, trace_messages=False,
    )  # fmt: skip
    node = await bridge(carrier_port=uac.port, pbx_ports=[uas.port], storage_url=postgres_url)
    service = node.service
    assert service is not None
    queued: list[AuditEntry] = []
    audit = service.audit

    def recorded(entries: list[AuditEntry]) -> None:
        queued.extend(entries)
        audit(entries)

    monkeypatch.setattr(service, "audit", recorded)
    bridge_backends = "application_name = 'bridge' AND pid <> pg_backend_pid()"
    kill = f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {bridge_backends}"
    try:
        await uas.started()
        uac.remote_args(node.sip_address).start()
        async with (
            await psycopg.AsyncConnection.connect(postgres_url) as holder,
            await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as killer,
        ):
            # INSERTs wait behind this lock: each kill below lands on an audit write in flight.
            await holder.execute("LOCK TABLE audit_log IN EXCLUSIVE MODE")

            async def a_write_waits() -> bool:
                cursor = await killer.execute(
                    f"SELECT count(*) FROM pg_stat_activity WHERE {bridge_backends}"
                    " AND wait_event_type = 'Lock'"
                )
                row = await cursor.fetchone()
                return row is not None and row[0] > 0

            for _ in range(2):
                await eventually(a_write_waits, within=10, what="an audit write waits")
                await killer.execute(kill)
            await holder.rollback()
            for _ in range(5):  # and the idle ones, as calls go on
                await asyncio.sleep(0.2)
                await killer.execute(kill)
        (await uac.wait()).assert_ok(successful=calls)
        (await uas.wait()).assert_ok(successful=calls)
        await node.wait_idle()
        await eventually(lambda: nothing_pending(node), within=30, what="audit entries written")
        samples = await storage_samples(node.http_url)
    finally:
        uac.kill()
        uas.kill()
    assert samples[UNAVAILABLE] >= 2, "audit writes failed and were retried"
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT entry_id FROM audit_log ORDER BY seq").fetchall()
    stored = [row[0] for row in rows]
    assert len(queued) >= calls * 3
    assert stored == [entry.entry_id for entry in queued]


@pytest.mark.peers("postgres")
async def test_audit_entries_unwritten_when_the_bridge_stops_are_replayed_by_its_next_start(
    bridge: Callable[..., Awaitable[BridgeUnderTest]],
    ports: PortAllocator,
    postgres_url: str,
) -> None:
    """The database refuses the bridge as dial-plan reloads are audited and the bridge stops:
    the entries wait in the journal beside its config, and the next start writes them."""
    node = await bridge(
        carrier_port=ports.port(), pbx_ports=[ports.port()], storage_url=postgres_url
    )
    journal = node.workdir / "var" / "audit-journal.jsonl"
    server, dbname = postgres_url.rsplit("/", 1)
    assert node.service is not None
    node.service.reload_dialplan_from_signal()
    # From another database: a connection cannot close its own database to connections.
    async with await psycopg.AsyncConnection.connect(
        f"{server}/postgres", autocommit=True
    ) as admin:
        await eventually(lambda: nothing_pending(node), within=10, what="audit entries written")
        await admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (dbname,),
        )
        for _ in range(3):
            node.service.reload_dialplan_from_signal()
        await node.stop()
        kept = [json.loads(line)["kind"] for line in journal.read_text().splitlines()]
        await admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
    assert kept == ["dialplan.reload"] * 3
    await node.start()

    async def replayed() -> bool:
        return not journal.exists() and await nothing_pending(node)

    await eventually(replayed, within=10, what="the journal replayed")
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT kind, count(*) OVER (PARTITION BY entry_id) FROM audit_log")
        assert rows.fetchall() == [("dialplan.reload", 1)] * 4
