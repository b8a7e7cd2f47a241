from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from integration.bridge_under_test import BridgeUnderTest
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
