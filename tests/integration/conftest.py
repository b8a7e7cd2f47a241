from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from integration.bridge_under_test import BridgeUnderTest
from integration.rtp_phones import Phone
from peers.ports import PortAllocator


@pytest.fixture
async def bridge(
    tmp_path: Path, ports: PortAllocator
) -> AsyncIterator[Callable[..., Awaitable[BridgeUnderTest]]]:
    """`await bridge(carrier_port=..., pbx_ports=[...])` -> a started bridge on this loop."""
    started: list[BridgeUnderTest] = []

    async def start(**kwargs: Any) -> BridgeUnderTest:
        instance = BridgeUnderTest(tmp_path / f"bridge{len(started)}", ports, **kwargs)
        started.append(instance)
        return await instance.start()

    yield start
    for instance in started:
        await instance.close()


@pytest.fixture
async def phones() -> AsyncIterator[list[Phone]]:
    """Four RTP phones on 127.0.0.1 (see :mod:`integration.rtp_phones`)."""
    opened = [await Phone.open() for _ in range(4)]
    yield opened
    for phone in opened:
        phone.close()
