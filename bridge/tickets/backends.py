"""Which store ``storage.url`` names: ``sqlite:///file`` (embedded, the default) or
``postgresql://user:pass@host:port/db`` (one database several bridge nodes share)."""

from __future__ import annotations

from pathlib import Path

from bridge.tickets.sqlite_store import SqliteTicketStore, path_from_url
from bridge.tickets.store import TicketDatabase


async def open_store(url: str, *, base_dir: Path, max_connections: int = 8) -> TicketDatabase:
    """Open (and migrate) the store; a relative SQLite path is relative to ``base_dir``."""
    if url.startswith("postgresql://"):
        # Imported here so the embedded default never loads the PostgreSQL driver.
        from bridge.tickets.postgres_store import PostgresTicketStore

        return await PostgresTicketStore.open(url, max_connections=max_connections)
    path = Path(path_from_url(url))
    if not path.is_absolute():
        path = base_dir / path
    return await SqliteTicketStore.open(str(path))
