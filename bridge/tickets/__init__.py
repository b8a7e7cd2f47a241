"""Tickets (工单): the model, the lifecycle state machine with its event log, and the stores.

``model`` and ``lifecycle`` are pure; ``store`` is the interface. ``sqlite_store`` is the
embedded implementation (WAL, versioned migrations, one worker thread), ``postgres_store`` the
one several nodes share (a connection pool, row locks); ``backends`` picks one by URL.
"""
