"""SIPp as a test peer: one `SippRun` per SIPp process.

Every run is pinned to loopback with its own SIP, media (and media + 2) and control ports, stops
by itself after `calls` calls or `timeout` seconds (`-timeout_error` makes the latter a failure),
and writes its error log, statistics, screen, `<log>` actions and (optionally) every message into
the test's directory so failure messages can quote them.

SIPp's exit status: 0 every call succeeded, 1 at least one failed, 97 stopped by an internal
command (or `-timeout` without `-timeout_error`), 99 stopped before any call, 255 fatal error
(including `-timeout_error`), 254 could not bind its sockets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .ports import HOST, PortAllocator, default_allocator, is_bound
from .process import PeerProcess, tail, wait_until, wait_until_sync

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "data" / "sipp"
BUILT_IN = frozenset(
    {"uac", "uas", "regexp", "3pcc-A", "3pcc-B", "3pcc-C-A", "3pcc-C-B", "branchc", "branchs"}
)
EXIT_MEANING = {
    0: "all calls succeeded",
    1: "at least one call failed",
    97: "stopped by internal command or -timeout",
    99: "stopped before any call was processed",
    254: "could not bind its sockets",
    255: "fatal error or global timeout",
}


def scenario_path(name: str) -> Path:
    """Path of a custom scenario in tests/data/sipp (`name` with or without `.xml`)."""
    path = SCENARIO_DIR / (name if name.endswith(".xml") else f"{name}.xml")
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


@dataclass(frozen=True, slots=True, kw_only=True)
class SippStats:
    """Cumulative counters from the last line of SIPp's `-trace_stat` CSV."""

    created: int
    successful: int
    failed: int
    retransmissions: int
    raw: Mapping[str, str] = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> SippStats:
        rows = [line for line in text.splitlines() if line.strip()]
        if len(rows) < 2:
            raise ValueError("statistics file has no data row")
        header = rows[0].split(";")
        values = rows[-1].split(";")
        raw = dict(zip(header, values, strict=False))

        def count(name: str) -> int:
            value = raw.get(name, "0").strip()
            return int(value) if value.isdigit() else 0

        return cls(
            created=count("TotalCallCreated"),
            successful=count("SuccessfulCall(C)"),
            failed=count("FailedCall(C)"),
            retransmissions=count("Retransmissions(C)"),
            raw=raw,
        )

    def failure_reasons(self) -> dict[str, int]:
        """Non-zero cumulative `Failed...` counters, e.g. {"FailedTimeoutOnRecv": 1}."""
        reasons: dict[str, int] = {}
        for key, value in self.raw.items():
            if key.startswith("Failed") and key.endswith("(C)") and key != "FailedCall(C)":
                number = value.strip()
                if number.isdigit() and int(number):
                    reasons[key.removesuffix("(C)")] = int(number)
        return reasons


@dataclass(frozen=True, slots=True, kw_only=True)
class SippResult:
    returncode: int | None  # None: killed after the wait timed out
    stats: SippStats | None
    report: str = field(repr=False)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def __str__(self) -> str:
        return self.report

    def assert_ok(self, *, successful: int | None = None) -> None:
        """Assert that every call succeeded (and how many), quoting SIPp's logs if not."""
        assert self.ok, self.report
        if successful is not None:
            assert self.stats is not None, self.report
            assert self.stats.successful == successful, self.report


class SippRun:
    """One SIPp process. Use `start()`, then `await wait(timeout)` or `wait_sync(timeout)`.

    `scenario` is a built-in name (`uac`, `uas`, ...) or a custom one from tests/data/sipp (by
    name) or any path. `remote` is `host:port` for a UAC; a UAS leaves it None. `service` is the
    Request-URI user (-s), `duration_ms` the length of each scenario `<pause/>` (-d). `keys` become
    `-key k v` (used as [k] in scenarios), `variables` become `-set k v` (used as [$k]).
    """

    def __init__(
        self,
        scenario: str | Path,
        *,
        workdir: Path,
        remote: str | None = None,
        calls: int = 1,
        timeout: float = 15.0,
        rate: float | None = None,
        rate_period_ms: int | None = None,
        concurrent_limit: int | None = None,
        service: str | None = None,
        duration_ms: int | None = None,
        keys: Mapping[str, str] | None = None,
        variables: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        trace_messages: bool = True,
        deadcall_wait_ms: int = 1000,
        timeout_is_error: bool = True,
        allocator: PortAllocator | None = None,
        name: str | None = None,
    ) -> None:
        ports = allocator or default_allocator()
        self.scenario = scenario
        self.name = name or (Path(scenario).stem if isinstance(scenario, Path) else scenario)
        self.workdir = workdir / f"sipp-{self.name}-{id(self):x}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = ports.port()
        self.media_port = ports.block(4, align=2)
        self.control_port = ports.port()
        self.timeout = timeout
        self.calls = calls
        self.process: PeerProcess | None = None
        self.killed = False  # by us, because it outlived a wait

        self.error_log = self.workdir / "errors.log"
        self.stat_file = self.workdir / "stats.csv"
        self.screen_file = self.workdir / "screen.log"
        self.log_file = self.workdir / "logs.log"
        self.message_file = self.workdir / "messages.log"
        self.output_file = self.workdir / "stdout.log"

        argv = ["sipp"]
        if remote is not None:
            argv.append(remote)
        if isinstance(scenario, Path) or scenario not in BUILT_IN:
            path = scenario if isinstance(scenario, Path) else scenario_path(scenario)
            argv += ["-sf", str(path)]
        else:
            argv += ["-sn", scenario]
        argv += ["-i", HOST, "-mi", HOST, "-p", str(self.port)]
        argv += ["-ci", HOST, "-cp", str(self.control_port), "-mp", str(self.media_port)]
        argv += ["-nostdin", "-m", str(calls), "-timeout", f"{math.ceil(timeout)}s"]
        if timeout_is_error:
            argv.append("-timeout_error")
        # SIPp remembers a finished Call-ID this long and, while it does, does not exit after
        # -m calls: a single late message (a REGISTER to unregister on the same Call-ID, a
        # stray retransmission) would otherwise keep it running into -timeout (33 s default).
        argv += ["-deadcall_wait", str(deadcall_wait_ms)]
        argv += ["-trace_err", "-error_file", str(self.error_log)]
        argv += ["-trace_stat", "-stf", str(self.stat_file)]
        argv += ["-trace_screen", "-screen_file", str(self.screen_file)]
        argv += ["-trace_logs", "-log_file", str(self.log_file)]
        if trace_messages:
            argv += ["-trace_msg", "-message_file", str(self.message_file)]
        if rate is not None:
            argv += ["-r", f"{rate:g}"]
        if rate_period_ms is not None:
            argv += ["-rp", f"{rate_period_ms}ms"]
        if concurrent_limit is not None:
            argv += ["-l", str(concurrent_limit)]
        if service is not None:
            argv += ["-s", service]
        if duration_ms is not None:
            argv += ["-d", str(duration_ms)]
        for key, value in (keys or {}).items():
            argv += ["-key", key, str(value)]
        for key, value in (variables or {}).items():
            argv += ["-set", key, str(value)]
        argv += list(extra_args)
        self.argv = argv

    def remote_args(self, remote: str) -> SippRun:
        """Set the UAC's target once it is known (before `start()`): the bridge's port is
        allocated after the caller's, which the dial plan must name as a trunk."""
        if self.process is not None:
            raise RuntimeError("remote must be set before start()")
        self.argv = [self.argv[0], remote, *[a for a in self.argv[1:] if a != remote]]
        return self

    @property
    def address(self) -> str:
        """`host:port` where this SIPp receives SIP (what a UAC targets)."""
        return f"{HOST}:{self.port}"

    def start(self) -> SippRun:
        self.process = PeerProcess(self.argv, cwd=self.workdir, output_path=self.output_file)
        return self

    async def started(self, within: float = 5.0) -> SippRun:
        """Wait until SIPp holds its SIP and control sockets (control is bound last)."""
        await wait_until(
            self._bound, within=within, what=f"sipp {self.name} binding", process=self._proc
        )
        return self

    def started_sync(self, timeout: float = 5.0) -> SippRun:
        wait_until_sync(
            self._bound, timeout=timeout, what=f"sipp {self.name} binding", process=self._proc
        )
        return self

    def _bound(self) -> bool:
        return is_bound(self.port) and is_bound(self.control_port)

    @property
    def _proc(self) -> PeerProcess:
        if self.process is None:
            raise RuntimeError("SippRun.start() was not called")
        return self.process

    async def wait(self, within: float | None = None) -> SippResult:
        """Wait for SIPp to exit by itself (killing it if it outlives `within` seconds).

        By default SIPp's own -timeout bounds the wait, plus a little for writing its files.
        """
        code = await self._proc.wait(self._wait_budget(within))
        return self._finish(code)

    def wait_sync(self, timeout: float | None = None) -> SippResult:
        code = self._proc.wait_sync(self._wait_budget(timeout))
        return self._finish(code)

    def _wait_budget(self, timeout: float | None) -> float:
        # SIPp's own -timeout bounds it; leave it a little time to write its files.
        return timeout if timeout is not None else self.timeout + 5.0

    def _finish(self, code: int | None) -> SippResult:
        if code is None:
            self.killed = True
            self.kill()
        return SippResult(returncode=code, stats=self.stats(), report=self.report())

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def stats(self) -> SippStats | None:
        try:
            return SippStats.parse(self.stat_file.read_text(encoding="utf-8", errors="replace"))
        except (FileNotFoundError, ValueError):
            return None

    def logged(self) -> str:
        """What the scenario's `<log>` actions wrote."""
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def logged_headers(self) -> dict[int, dict[str, str]]:
        """`<log>` lines of the form "<call number> <Name>: <value>", per call number.

        uas_ticket, uas_refer and uas_register log what they received this way.
        """
        calls: dict[int, dict[str, str]] = {}
        for line in self.logged().splitlines():
            number, _, rest = line.partition(" ")
            name, colon, value = rest.partition(": ")
            if number.isdigit() and colon and " " not in name:
                calls.setdefault(int(number), {})[name] = value.strip()
        return calls

    def report(self, lines: int = 30) -> str:
        """Command, exit status, statistics and log tails, for assertion messages."""
        code = self.process.returncode if self.process is not None else None
        if self.killed:
            meaning = "killed after the wait timed out"
        elif code is None:
            meaning = "still running"
        else:
            meaning = EXIT_MEANING.get(code, "unexpected exit status")
        stats = self.stats()
        summary = (
            f"created={stats.created} successful={stats.successful} failed={stats.failed} "
            f"reasons={stats.failure_reasons()}"
            if stats
            else "no statistics"
        )
        parts = [
            f"sipp {self.name}: exit {code} ({meaning}); {summary}",
            "command: " + " ".join(self.argv),
            "--- errors.log ---",
            tail(self.error_log, lines),
            "--- stdout ---",
            tail(self.output_file, 10),
        ]
        if self.message_file.exists():
            parts += ["--- messages.log ---", tail(self.message_file, lines * 2)]
        return "\n".join(parts)
