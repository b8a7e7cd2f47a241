"""SQLite ticket store: migrations, restart survival, filters, atomic appends."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.tickets import lifecycle
from bridge.tickets.errors import (
    ConcurrentUpdate,
    InvalidTransition,
    StoreVersionError,
    TicketExists,
    TicketNotFound,
)
from bridge.tickets.lifecycle import EventKind, Transition
from bridge.tickets.model import Ticket, TicketDraft, TicketState
from bridge.tickets.sqlite_store import (
    LATEST_VERSION,
    MIGRATIONS,
    SqliteTicketDb,
    SqliteTicketStore,
    path_from_url,
)
from bridge.tickets.store import TicketQuery

NOW = 1_700_000_000.0


def new_ticket(
    ticket_id: str,
    *,
    now: float = NOW,
    origin: str = "12345",
    category: str = "public_order",
    destination: str | None = "110",
) -> Transition:
    draft = TicketDraft(
        origin=origin,
        category=category,
        caller_number="13800000000",
        summary="noise at night",
        destination=destination,
    )
    return lifecycle.create(draft, ticket_id=ticket_id, actor="seat-1", now=now)


@contextlib.contextmanager
def opened(path: Path, **kwargs: object) -> Iterator[SqliteTicketDb]:
    db = SqliteTicketDb(path, **kwargs)  # type: ignore[arg-type]
    try:
        yield db
    finally:
        db.close()


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_first_open_creates_the_file_in_wal_mode_at_the_latest_schema(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "tickets.sqlite3"
    with opened(path) as db:
        assert db.schema_version() == LATEST_VERSION
    conn = raw(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(LATEST_VERSION,)]
    finally:
        conn.close()


def test_migrating_an_old_file_backfills_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    with opened(path, migrations=MIGRATIONS[:1]) as db:
        assert db.schema_version() == 1
    conn = raw(path)
    for ticket_id, destination in (("T1", "110"), ("T2", "12313")):
        ticket = new_ticket(ticket_id, destination=destination).ticket
        conn.execute(  # what a release at schema version 1 wrote
            "INSERT INTO tickets (id, version, state, origin, category, created_at, updated_at,"
            " body) VALUES (?, 1, 'draft', ?, ?, ?, ?, ?)",
            (ticket_id, ticket.origin, ticket.category, NOW, NOW, ticket.model_dump_json()),
        )
    conn.close()
    with opened(path) as db:
        assert db.schema_version() == LATEST_VERSION
        found = db.list_tickets(TicketQuery(destination="110"))
        assert [t.id for t in found] == ["T1"]


def test_reopening_a_migrated_file_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    with opened(path) as db:
        db.create(new_ticket("T1"))
    with opened(path) as db, opened(path) as again:
        assert db.schema_version() == again.schema_version() == LATEST_VERSION
        assert again.get("T1") is not None


def test_a_file_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    with opened(path):
        pass
    conn = raw(path)
    conn.execute("UPDATE schema_version SET version = 99")
    conn.close()
    with pytest.raises(StoreVersionError, match="99"):
        SqliteTicketDb(path)


def test_tickets_and_events_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    with opened(path) as db:
        db.create(new_ticket("T1"))
        db.update(
            "T1",
            lambda t: lifecycle.request_transfer(
                t, target="sip:110@pbx", mode="blind", actor="seat-1", now=NOW + 1
            ),
        )
        db.update("T1", lambda t: lifecycle.mark_ringing(t, actor="bridge", now=NOW + 2))
        before = db.get("T1")
    with opened(path) as db:
        after = db.get("T1")
        events = db.events_for("T1")
    assert after == before
    assert after is not None
    assert after.state is TicketState.RINGING
    assert [(e.seq, e.kind) for e in events] == [
        (1, EventKind.CREATED),
        (2, EventKind.TRANSFER_REQUESTED),
        (3, EventKind.RINGING),
    ]
    assert events[1].data == {"target": "sip:110@pbx", "mode": "blind", "attempt": 1}
    assert events[2].at == NOW + 2
    assert events[2].actor == "bridge"


def test_list_filters_and_orders_newest_first(tmp_path: Path) -> None:
    with opened(tmp_path / "t.sqlite3") as db:
        db.create(new_ticket("T1", now=NOW, category="criminal"))
        db.create(new_ticket("T2", now=NOW + 10, origin="110", category="health"))
        db.create(new_ticket("T3", now=NOW + 20, category="criminal"))
        db.update(
            "T3",
            lambda t: lifecycle.request_transfer(t, target="x", mode="blind", actor="a", now=NOW),
        )

        def ids(**filters: object) -> list[str]:
            return [t.id for t in db.list_tickets(TicketQuery(**filters))]  # type: ignore[arg-type]

        assert ids() == ["T3", "T2", "T1"]
        assert ids(origin="12345") == ["T3", "T1"]
        assert ids(category="health") == ["T2"]
        assert ids(state=TicketState.TRANSFER_REQUESTED) == ["T3"]
        assert ids(since=NOW + 10) == ["T3", "T2"]
        assert ids(limit=1) == ["T3"]
        assert ids(origin="12345", category="criminal", since=NOW + 5) == ["T3"]
        assert ids(origin="999") == []


def test_list_limit_is_bounded() -> None:
    with pytest.raises(ValueError, match="limit"):
        TicketQuery(limit=0)
    with pytest.raises(ValueError, match="limit"):
        TicketQuery(limit=10_000)


def test_duplicate_ids_and_missing_tickets_are_reported(tmp_path: Path) -> None:
    with opened(tmp_path / "t.sqlite3") as db:
        db.create(new_ticket("T1"))
        with pytest.raises(TicketExists):
            db.create(new_ticket("T1"))
        with pytest.raises(TicketNotFound):
            db.update("T404", lambda t: lifecycle.accept(t, actor="a", now=NOW))
        assert db.get("T404") is None
        assert db.events_for("T404") == []


def test_append_with_a_stale_snapshot_is_a_conflict(tmp_path: Path) -> None:
    with opened(tmp_path / "t.sqlite3") as db:
        created = new_ticket("T1")
        db.create(created)
        first = lifecycle.request_transfer(
            created.ticket, target="a", mode="blind", actor="x", now=NOW
        )
        second = lifecycle.request_transfer(
            created.ticket, target="b", mode="blind", actor="y", now=NOW
        )
        db.append_event(first)
        with pytest.raises(ConcurrentUpdate):
            db.append_event(second)
        stored = db.get("T1")
        assert stored is not None
        assert stored.target == "a"
        assert len(db.events_for("T1")) == 2


def test_a_refused_change_leaves_ticket_and_log_untouched(tmp_path: Path) -> None:
    with opened(tmp_path / "t.sqlite3") as db:
        db.create(new_ticket("T1"))
        with pytest.raises(InvalidTransition):
            db.update("T1", lambda t: lifecycle.accept(t, actor="a", now=NOW))
        stored = db.get("T1")
        assert stored is not None
        assert stored.version == 1
        assert len(db.events_for("T1")) == 1


def test_create_then_stores_the_ticket_and_its_first_change_together(tmp_path: Path) -> None:
    def requested(t: Ticket) -> Transition:
        return lifecycle.request_transfer(t, target="110", mode="blind", actor="a", now=NOW)

    with opened(tmp_path / "t.sqlite3") as db:
        stored = db.create_then(new_ticket("T1"), requested)
        assert stored.ticket.state is TicketState.TRANSFER_REQUESTED
        assert [e.kind for e in db.events_for("T1")] == [
            EventKind.CREATED,
            EventKind.TRANSFER_REQUESTED,
        ]
        with pytest.raises(InvalidTransition):
            db.create_then(new_ticket("T2"), lambda t: lifecycle.accept(t, actor="a", now=NOW))
        assert db.get("T2") is None, "a refused first change stores nothing at all"


def test_the_event_log_refuses_rewrites(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    with opened(path) as db:
        db.create(new_ticket("T1"))
    conn = raw(path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE ticket_events SET actor = 'mallory'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM ticket_events")
    finally:
        conn.close()


def test_storage_url_forms() -> None:
    assert path_from_url("sqlite:///var/bridge.sqlite3") == "var/bridge.sqlite3"
    assert path_from_url("sqlite:////srv/bridge.sqlite3") == "/srv/bridge.sqlite3"
    with pytest.raises(ValueError, match="sqlite"):
        path_from_url("postgresql://db/bridge")
    with pytest.raises(ValueError, match="no file"):
        path_from_url("sqlite:///")


async def test_async_store_runs_on_its_own_thread_and_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    store = await SqliteTicketStore.open(path)
    threads: list[str] = []

    def ring(ticket: Ticket) -> Transition:
        threads.append(threading.current_thread().name)
        moved = lifecycle.request_transfer(ticket, target="x", mode="blind", actor="a", now=NOW)
        return moved

    try:
        await store.create(new_ticket("T1"))
        step = await store.update("T1", ring)
        await store.append_event(lifecycle.mark_ringing(step.ticket, actor="bridge", now=NOW))
        assert await store.schema_version() == LATEST_VERSION
    finally:
        await store.close()
    assert threads
    assert threads[0].startswith("ticket-store")
    assert threads[0] != threading.current_thread().name

    reopened = await SqliteTicketStore.open(path)
    try:
        ticket = await reopened.get("T1")
        events = await reopened.events_for("T1")
        listed = await reopened.list_tickets(TicketQuery(state=TicketState.RINGING))
    finally:
        await reopened.close()
    assert ticket is not None
    assert ticket.state is TicketState.RINGING
    assert [e.kind for e in events] == [
        EventKind.CREATED,
        EventKind.TRANSFER_REQUESTED,
        EventKind.RINGING,
    ]
    assert [t.id for t in listed] == ["T1"]


async def test_in_memory_store_works_for_tests_of_other_modules() -> None:
    store = await SqliteTicketStore.open(":memory:")
    try:
        await store.create(new_ticket("T1"))
        assert (await store.get("T1")) is not None
    finally:
        await store.close()
