"""The audit writer: a refused batch is retried in order, memory is bounded by the journal, and
entries unwritten at shutdown are replayed by the next start; none lost, none twice."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from peers.process import wait_until

from bridge.audit_journal import AuditJournal
from bridge.audit_writer import AuditWriter
from bridge.tickets.errors import StoreUnavailable
from bridge.tickets.sqlite_store import SqliteTicketStore
from bridge.tickets.store import AuditEntry, TicketDatabase

NOW = 1_700_000_000.0


def entries(first: int, count: int) -> list[AuditEntry]:
    return [
        AuditEntry(at=NOW + n, actor="bridge", kind="call.ringing", subject=f"c{n}", data={"n": n})
        for n in range(first, first + count)
    ]


class FlakyStore:
    """A store that refuses ``failures`` writes (the database down), then takes them all; it
    keeps every batch it took, so an entry written twice would show twice."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.down = False
        self.taken: list[AuditEntry] = []
        self.attempts = 0

    async def append_audit(self, batch: Sequence[AuditEntry]) -> None:
        self.attempts += 1
        if self.down:
            raise StoreUnavailable("cannot open the ticket database postgresql://db:5432/bridge")
        if self.failures:
            self.failures -= 1
            # Not only the store's own errors: the writer's loop must survive anything.
            raise (StoreUnavailable("gone"), RuntimeError("bug"), OSError("disk full"))[
                self.failures % 3
            ]
        self.taken.extend(batch)


def writer(path: Path, **kwargs: float) -> AuditWriter:
    options = {"batch_s": 0.01, "retry_first_s": 0.01, "retry_max_s": 0.04, **kwargs}
    return AuditWriter(AuditJournal(path), **options)  # type: ignore[arg-type]


async def until(condition: Callable[[], bool]) -> None:
    await wait_until(condition, within=5.0, what="the audit writer")


def journal_ids(path: Path) -> list[str]:
    return [json.loads(line)["entry_id"] for line in path.read_text().splitlines()]


def ids(batch: Sequence[AuditEntry]) -> list[str | None]:
    return [e.entry_id for e in batch]


async def test_a_refused_batch_is_retried_with_growing_pauses_and_lands_in_order_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "bridge.audit")
    store = FlakyStore(failures=5)
    audit = writer(tmp_path / "journal.jsonl")
    audit.start(store)  # type: ignore[arg-type]
    sent = entries(0, 30)
    for n in range(0, 30, 3):
        audit.add(sent[n : n + 3])
        await asyncio.sleep(0.007)
    await until(lambda: audit.pending() == 0)
    await audit.close()
    assert ids(store.taken) == ids(sent)
    pauses = [r.args[2] for r in caplog.records if "next attempt" in r.getMessage()]  # type: ignore[index]
    assert pauses == [0.01, 0.02, 0.04, 0.04, 0.04]
    assert any("writes resumed" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "journal.jsonl").exists()


async def test_beyond_the_memory_limit_entries_go_to_the_journal_and_replay_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "bridge.audit")
    path = tmp_path / "var" / "journal.jsonl"
    store = FlakyStore()
    store.down = True
    audit = writer(path, memory_limit=5)
    audit.start(store)  # type: ignore[arg-type]
    sent = entries(0, 12)
    audit.add(sent[:4])
    audit.add(sent[4:9])
    audit.add(sent[9:])
    await until(lambda: audit.journal.entries == 7)
    assert journal_ids(path) == ids(sent[5:])
    assert audit.pending() == 12
    assert any("go to the journal" in r.getMessage() for r in caplog.records)
    store.down = False
    more = entries(12, 2)  # while the journal is replayed: after it
    audit.add(more)
    await until(lambda: audit.pending() == 0)
    await audit.close()
    assert ids(store.taken) == ids(sent + more)
    assert not path.exists()
    assert any("replayed into the ticket store" in r.getMessage() for r in caplog.records)


async def test_a_torn_last_journal_line_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "bridge.audit")
    path = tmp_path / "journal.jsonl"
    kept = entries(0, 2)
    AuditJournal(path).append(kept)
    with path.open("ab") as journal:
        journal.write(b'{"entry_id":"torn","at":1700000000.0,"actor":"br')  # the crash
    journal = AuditJournal(path)
    after = entries(2, 1)
    journal.append(after)  # a line of its own, not glued to the torn one
    store = FlakyStore()
    audit = AuditWriter(journal, batch_s=0.01)
    audit.start(store)  # type: ignore[arg-type]
    await until(lambda: audit.pending() == 0)
    await audit.close()
    assert ids(store.taken) == ids(kept + after)
    assert any("unreadable line" in r.getMessage() for r in caplog.records)
    assert not path.exists()


async def test_entries_unwritten_at_stop_are_kept_in_order_and_the_next_start_replays_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.jsonl"
    down = FlakyStore()
    down.down = True
    first = writer(path, memory_limit=4)
    first.start(down)  # type: ignore[arg-type]
    sent = entries(0, 10)
    first.add(sent[:6])  # four in memory, two to the journal
    await until(lambda: first.journal.entries == 2)
    first.add(sent[6:])  # still in memory when the service stops
    await first.close()
    assert journal_ids(path) == ids(sent)
    late = entries(10, 1)
    first.add(late)  # a call ending after the stop
    assert journal_ids(path) == ids(sent + late)

    up = FlakyStore()
    second = writer(path)
    assert second.pending() == 11
    second.start(up)  # type: ignore[arg-type]
    await until(lambda: second.pending() == 0)
    await second.close()
    assert ids(up.taken) == ids(sent + late)
    assert not path.exists()


class AcknowledgementLost:
    """A store whose first write commits but whose answer is lost (the connection dropped
    after COMMIT): the writer writes that batch again."""

    def __init__(self, inner: TicketDatabase) -> None:
        self.inner = inner
        self.lost = 1

    async def append_audit(self, batch: Sequence[AuditEntry]) -> None:
        await self.inner.append_audit(batch)
        if self.lost:
            self.lost -= 1
            raise StoreUnavailable("server closed the connection unexpectedly")


async def test_a_batch_committed_whose_acknowledgement_was_lost_is_stored_once(
    tmp_path: Path,
) -> None:
    store = await SqliteTicketStore.open(tmp_path / "t.sqlite3")
    try:
        audit = writer(tmp_path / "journal.jsonl")
        audit.start(AcknowledgementLost(store))  # type: ignore[arg-type]
        sent = entries(0, 5)
        audit.add(sent)
        await until(lambda: audit.pending() == 0)
        await audit.close()
        stored = await store.audit(limit=100)
    finally:
        await store.close()
    assert ids(list(reversed(stored))) == ids(sent)


class Hanging:
    """A store whose server stopped answering: writes wait for ever."""

    def __init__(self) -> None:
        self.writing = asyncio.Event()

    async def append_audit(self, batch: Sequence[AuditEntry]) -> None:
        self.writing.set()
        await asyncio.Event().wait()


async def test_a_store_that_does_not_answer_holds_the_stop_up_only_so_long(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.jsonl"
    audit = writer(path, close_s=0.2)
    store = Hanging()
    audit.start(store)  # type: ignore[arg-type]
    sent = entries(0, 3)
    audit.add(sent)
    await asyncio.wait_for(store.writing.wait(), 2)
    await asyncio.wait_for(audit.close(), 2)
    assert journal_ids(path) == ids(sent)
