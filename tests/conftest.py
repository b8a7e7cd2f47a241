"""Shared fixtures: free loopback ports, real SIP peers (SIPp, baresip, pyVoIP), PostgreSQL.

Peer fixtures are factories; everything they start is stopped (killed by PID if need be) at
teardown, and each process is bounded by its own -timeout / -t anyway. A test marked
`@pytest.mark.peers("sipp", "baresip")` is skipped when a named peer is missing, or fails under
CI=true (see peers/availability.py); each factory also checks its own peer.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from peers.availability import require_peer
from peers.baresip import Baresip
from peers.ports import PortAllocator, default_allocator
from peers.postgres import PostgresCluster
from peers.pyvoip_seat import PyVoIPSeat
from peers.sipp import SippRun

DATABASE_NUMBERS = itertools.count()


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers(name="peers"):
        for name in marker.args or ("sipp",):
            require_peer(name)


@pytest.fixture(scope="session")
def ports() -> PortAllocator:
    """Loopback ports free on UDP and TCP, never handed out twice in one test run."""
    return default_allocator()


@pytest.fixture(scope="session")
def postgres(ports: PortAllocator) -> Iterator[PostgresCluster]:
    """One PostgreSQL cluster for the whole run, started on first use and stopped at the end."""
    require_peer("postgres")
    cluster = PostgresCluster(ports.port())
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres: PostgresCluster) -> str:
    """The URL of a new, empty database for this test alone."""
    return postgres.create_database(f"test_{next(DATABASE_NUMBERS)}")


@pytest.fixture
def sipp(tmp_path: Path, ports: PortAllocator) -> Iterator[Callable[..., SippRun]]:
    """`sipp(scenario, **SippRun kwargs)` -> a started SippRun; await `.started()` for a UAS."""
    require_peer("sipp")
    runs: list[SippRun] = []

    def start(scenario: str | Path, **kwargs: Any) -> SippRun:
        kwargs.setdefault("workdir", tmp_path)
        kwargs.setdefault("allocator", ports)
        run = SippRun(scenario, **kwargs).start()
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()


@pytest.fixture
async def baresip(
    tmp_path: Path, ports: PortAllocator
) -> AsyncIterator[Callable[..., Awaitable[Baresip]]]:
    """`await baresip(**Baresip kwargs)` -> a started baresip with its control channel open."""
    require_peer("baresip")
    phones: list[Baresip] = []

    async def start(**kwargs: Any) -> Baresip:
        kwargs.setdefault("allocator", ports)
        phone = Baresip(tmp_path, **kwargs)
        phones.append(phone)
        return await phone.start()

    yield start
    for phone in phones:
        try:
            await phone.stop()
        finally:
            phone.kill()


@pytest.fixture
async def pyvoip_seat(ports: PortAllocator) -> AsyncIterator[Callable[..., Awaitable[PyVoIPSeat]]]:
    """`await pyvoip_seat(server_port=..., username=..., password=...)` -> a registered seat."""
    require_peer("pyVoIP")
    seats: list[PyVoIPSeat] = []

    async def start(**kwargs: Any) -> PyVoIPSeat:
        kwargs.setdefault("allocator", ports)
        seat = PyVoIPSeat(**kwargs)
        seats.append(seat)
        return await seat.start()

    yield start
    for seat in seats:
        with contextlib.suppress(TimeoutError):  # pyVoIP's stop goes on in its thread
            await seat.stop()
