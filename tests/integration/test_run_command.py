"""`bridge run` as users run it: a real process, SIGHUP reloads the plan, SIGTERM stops it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from integration.bridge_under_test import BridgeUnderTest
from peers.ports import PortAllocator


async def read_until(stream: asyncio.StreamReader, needle: str, within: float) -> list[str]:
    lines: list[str] = []

    async def scan() -> None:
        while True:
            raw = await stream.readline()
            if not raw:
                raise AssertionError(f"process ended before {needle!r}: {lines[-5:]}")
            lines.append(raw.decode())
            if needle in lines[-1]:
                return

    await asyncio.wait_for(scan(), within)
    return lines


@contextlib.asynccontextmanager
async def bridge_process(layout: BridgeUnderTest) -> AsyncIterator[asyncio.subprocess.Process]:
    """``bridge run`` on the layout's config, as an admin starts it; killed if still running."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "run",
        "--config",
        str(layout.config_path),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sighup_reloads_and_sigterm_stops_gracefully(
    tmp_path: Path, ports: PortAllocator
) -> None:
    layout = BridgeUnderTest(tmp_path, ports, carrier_port=ports.port(), pbx_ports=[ports.port()])
    async with bridge_process(layout) as proc:
        assert proc.stderr is not None
        await read_until(proc.stderr, "ready:", 20)
        layout.plan_path.write_text(
            layout.plan_path.read_text(encoding="utf-8") + "\n[[trunks]]\nname = 7\n",
            encoding="utf-8",
        )
        proc.send_signal(signal.SIGHUP)
        await read_until(proc.stderr, "dial plan reload refused (SIGHUP)", 10)
        proc.send_signal(signal.SIGTERM)
        lines = await read_until(proc.stderr, "shutting down", 10)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        assert not any('"level": "error"' in line for line in lines)


async def test_realtime_priority_is_taken_or_its_refusal_said(
    tmp_path: Path, ports: PortAllocator
) -> None:
    layout = BridgeUnderTest(tmp_path, ports, carrier_port=ports.port(), pbx_ports=[ports.port()])
    with layout.config_path.open("a", encoding="utf-8") as config:
        config.write("\n[scheduling]\nrealtime_priority = 3\n")
    async with bridge_process(layout) as proc:
        assert proc.stderr is not None
        lines = await read_until(proc.stderr, "ready:", 20)
        refused = [line for line in lines if "real-time priority 3 refused" in line]
        if refused:  # no CAP_SYS_NICE here: said, and the service runs all the same
            assert os.sched_getscheduler(proc.pid) == os.SCHED_OTHER
        else:
            assert os.sched_getscheduler(proc.pid) == os.SCHED_RR
            assert os.sched_getparam(proc.pid).sched_priority == 3
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0


def test_bad_config_exits_1_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bridge.cli import main

    config = tmp_path / "bad.toml"
    config.write_text('[sidecar]\nlink_secret = "0123456789abcdef0123"\n[sip]\nlisen = "x"\n')
    assert main(["run", "--config", str(config)]) == 1
    assert f"{config}:4: sip.lisen: unknown key" in capsys.readouterr().err
