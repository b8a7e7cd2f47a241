"""Where a call bench's bridge keeps its tickets and audit log (``--storage``).

``sqlite`` (the default): ``storage.url = "sqlite:///bridge.sqlite3"``, a file in each bridge
run's work directory, as a single node runs. ``postgresql``: a throw-away PostgreSQL cluster on
127.0.0.1 (``bench/postgres_cluster.py``, the one the tests start) that this process starts
before the first bridge run and stops after the last, whatever happens (``opened`` is a context
manager; SIGTERM ends the bench through it as Ctrl-C does), with a fresh database for each
bridge run. The table layout is the same in both stores (``bridge/tickets/sql.py``), so results
are read with the same query from either.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import psycopg

from bench.postgres_cluster import PostgresCluster, missing
from bridge.tickets.sqlite_store import path_from_url

STORAGES = ("sqlite", "postgresql")
SQLITE_URL = "sqlite:///bridge.sqlite3"
INSTALL_HINT = "install the Debian package postgresql (`make peers` does it as root)"


class StorageUnavailable(RuntimeError):
    """The PostgreSQL cluster did not start (the message says why, with its log's tail)."""


def add_storage_argument(parser: argparse.ArgumentParser) -> None:
    """``--storage``, as the call benches take it."""
    parser.add_argument(
        "--storage",
        choices=STORAGES,
        default="sqlite",
        help="the bridge's ticket store: a SQLite file (default) or a throw-away PostgreSQL "
        "cluster on 127.0.0.1 that this script starts and stops",
    )


def unavailable(kind: str) -> str | None:
    """Why ``kind`` cannot be used here (one line), or None when it can."""
    if kind == "postgresql":
        reason = missing()
        return f"{reason}: {INSTALL_HINT}" if reason else None
    return None


class Storage:
    """The store the bridge runs of one bench use; ``url`` gives each run its own."""

    def __init__(self, kind: str, cluster: PostgresCluster | None = None) -> None:
        self.kind = kind
        self.cluster = cluster
        self._version = ""
        self._databases = 0
        if cluster is not None:
            with psycopg.connect(cluster.url()) as conn:
                row = conn.execute("SHOW server_version").fetchone()
            self._version = str(row[0]).split()[0] if row else "?"

    def describe(self) -> str:
        if self.cluster is None:
            return "SQLite (file, WAL, synchronous=NORMAL)"
        return (
            f"PostgreSQL {self._version} (throw-away cluster on 127.0.0.1:{self.cluster.port}, "
            "same machine, fsync off)"
        )

    def url(self, label: str) -> str:
        """The ``storage.url`` of a new bridge run: an empty database of its own."""
        if self.cluster is None:
            return SQLITE_URL
        self._databases += 1
        return self.cluster.create_database(f"{label}_{self._databases}")

    def audit_count(self, url: str, kind: str, *, base_dir: Path) -> int:
        """Audit entries of ``kind`` a bridge run on ``url`` wrote (SQLite paths are relative
        to ``base_dir``, the run's work directory, as the bridge resolves them)."""
        query = "SELECT count(*) FROM audit_log WHERE kind = "
        if url.startswith("postgresql://"):
            with psycopg.connect(url) as conn:
                row = conn.execute(query + "%s", (kind,)).fetchone()
        else:
            path = Path(path_from_url(url))
            with contextlib.closing(sqlite3.connect(base_dir / path)) as db:
                row = db.execute(query + "?", (kind,)).fetchone()
        return int(row[0]) if row else 0

    def server_pids(self) -> list[int]:
        """The PostgreSQL server's processes now (postmaster first), none for SQLite."""
        pid = self.cluster.server_pid() if self.cluster is not None else None
        if pid is None:
            return []
        found = [pid]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    text = (entry / "stat").read_text()
                    if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
                        found.append(int(entry.name))
        return found


def _terminated(signum: int, frame: FrameType | None) -> None:
    sys.exit(128 + signum)


@contextlib.contextmanager
def opened(kind: str, port: int) -> Iterator[Storage]:
    """The storage ``kind`` names, ready; for PostgreSQL the cluster is stopped (its own data
    directory, ``pg_ctl stop``) and removed on the way out, also on Ctrl-C and SIGTERM."""
    if kind != "postgresql":
        yield Storage(kind)
        return
    cluster = PostgresCluster(port)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        try:
            cluster.start()
            storage = Storage(kind, cluster)
        except (RuntimeError, OSError, subprocess.SubprocessError, psycopg.Error) as exc:
            raise StorageUnavailable(f"PostgreSQL did not start: {exc}") from exc
        yield storage
    finally:
        try:
            cluster.stop()
        finally:
            signal.signal(signal.SIGTERM, previous)
