"""What operators see of the ticket store on ``/metrics``, whichever database it is.

:class:`MeasuredStore` is the store as the service hands it to the sidecar and the transfer
coordinator: every store call passes through it once, so a write is timed in one place for
both databases, and a failure is counted once however many layers it then crosses (the
sidecar answers it 503 or 409, the transfer coordinator and the audit writer log it).
:func:`export_storage_metrics` adds the figures read at scrape time: the audit entries not yet
written (those in the local journal too, and apart) and, for a store over a connection pool
(PostgreSQL), its connections.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from bridge.sidecar.metrics import DEFAULT_BUCKETS, MetricsRegistry
from bridge.tickets.errors import ConcurrentUpdate, StoreUnavailable
from bridge.tickets.lifecycle import TicketEvent, Transition
from bridge.tickets.model import Ticket
from bridge.tickets.store import (
    AuditEntry,
    PooledStore,
    TicketChange,
    TicketDatabase,
    TicketQuery,
)

T = TypeVar("T")

# Fast enough for SQLite on a local disk (well under a millisecond), long enough for a
# PostgreSQL operation queued behind busy connections or a row lock.
OPERATION_BUCKETS: tuple[float, ...] = (0.0005, *DEFAULT_BUCKETS)


class MeasuredStore:
    """A :class:`~bridge.tickets.store.TicketDatabase` that times its writes and counts the
    operations the database failed (unavailable: answered 503; a concurrent update: 409)."""

    def __init__(self, store: TicketDatabase, metrics: MetricsRegistry) -> None:
        self.inner = store
        self._seconds = metrics.histogram(
            "bridge_storage_operation_seconds",
            "Seconds a write to the ticket store took, failed ones included",
            ("operation",),
            OPERATION_BUCKETS,
        )
        self._errors = metrics.counter(
            "bridge_storage_errors_total",
            "Ticket store operations that failed: the database unavailable (answered 503)"
            " or a concurrent update",
            ("kind",),
        )

    async def _checked(self, pending: Awaitable[T]) -> T:
        try:
            return await pending
        except (StoreUnavailable, ConcurrentUpdate) as exc:
            self._errors.inc(kind=exc.error)
            raise

    async def _timed(self, operation: str, pending: Awaitable[T]) -> T:
        start = time.perf_counter()
        try:
            return await self._checked(pending)
        finally:
            self._seconds.observe(time.perf_counter() - start, operation=operation)

    # -- writes, timed ----------------------------------------------------------------------

    async def create(self, transition: Transition) -> None:
        await self._timed("create", self.inner.create(transition))

    async def append_event(self, transition: Transition) -> None:
        await self._timed("append_event", self.inner.append_event(transition))

    async def update(self, ticket_id: str, change: TicketChange) -> Transition:
        return await self._timed("update", self.inner.update(ticket_id, change))

    async def create_then(self, transition: Transition, change: TicketChange) -> Transition:
        return await self._timed("create_then", self.inner.create_then(transition, change))

    async def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        await self._timed("append_audit", self.inner.append_audit(entries))

    # -- reads ------------------------------------------------------------------------------

    async def get(self, ticket_id: str) -> Ticket | None:
        return await self._checked(self.inner.get(ticket_id))

    async def list_tickets(self, query: TicketQuery) -> list[Ticket]:
        return await self._checked(self.inner.list_tickets(query))

    async def events_for(self, ticket_id: str) -> list[TicketEvent]:
        return await self._checked(self.inner.events_for(ticket_id))

    async def audit(self, subject: str | None = None, limit: int = 100) -> list[AuditEntry]:
        return await self._checked(self.inner.audit(subject, limit))

    async def schema_version(self) -> int:
        return await self._checked(self.inner.schema_version())

    async def close(self) -> None:
        await self.inner.close()


def export_storage_metrics(
    metrics: MetricsRegistry,
    store: TicketDatabase,
    audit_pending: Callable[[], int],
    *,
    audit_journal: Callable[[], int],
) -> None:
    """Register the store's figures read at scrape time (call once, after opening it)."""
    metrics.gauge(
        "bridge_audit_pending",
        "Audit log entries not yet written to the ticket store (in memory or in the journal)",
    ).set_function(lambda: float(audit_pending()))
    metrics.gauge(
        "bridge_audit_journal_entries",
        "Audit log entries waiting in the local journal for the ticket store to take them",
    ).set_function(lambda: float(audit_journal()))
    if not isinstance(store, PooledStore):
        return
    pooled = store
    metrics.gauge(
        "bridge_storage_connections",
        "Database connections of this node's pool, by state (in_use, idle)",
        ("state",),
    ).set_series_function(lambda: _connections(pooled))
    metrics.gauge(
        "bridge_storage_requests_waiting",
        "Ticket store operations queued for a database connection (the pool is at max_connections)",
    ).set_function(lambda: float(pooled.pool_figures().waiting))


def _connections(store: PooledStore) -> dict[tuple[str, ...], float]:
    figures = store.pool_figures()
    return {("in_use",): float(figures.in_use), ("idle",): float(figures.idle)}
