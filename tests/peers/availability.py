"""Whether the real peers (SIP phones, a PostgreSQL server) are installed, and what a test
does when one is not.

On a developer machine a missing peer skips the test with the reason and the fix. Under CI
(`CI=true`) the peers are part of the test environment (`make test` installs them), so a missing
one is a failure: a skipped integration suite would otherwise look green while testing nothing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

INSTALL_HINT = {
    "sipp": "install the Debian package sip-tester (`make peers` does it as root)",
    "baresip": "install the Debian package baresip-core (`make peers` does it as root)",
    "pyVoIP": "install the test extras: pip install -e '.[test]'",
    "postgres": "install the Debian package postgresql (`make peers` does it as root)",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def peer_missing(name: str) -> str | None:
    """The reason `name` cannot run here, or None when it can."""
    if name == "pyVoIP":
        if importlib.util.find_spec("pyVoIP") is None:
            return "pyVoIP is not importable"
        return None
    if name == "postgres":
        from peers.postgres import missing

        return missing()
    if shutil.which(name) is None:
        return f"{name} is not on PATH"
    return None


def require_peer(name: str) -> None:
    """Skip (or, under CI, fail) the calling test when peer `name` is missing."""
    reason = peer_missing(name)
    if reason is None:
        return
    message = f"{reason}: {INSTALL_HINT.get(name, 'install it')}"
    if in_ci():
        pytest.fail(f"CI=true requires every SIP peer; {message}", pytrace=False)
    pytest.skip(message)
