"""Audit entries the ticket store could not take yet, kept in a local append-only file.

Product rule: nothing is lost. When the store is down longer than memory may hold its backlog
(:data:`bridge.audit_writer.AUDIT_MEMORY_LIMIT`), or the service stops with entries unwritten,
the entries are appended here as JSON lines, flushed and fsync'd per batch, so they survive
the process and the machine. They are replayed into the store in order, and the file is removed
only once the store has confirmed every entry in it: a crash during the replay replays again,
and the store's insert-or-ignore on ``entry_id`` keeps the entries written before it once.

A line torn by a crash mid-write is skipped with a warning rather than stopping the replay of
the entries after it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bridge.tickets.store import AuditEntry

log = logging.getLogger("bridge.audit")


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalBatch:
    """Entries read from the journal, to confirm once the store took them."""

    entries: list[AuditEntry]
    end: int
    """Byte offset of the line after the batch."""
    lines: int
    """Lines read, unreadable ones included (they are skipped, not replayed)."""


class AuditJournal:
    """The journal file at ``path``; created by the first append, removed once replayed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        """Bytes already replayed into the store (a later start replays them again)."""
        self._size = 0
        self.entries = 0
        """Lines past the replayed part: the entries the store has yet to confirm."""
        self._load()

    def _load(self) -> None:
        last = b"\n"
        try:
            with self.path.open("rb") as existing:
                for last in existing:
                    self._size += len(last)
                    if last.strip():
                        self.entries += 1
        except FileNotFoundError:
            return
        torn = not last.endswith(b"\n")
        if torn:
            # Ended so that the next append starts a line of its own; the torn line is skipped
            # (with a warning) when replayed.
            with self.path.open("ab") as journal:
                journal.write(b"\n")
                os.fsync(journal.fileno())
            self._size += 1
        if self.entries:
            log.warning(
                "audit journal %s holds %d entries the ticket store has not confirmed",
                self.path,
                self.entries,
            )

    def append(self, entries: Sequence[AuditEntry]) -> None:
        """Append and fsync; on failure (disk full) the file is cut back to whole lines and
        the error raised, the entries staying with the caller."""
        if not entries:
            return
        payload = b"".join(_line(entry) for entry in entries)
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as journal:
            try:
                journal.write(payload)
                journal.flush()
                os.fsync(journal.fileno())
            except OSError:
                journal.truncate(self._size)
                raise
        if created:
            _sync_directory(self.path.parent)
        self._size += len(payload)
        self.entries += len(entries)

    def read(self, limit: int) -> JournalBatch:
        """Up to ``limit`` entries, from the first the store has not confirmed."""
        entries: list[AuditEntry] = []
        lines = 0
        position = self._offset
        with self.path.open("rb") as journal:
            journal.seek(self._offset)
            while len(entries) < limit:
                line = journal.readline()
                if not line:
                    break
                position += len(line)
                if not line.strip():
                    continue
                lines += 1
                try:
                    entries.append(_entry(line))
                except (ValueError, TypeError, KeyError):
                    log.warning(
                        "audit journal %s: unreadable line at byte %d skipped (torn by a crash?)",
                        self.path,
                        position - len(line),
                    )
        return JournalBatch(entries=entries, end=position, lines=lines)

    def confirm(self, batch: JournalBatch) -> None:
        """The store took ``batch``: once it has taken the whole file, the file goes."""
        self._offset = batch.end
        self.entries -= batch.lines
        if self._offset >= self._size:
            self.path.unlink(missing_ok=True)
            _sync_directory(self.path.parent)
            self._offset = self._size = 0
            self.entries = 0

    def keep(self, older: Sequence[AuditEntry], newer: Sequence[AuditEntry]) -> None:
        """At shutdown: ``older`` entries (from before the journal's) go ahead of those the
        store has not confirmed, ``newer`` after them. The file is rewritten beside and renamed
        over, so a crash leaves either journal whole."""
        if not older and self._offset == 0:
            self.append(newer)
            return
        staging = self.path.with_name(self.path.name + ".new")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with staging.open("wb") as out:
            out.write(b"".join(_line(entry) for entry in older))
            if self.entries:
                with self.path.open("rb") as journal:
                    journal.seek(self._offset)
                    shutil.copyfileobj(journal, out)
            out.write(b"".join(_line(entry) for entry in newer))
            out.flush()
            os.fsync(out.fileno())
            size = out.tell()
        os.replace(staging, self.path)
        _sync_directory(self.path.parent)
        self._offset, self._size = 0, size
        self.entries += len(older) + len(newer)


def _line(entry: AuditEntry) -> bytes:
    fields = {
        "entry_id": entry.entry_id,
        "at": entry.at,
        "actor": entry.actor,
        "kind": entry.kind,
        "subject": entry.subject,
        "data": entry.data,
    }
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _entry(line: bytes) -> AuditEntry:
    fields = json.loads(line)
    if not isinstance(fields["data"], dict):
        raise TypeError("data is not an object")
    entry_id = fields["entry_id"]
    return AuditEntry(
        entry_id=None if entry_id is None else str(entry_id),
        at=float(fields["at"]),
        actor=str(fields["actor"]),
        kind=str(fields["kind"]),
        subject=str(fields["subject"]),
        data=fields["data"],
    )


def _sync_directory(path: Path) -> None:
    """So that a file's creation, renaming or removal survives a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
