"""A peer process the tests started: bounded, logged, awaited, and killed by its own PID.

Each peer runs in its own session, so a signal meant for the test runner's terminal does not
reach it half-way; its own -t / -timeout bounds it if teardown never runs. Its stdout and stderr
go to a file in the test's directory, so a failing test can quote what the peer said.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

POLL_INTERVAL = 0.01


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file, or a note that it does not exist."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"<{path.name}: not written>"
    kept = text.splitlines()[-lines:]
    return "\n".join(kept) if kept else f"<{path.name}: empty>"


class PeerProcess:
    """One child process with its output in `output_path`."""

    def __init__(self, argv: Sequence[str], *, cwd: Path, output_path: Path) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.output_path = output_path
        with output_path.open("wb") as output:  # the child keeps its own descriptor
            self.popen = subprocess.Popen(
                self.argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def wait_sync(self, timeout: float) -> int | None:
        """The exit status, or None if the process was still running after `timeout` s."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    async def wait(self, within: float) -> int | None:
        """Like wait_sync, without blocking the event loop (the bridge may share it)."""
        if self.popen.poll() is not None:
            return self.popen.returncode
        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            return await asyncio.to_thread(self.wait_sync, within)
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def on_readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(pidfd, on_readable)
        try:
            await asyncio.wait_for(exited, within)
        except TimeoutError:
            return None
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        return self.popen.wait()

    def kill(self) -> None:
        """SIGKILL this peer by its PID (if still running), then reap it."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5)

    def signal(self, signum: int) -> None:
        """Send `signum` to this peer (by PID) if it is still running."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signum)

    def terminate(self, grace: float = 3.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit status if it had one."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            if self.wait_sync(grace) is None:
                self.kill()
        return self.popen.returncode

    def output_tail(self, lines: int = 40) -> str:
        return tail(self.output_path, lines)


async def wait_until(
    condition: Callable[[], bool],
    *,
    within: float,
    what: str,
    process: PeerProcess | None = None,
) -> None:
    """Wait until `condition()` holds; fail early and say so if `process` exits meanwhile.

    For conditions nothing can signal (another process binding a port): polled every 10 ms.
    """
    deadline = time.monotonic() + within
    while not condition():
        if process is not None and process.returncode is not None:
            raise AssertionError(
                f"{what}: {process.argv[0]} exited with {process.returncode} first\n"
                f"{process.output_tail()}"
            )
        if time.monotonic() > deadline:
            detail = f"\n{process.output_tail()}" if process is not None else ""
            raise AssertionError(f"{what}: not within {within} s{detail}")
        await asyncio.sleep(POLL_INTERVAL)


async def eventually(condition: Callable[[], Awaitable[bool]], *, within: float, what: str) -> None:
    """:func:`wait_until` for a condition that must itself ask (a database, /metrics)."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        await asyncio.sleep(POLL_INTERVAL)


def wait_until_sync(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    process: PeerProcess | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.returncode is not None:
            raise AssertionError(
                f"{what}: {process.argv[0]} exited with {process.returncode} first\n"
                f"{process.output_tail()}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(POLL_INTERVAL)
