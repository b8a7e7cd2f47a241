"""The ticket store on /metrics: writes timed, failures counted once, pool and audit figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.sidecar.metrics import MetricsRegistry
from bridge.storage_metrics import MeasuredStore, export_storage_metrics
from bridge.tickets import lifecycle
from bridge.tickets.errors import ConcurrentUpdate, StoreUnavailable, TicketNotFound
from bridge.tickets.lifecycle import Transition
from bridge.tickets.model import Ticket, TicketDraft
from bridge.tickets.sqlite_store import SqliteTicketStore
from bridge.tickets.store import PoolFigures

NOW = 1_700_000_000.0


def new_ticket(ticket_id: str) -> Transition:
    draft = TicketDraft(origin="12345", category="public_order", summary="夜间噪音")
    return lifecycle.create(draft, ticket_id=ticket_id, actor="seat-1", now=NOW)


def requested(ticket: Ticket) -> Transition:
    return lifecycle.request_transfer(ticket, target="110", mode="blind", actor="a", now=NOW + 1)


def samples(registry: MetricsRegistry, prefix: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in registry.render().splitlines():
        if line.startswith(prefix):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


async def test_writes_are_timed_by_operation_and_conflicts_counted_once(tmp_path: Path) -> None:
    registry = MetricsRegistry()
    store = MeasuredStore(await SqliteTicketStore.open(tmp_path / "t.sqlite3"), registry)
    try:
        await store.create(new_ticket("T1"))
        first = await store.update("T1", requested)
        await store.create_then(new_ticket("T2"), requested)
        stale = lifecycle.mark_ringing(first.ticket, actor="bridge", now=NOW + 2)
        await store.append_event(stale)
        with pytest.raises(ConcurrentUpdate):
            await store.append_event(stale)
        with pytest.raises(TicketNotFound):  # the caller's mistake, not the database's
            await store.update("T404", requested)
        assert (await store.get("T1")) is not None
    finally:
        await store.close()
    seconds = samples(registry, "bridge_storage_operation_seconds_count")
    assert seconds == {
        'bridge_storage_operation_seconds_count{operation="append_event"}': 2,
        'bridge_storage_operation_seconds_count{operation="create"}': 1,
        'bridge_storage_operation_seconds_count{operation="create_then"}': 1,
        'bridge_storage_operation_seconds_count{operation="update"}': 2,
    }
    assert samples(registry, "bridge_storage_errors_total") == {
        'bridge_storage_errors_total{kind="concurrent_update"}': 1
    }


class DownStore:
    """A store whose database is gone: every operation is a StoreUnavailable."""

    def __getattr__(self, name: str) -> Any:
        async def unavailable(*args: object) -> None:
            raise StoreUnavailable("cannot open the ticket database postgresql://db:5432/bridge")

        return unavailable


async def test_an_unavailable_database_counts_reads_and_writes() -> None:
    registry = MetricsRegistry()
    store = MeasuredStore(DownStore(), registry)  # type: ignore[arg-type]
    with pytest.raises(StoreUnavailable):
        await store.get("T1")
    with pytest.raises(StoreUnavailable):
        await store.append_audit([])
    assert samples(registry, "bridge_storage_errors_total") == {
        'bridge_storage_errors_total{kind="store_unavailable"}': 2
    }
    assert samples(registry, "bridge_storage_operation_seconds_count") == {
        'bridge_storage_operation_seconds_count{operation="append_audit"}': 1
    }


class PooledFake:
    def __init__(self) -> None:
        self.figures = PoolFigures(in_use=3, idle=1, waiting=5)

    def pool_figures(self) -> PoolFigures:
        return self.figures


def test_a_pooled_store_shows_its_connections_and_queue() -> None:
    registry = MetricsRegistry()
    pending = [7]
    fake = PooledFake()
    export_storage_metrics(  # type: ignore[arg-type]
        registry, fake, lambda: pending[0], audit_journal=lambda: 2
    )
    assert samples(registry, "bridge_storage_") == {
        'bridge_storage_connections{state="idle"}': 1,
        'bridge_storage_connections{state="in_use"}': 3,
        "bridge_storage_requests_waiting": 5,
    }
    assert samples(registry, "bridge_audit_pending") == {"bridge_audit_pending": 7}
    assert samples(registry, "bridge_audit_journal") == {"bridge_audit_journal_entries": 2}
    fake.figures = PoolFigures(in_use=0, idle=2, waiting=0)
    pending[0] = 0
    assert (
        samples(registry, "bridge_storage_connections")['bridge_storage_connections{state="idle"}']
        == 2
    )
    assert samples(registry, "bridge_audit_pending") == {"bridge_audit_pending": 0}


async def test_sqlite_has_no_pool_figures(tmp_path: Path) -> None:
    registry = MetricsRegistry()
    store = await SqliteTicketStore.open(tmp_path / "t.sqlite3")
    try:
        export_storage_metrics(registry, store, lambda: 0, audit_journal=lambda: 0)
    finally:
        await store.close()
    rendered = registry.render()
    assert "bridge_audit_pending 0" in rendered
    assert "bridge_storage_connections" not in rendered
    assert "bridge_storage_requests_waiting" not in rendered
