"""The throw-away PostgreSQL cluster the ticket-store tests run on. It lives in
``bench/postgres_cluster.py``, since the call benches start one too (``--storage postgresql``);
the tests import it from here (the repository root is on pytest's ``pythonpath``)."""

from bench.postgres_cluster import (
    PASSWORD,
    READY_WITHIN_S,
    SUPERUSER,
    PostgresCluster,
    missing,
    server_bin,
)

__all__ = ["PASSWORD", "READY_WITHIN_S", "SUPERUSER", "PostgresCluster", "missing", "server_bin"]
