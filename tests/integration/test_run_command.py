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
from peers.process import wait_until


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
    """``bridge run`` on the layout's config, as an admin starts it; killed if still running,
    and the layout's ports given back."""
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
        await layout.close()  # its ports go back to the allocator


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


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                text = (entry / "stat").read_text()
                if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (a reparented child may wait a while to be reaped)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2] not in "ZX"


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
async def test_media_workers_end_with_the_bridge_however_it_ends(
    tmp_path: Path, ports: PortAllocator, how: signal.Signals
) -> None:
    """No worker is left behind holding media ports, after a graceful stop or a crash."""
    layout = BridgeUnderTest(
        tmp_path,
        ports,
        carrier_port=ports.port(),
        pbx_ports=[ports.port()],
        media_extra="workers = 2",
        media_ports=128,
    )
    async with bridge_process(layout) as proc:
        assert proc.stderr is not None
        await read_until(proc.stderr, "ready:", 20)
        workers = _children(proc.pid)
        assert len(workers) == 2
        assert all(_running(pid) for pid in workers)
        proc.send_signal(how)
        status = await asyncio.wait_for(proc.wait(), 15)
        assert status == (0 if how is signal.SIGTERM else -signal.SIGKILL)
        await wait_until(
            lambda: not any(_running(pid) for pid in workers),
            within=10,
            what="media workers exited",
        )
