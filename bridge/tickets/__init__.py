"""Tickets (工单): the model, the lifecycle state machine with its event log, and the stores.

``model`` and ``lifecycle`` are pure; ``store`` is the interface, ``sqlite_store`` the embedded
implementation (WAL, versioned migrations, one worker thread).
"""
