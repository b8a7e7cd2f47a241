"""The audit log's writer: entries queued by the service reach the ticket store in order, once.

Product rules: every step is auditable, nothing is lost. A batch the store refuses (database
down, connection lost, disk full) stays at the head of the queue and is written again after a
pause doubling from :data:`RETRY_FIRST_S` to :data:`RETRY_MAX_S`; a write whose commit went
through but whose acknowledgement was lost is harmless, the store ignoring an ``entry_id`` it
already has. Memory holds at most :data:`AUDIT_MEMORY_LIMIT` entries, the oldest: the newer
ones go to the :class:`~bridge.audit_journal.AuditJournal` on disk, as do those still unwritten
when the service stops. The order is kept throughout: memory, then the journal, then entries
that came after, and the journal is replayed (on start, and once the store is back) before
anything newer is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from bridge.audit_journal import AuditJournal
from bridge.tickets.store import AuditEntry, TicketDatabase

log = logging.getLogger("bridge.audit")

AUDIT_BATCH_S = 0.1
"""Seconds audit entries wait to be written together (close() still writes every one)."""

AUDIT_MEMORY_LIMIT = 50_000
"""Entries held in memory while the store is behind: about 15 s of 500 calls/s, some tens of
MiB. Past it, entries are appended to the journal."""

AUDIT_MAX_BATCH = 1000
"""Entries per store transaction when a backlog or the journal is written."""

AUDIT_CLOSE_S = 10.0
"""Seconds close() spends writing to the store before it leaves the rest to the journal: a
database that is down must not hold the stop up (a PostgreSQL pool waits 30 s for a connection).
A write cut short may have committed; the store ignores it when the journal replays it."""

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
"""Pauses between attempts at a batch the store refused: doubling, up to a store restart's
worth, so a database that is down is not hammered and one that is back is used soon."""


class AuditWriter:
    """Queues audit entries and writes them in batches to the store once :meth:`start` gave it."""

    def __init__(
        self,
        journal: AuditJournal,
        *,
        memory_limit: int = AUDIT_MEMORY_LIMIT,
        batch_s: float = AUDIT_BATCH_S,
        retry_first_s: float = RETRY_FIRST_S,
        retry_max_s: float = RETRY_MAX_S,
        close_s: float = AUDIT_CLOSE_S,
    ) -> None:
        self.journal = journal
        self._memory_limit = memory_limit
        self._batch_s = batch_s
        self._retry_first_s = retry_first_s
        self._retry_max_s = retry_max_s
        self._close_s = close_s
        self._memory: list[AuditEntry] = []
        """The oldest entries not yet written; the head may be the batch being written."""
        self._overflow: list[AuditEntry] = []
        """Entries newer than the journal's, waiting (up to ``batch_s``) to be appended to it."""
        self._store: TicketDatabase | None = None
        self._task: asyncio.Task[None] | None = None
        self._spill: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._closed = False

    def start(self, store: TicketDatabase) -> None:
        self._store = store
        if self.journal.entries:
            log.warning(
                "audit journal %s: replaying %d entries into the ticket store",
                self.journal.path,
                self.journal.entries,
            )
        self._kick()

    def pending(self) -> int:
        """Entries not yet in the store: in memory and in the journal."""
        return len(self._memory) + len(self._overflow) + self.journal.entries

    def add(self, entries: Sequence[AuditEntry]) -> None:
        """Queue entries, in the order the steps were taken."""
        if self._closed:
            # Steps taken after close() (calls ending as the engine stops) join the journal
            # the next start replays.
            self.journal.append(entries)
            return
        if self._overflow or self.journal.entries:
            self._overflow.extend(entries)
        else:
            room = max(self._memory_limit - len(self._memory), 0)
            self._memory.extend(entries[:room])
            self._overflow.extend(entries[room:])
        if self._overflow and self._spill is None:
            if not self.journal.entries:
                log.warning(
                    "audit log: %d entries wait for the ticket store; newer ones go to the"
                    " journal %s until it takes them",
                    len(self._memory),
                    self.journal.path,
                )
            self._spill = asyncio.get_running_loop().call_later(self._batch_s, self._to_journal)
        self._kick()

    def _to_journal(self) -> None:
        """Append the overflow, one fsync per batch (and not per call event)."""
        self._spill = None
        try:
            self.journal.append(self._overflow)
        except Exception:
            log.exception(
                "audit journal %s cannot be written; %d entries stay in memory",
                self.journal.path,
                len(self._overflow),
            )
            self._spill = asyncio.get_running_loop().call_later(
                self._retry_first_s, self._to_journal
            )
            return
        self._overflow = []

    def _kick(self) -> None:
        if self._store is None or self._closing or not self.pending():
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        delay = self._retry_first_s
        while self._store is not None and self.pending():
            # Let entries gather: one transaction (and one hand-off to the store's thread) per
            # AUDIT_BATCH_S rather than per burst is a measurable share of a call's CPU.
            await self._pause(self._batch_s)
            try:
                await self._write_next(self._store)
            except Exception as exc:  # the store refused, or the journal cannot be read
                if self._closing:
                    log.warning("audit log write failed at shutdown: %s", exc)
                    return
                log.warning(
                    "audit log write failed (%s); %d entries kept, next attempt in %.1f s",
                    exc,
                    self.pending(),
                    delay,
                )
                await self._pause(delay)
                delay = min(delay * 2, self._retry_max_s)
            else:
                if delay != self._retry_first_s:
                    log.warning("audit log writes resumed; %d entries pending", self.pending())
                delay = self._retry_first_s

    async def _write_next(self, store: TicketDatabase) -> None:
        if self._memory:
            batch = self._memory[:AUDIT_MAX_BATCH]
            await store.append_audit(batch)
            del self._memory[: len(batch)]
        elif self.journal.entries:
            read = self.journal.read(AUDIT_MAX_BATCH)
            if read.entries:
                await store.append_audit(read.entries)
            self.journal.confirm(read)
            if not self.journal.entries:
                log.warning(
                    "audit journal %s replayed into the ticket store and removed",
                    self.journal.path,
                )
        elif self._overflow:
            # The journal was replayed before these reached it: they are next, from memory.
            if self._spill is not None:
                self._spill.cancel()
                self._spill = None
            self._memory, self._overflow = self._overflow, []

    async def _pause(self, seconds: float) -> None:
        if self._closing:
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def close(self) -> None:
        """Write what the store takes now, without pauses; what it refuses goes to the journal
        for the next start to replay."""
        self._closing = True
        self._wake.set()
        if self._spill is not None:
            self._spill.cancel()
            self._spill = None
        if (self._task is None or self._task.done()) and self._store is not None and self.pending():
            self._task = asyncio.get_running_loop().create_task(self._run())
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self._close_s)
            except TimeoutError:
                log.warning(
                    "audit log: the ticket store did not answer within %.0f s", self._close_s
                )
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        self._closed = True
        if not self._memory and not self._overflow:
            return
        unwritten = len(self._memory) + len(self._overflow)
        try:
            self.journal.keep(older=self._memory, newer=self._overflow)
        except OSError:
            log.exception(
                "audit journal %s cannot be written; %d entries lost", self.journal.path, unwritten
            )
            return
        finally:
            self._memory, self._overflow = [], []
        log.warning(
            "audit log: %d entries the ticket store did not take are kept in the journal %s"
            " for the next start",
            unwritten,
            self.journal.path,
        )
