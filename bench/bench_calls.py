"""SIPp calls through the bridge, against SIPp direct and Kamailio (stateful ``tm``), one run.

``python -m bench.bench_calls [--rate 500] [--duration 10] [--hold 10000] [--hold-rate 1000]
[--skip-kamailio] [--skip-hold] [--storage sqlite|postgresql]``

Three rate runs with the same SIPp built-in UAC and UAS on loopback, each lasting
``--duration`` seconds at ``--rate`` calls/s (quote rates only from runs of 10 s or more):
SIPp UAC straight to SIPp UAS, through Kamailio as a stateful proxy (2 workers, 1 GB shared
memory: its 64 MB default runs out near 450 calls/s), and through the bridge (a B2BUA, so it
does twice a proxy's work: two dialogs, two transactions per request and media anchoring).
Achieved rates, failures, and CPU seconds per call are printed, with ratios against the other
two. Then a hold run: ``--hold`` calls established and held at once (SIPp ``-l`` limit and a
long ``-d`` pause) while the bridge's resident memory is read from /proc.

The bridge runs as a child process (``bridge run --config``) with a throwaway config and dial
plan; every child stops by itself (``-m`` calls, ``-timeout``) and is killed by PID otherwise.
Its tickets and audit log go to a SQLite file in its work directory, or with ``--storage
postgresql`` to a throw-away PostgreSQL cluster on 127.0.0.1 started and stopped by this script
(``bench/storage.py``), whose CPU per call is then printed too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.plan import HOTLINE_PLAN, bench_config, bench_plan
from bench.storage import (
    Storage,
    StorageUnavailable,
    add_storage_argument,
    opened,
    unavailable,
)
from bridge import native

ROOT = Path(__file__).resolve().parent.parent
BRIDGE = ROOT / ".venv" / "bin" / "bridge"
ADMISSION_SCENARIO = Path(__file__).resolve().parent / "sipp" / "uac_admission.xml"
HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LOAD_BEHAVIOURS = ["-default_behaviors", "all,-abortunexp"]

KAMAILIO = """#!KAMAILIO
debug=1
log_stderror=yes
fork=yes
children=2
listen=udp:127.0.0.1:{port}
disable_tcp=yes
mpath="{mpath}"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "pv.so"
loadmodule "xlog.so"
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if ($tt != $null) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (method == "ACK") {{
            if (t_check_trans()) {{ t_relay(); }}
            exit;
        }}
        $du = "sip:127.0.0.1:{uas_port}";
        t_relay();
        exit;
    }}
    if (method == "CANCEL") {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    t_check_trans();
    if (method == "INVITE") {{ record_route(); }}
    $du = "sip:127.0.0.1:{uas_port}";
    if (!t_relay()) {{ sl_reply_error(); }}
    exit;
}}
"""


def free_port(*, even: bool = False) -> int:
    """A loopback port free for UDP and TCP now (SIPp also binds media port + 2), below the
    bridge's media range (20000 up), so that the bridge's ports cannot take it first."""
    for _ in range(500):
        port = random.randrange(10000, 19990)
        if even and port % 2:
            continue
        if all(_bindable(port + offset) for offset in (0, 2, 3)):
            return port
    raise RuntimeError("no free loopback port in 10000-19999")


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                return False
    return True


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc/PID/stat (fields 14 and 15)."""
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of one process: user-space work and the kernel's (mostly socket calls)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children_of(pid: int) -> list[int]:
    """`pid` and its descendants (Kamailio forks its workers)."""
    found = [pid]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = (entry / "stat").read_text()
            parent = int(text[text.rindex(")") + 2 :].split()[1])
            if parent in found:
                found.append(int(entry.name))
    return found


def tree_cpu_split(pids: Sequence[int]) -> tuple[float, float]:
    user = kernel = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            one_user, one_kernel = cpu_split(pid)
            user, kernel = user + one_user, kernel + one_kernel
    return user, kernel


def pss_kib(pid: int) -> int:
    """Proportional set size: pages shared between processes (the interpreter, numpy, shared
    by the bridge and its media workers) count once in all, where RSS counts them in each."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def tree_sum(pids: Sequence[int], read: Callable[[int], float]) -> float:
    """``read`` summed over processes; one that is gone counts nothing."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            total += read(pid)
    return total


def tree_rss_kib(pids: Sequence[int]) -> int:
    return int(tree_sum(pids, rss_kib))


def tree_pss_kib(pids: Sequence[int]) -> int:
    return int(tree_sum(pids, pss_kib))


def tree_cpu(pids: Sequence[int]) -> float:
    return tree_sum(pids, cpu_seconds)


def cpu_by_pid(pids: Sequence[int]) -> dict[int, float]:
    found: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            found[pid] = cpu_seconds(pid)
    return found


def cpu_used_since(before: dict[int, float], pids: Sequence[int]) -> float:
    """CPU seconds ``pids`` used since ``before`` was read; a process started since counts
    whole (a server forks a backend per new connection), one gone since counts nothing."""
    after = cpu_by_pid(pids)
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


@dataclass(frozen=True, slots=True, kw_only=True)
class SippStats:
    successful: int
    failed: int
    current: int
    created: int
    elapsed_s: float
    failures: dict[str, int]

    @property
    def rate(self) -> float:
        return self.successful / self.elapsed_s if self.elapsed_s else 0.0


def read_stats(path: Path) -> SippStats | None:
    """The last row of SIPp's `-trace_stat` CSV (cumulative counters)."""
    if not path.is_file():
        return None
    rows = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if len(rows) < 2:
        return None
    raw = dict(zip(rows[0].split(";"), rows[-1].split(";"), strict=False))

    def count(name: str) -> int:
        value = raw.get(name, "0").strip()
        return int(value) if value.isdigit() else 0

    def epoch(name: str) -> float:
        # "2026-01-01<TAB>10:00:00.123456<TAB>1767261600.123456": the last field is epoch time.
        with contextlib.suppress(ValueError):
            return float(raw.get(name, "").split("\t")[-1])
        return 0.0

    elapsed = max(0.0, epoch("CurrentTime") - epoch("StartTime"))
    failures = {
        key.removesuffix("(C)"): count(key)
        for key in raw
        if key.startswith("Failed")
        and key.endswith("(C)")
        and key != "FailedCall(C)"
        and count(key)
    }
    return SippStats(
        successful=count("SuccessfulCall(C)"),
        failed=count("FailedCall(C)"),
        current=count("CurrentCall"),
        created=count("TotalCallCreated"),
        elapsed_s=elapsed,
        failures=failures,
    )


class Sipp:
    """One SIPp process pinned to loopback with its own SIP, media and control ports."""

    def __init__(self, workdir: Path, name: str, args: Sequence[str]) -> None:
        self.name = name
        self.port = free_port()
        self.stat_file = workdir / f"{name}.stat.csv"
        self.error_file = workdir / f"{name}.errors.log"
        self.command = [
            "sipp",
            *args,
            "-i", HOST, "-p", str(self.port),
            "-ci", HOST, "-cp", str(free_port()),
            "-mp", str(free_port(even=True)),
            "-nostdin", "-trace_stat", "-stf", str(self.stat_file), "-fd", "1",
            "-trace_err", "-error_file", str(self.error_file),
            *LOAD_BEHAVIOURS,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        self.workdir = workdir

    def start(self) -> None:
        log = (self.workdir / f"{self.name}.out").open("wb")
        self.process = subprocess.Popen(
            self.command, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
        )

    def wait(self, timeout: float) -> int | None:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            stop(self.process)
            return None

    def stats(self) -> SippStats | None:
        return read_stats(self.stat_file)

    def errors(self, lines: int = 5) -> str:
        if not self.error_file.is_file():
            return ""
        text = self.error_file.read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])


def stop(process: subprocess.Popen[bytes], within: float = 10) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(within)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def wait_bound(port: int, within: float = 15) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _bindable(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {within} s")


@dataclass(frozen=True, slots=True, kw_only=True)
class RateResult:
    label: str
    stats: SippStats | None
    cpu_per_call: float | None
    errors: str = ""
    kernel_share: float | None = None
    rss_kib: int = 0
    refused: int | None = None
    """Calls the bridge refused with 503 (``--max-call-rate``), from its audit log."""
    store_cpu_per_call: float | None = None
    """The PostgreSQL server's CPU seconds per call (``--storage postgresql``)."""


def raise_fd_limit(limit: int) -> None:
    """Let the child hold one socket per anchored RTP/RTCP port (4 a call)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, limit), max(hard, limit)))


class Bridge:
    realtime_priority = 0
    """The bridge's ``[scheduling] realtime_priority`` in every run (``--realtime-priority``)."""
    max_call_rate = 0.0
    """The bridge's ``[sip] max_call_rate`` (``--max-call-rate``); when set, the UAC dials the
    non-urgent 12315 (see ``HOTLINE_PLAN``), since calls to 110 are never refused."""
    storage = Storage("sqlite")
    """Where every bridge run keeps its tickets (``--storage``); each run gets its own database."""
    media_workers = 0
    """The bridge's ``[media] workers`` (``--media-workers``): its CPU and memory figures are
    then those of the bridge process and its worker processes together."""

    def __init__(self, workdir: Path, *, uac_port: int, uas_port: int) -> None:
        self.workdir = workdir
        self.sip_port = free_port()
        self.http_port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.storage_url = self.storage.url(workdir.name.replace("-", "_"))
        (workdir / "plan.toml").write_text(
            bench_plan(
                caller_port=uac_port,
                desk_110_port=uas_port,
                extra=HOTLINE_PLAN.format(desk_port=uas_port),
            )
        )
        (workdir / "bridge.toml").write_text(
            bench_config(
                sip_port=self.sip_port,
                http_port=self.http_port,
                media_min=20000,  # 22,500 port pairs: 10,000 held calls need 20,000
                media_max=65000,
                extra=f"[scheduling]\nrealtime_priority = {self.realtime_priority}\n",
                sip_extra=f"max_call_rate = {self.max_call_rate}",
                media_extra=f"workers = {self.media_workers}",
                storage_url=self.storage_url,
            )
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        log = (self.workdir / "bridge.log").open("wb")
        self.process = subprocess.Popen(
            [str(BRIDGE), "run", "--config", str(self.workdir / "bridge.toml")],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            preexec_fn=lambda: raise_fd_limit(65536),
        )
        try:
            wait_bound(self.sip_port)
            # The sidecar listens last, once the media workers (if any) are up: their CPU
            # and memory are then counted from the start of a run.
            wait_bound(self.http_port)
        except BaseException:
            self.stop()  # a bridge that never got ready is not left running
            raise
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def log_tail(self, lines: int = 5) -> str:
        text = (self.workdir / "bridge.log").read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])


def uas(workdir: Path, name: str, calls: int, timeout: float) -> Sipp:
    return Sipp(workdir, name, ["-sn", "uas", "-m", str(calls), "-timeout", f"{timeout:.0f}s"])


def uac(
    workdir: Path,
    name: str,
    *,
    rate: int,
    calls: int,
    timeout: float,
    service: str = "110",
    scenario: Sequence[str] = ("-sn", "uac"),
) -> Sipp:
    args = [*scenario, "-s", service, "-r", str(rate), "-m", str(calls)]
    return Sipp(workdir, name, [*args, "-timeout", f"{timeout:.0f}s"])


@contextlib.contextmanager
def running(*processes: Sipp) -> Iterator[None]:
    try:
        yield
    finally:
        for sipp in processes:
            if sipp.process is not None:
                stop(sipp.process)


def rate_direct(workdir: Path, rate: int, duration: float) -> RateResult:
    calls = rate * int(duration)
    callee = uas(workdir, "direct-uas", calls, duration + 40)
    caller = uac(workdir, "direct-uac", rate=rate, calls=calls, timeout=duration + 30)
    with running(callee, caller):
        callee.start()
        wait_bound(callee.port)
        caller.command.insert(1, f"{HOST}:{callee.port}")
        caller.start()
        caller.wait(duration + 40)
        callee.wait(10)
    return RateResult(
        label="SIPp direct", stats=caller.stats(), cpu_per_call=None, errors=caller.errors()
    )


def rate_kamailio(workdir: Path, rate: int, duration: float) -> RateResult:
    binary = shutil.which("kamailio")
    if binary is None:
        return RateResult(label="Kamailio (tm)", stats=None, cpu_per_call=None, errors="absent")
    calls = rate * int(duration)
    callee = uas(workdir, "kamailio-uas", calls, duration + 40)
    caller = uac(workdir, "kamailio-uac", rate=rate, calls=calls, timeout=duration + 30)
    port = free_port()
    mpath = next(
        (str(p) for p in Path("/usr/lib").glob("*/kamailio/modules") if p.is_dir()),
        "/usr/lib/x86_64-linux-gnu/kamailio/modules",
    )
    config = workdir / "kamailio.cfg"
    config.write_text(KAMAILIO.format(port=port, mpath=mpath, uas_port=callee.port))
    log = (workdir / "kamailio.log").open("wb")
    proxy = subprocess.Popen(
        [binary, "-f", str(config), "-m", "1024", "-M", "64", "-DD", "-E", "-w", str(workdir)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    try:
        wait_bound(port)
        time.sleep(0.5)
        pids = children_of(proxy.pid)
        with running(callee, caller):
            callee.start()
            wait_bound(callee.port)
            caller.command.insert(1, f"{HOST}:{port}")
            before = tree_cpu(pids)
            caller.start()
            caller.wait(duration + 40)
            callee.wait(10)
            used = tree_cpu(pids) - before
    finally:
        stop(proxy)
    stats = caller.stats()
    per_call = used / stats.successful if stats and stats.successful else None
    return RateResult(
        label="Kamailio (tm)", stats=stats, cpu_per_call=per_call, errors=caller.errors()
    )


def rate_bridge(workdir: Path, rate: int, duration: float) -> RateResult:
    calls = rate * int(duration)
    callee = uas(workdir, "bridge-uas", calls, duration + 40)
    caller = uac(
        workdir,
        "bridge-uac",
        rate=rate,
        calls=calls,
        timeout=duration + 30,
        **(
            {"service": "12315", "scenario": ("-sf", str(ADMISSION_SCENARIO))}
            if Bridge.max_call_rate
            else {}
        ),
    )
    bridge = Bridge(workdir / "bridge-rate", uac_port=caller.port, uas_port=callee.port)
    pid = bridge.start()
    try:
        with running(callee, caller):
            callee.start()
            wait_bound(callee.port)
            caller.command.insert(1, f"{HOST}:{bridge.sip_port}")
            tree = children_of(pid)  # with media workers, they count too
            server_before = cpu_by_pid(Bridge.storage.server_pids())  # PostgreSQL's
            user_before, sys_before = tree_cpu_split(tree)
            caller.start()
            caller.wait(duration + 40)
            callee.wait(10)
            user_after, sys_after = tree_cpu_split(tree)
            server_used = cpu_used_since(server_before, Bridge.storage.server_pids())
            used = user_after - user_before + sys_after - sys_before
            kernel = (sys_after - sys_before) / used if used else None
            rss = tree_rss_kib(tree)
    finally:
        alive = bridge.process is not None and bridge.process.poll() is None
        bridge.stop()
    stats = caller.stats()
    errors = caller.errors() + ("" if alive else "\nbridge died:\n" + bridge.log_tail())
    per_call = used / stats.successful if stats and stats.successful else None
    server_per_call = (
        server_used / stats.successful if server_before and stats and stats.successful else None
    )
    return RateResult(
        label="bridge (B2BUA)",
        stats=stats,
        cpu_per_call=per_call,
        errors=errors,
        rss_kib=rss,
        kernel_share=kernel,
        refused=refused_calls(bridge) if Bridge.max_call_rate else None,
        store_cpu_per_call=server_per_call,
    )


def refused_calls(bridge: Bridge) -> int:
    """Calls the bridge refused (``call.refused`` in its audit log, SQLite or PostgreSQL)."""
    return Bridge.storage.audit_count(bridge.storage_url, "call.refused", base_dir=bridge.workdir)


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldResult:
    target: int
    reached: int
    rss_idle_kib: int
    rss_held_kib: int
    pss_held_kib: int
    failed: int
    errors: str


def hold_calls(workdir: Path, target: int, rate: int) -> HoldResult:
    """`target` calls established at once through the bridge, RSS read while they are held."""
    ramp = target / rate
    hold_ms = int((ramp + 30) * 1000)
    timeout = ramp * 3 + hold_ms / 1000 + 60
    callee = uas(workdir, "hold-uas", target, timeout + 10)
    caller = uac(workdir, "hold-uac", rate=rate, calls=target, timeout=timeout)
    caller.command[1:1] = ["-l", str(target), "-d", str(hold_ms), "-trace_counts"]
    bridge = Bridge(workdir / "bridge-hold", uac_port=caller.port, uas_port=callee.port)
    pid = bridge.start()
    time.sleep(1)
    tree = children_of(pid)  # the bridge and its media workers, if any
    idle = tree_rss_kib(tree)
    held = held_pss = reached = failed = 0
    try:
        with running(callee, caller):
            callee.start()
            wait_bound(callee.port)
            caller.command.insert(1, f"{HOST}:{bridge.sip_port}")
            caller.start()
            assert caller.process is not None
            counts = workdir / f"uac_{caller.process.pid}_counts.csv"
            # SIPp's UAC sits in its pause only once the 200 came and the ACK went: the calls
            # in the pause are the established ones. Sample until that count stops growing.
            deadline = time.monotonic() + ramp * 3 + 15
            settled_at: float | None = None
            while time.monotonic() < deadline and caller.process.poll() is None:
                time.sleep(1)
                paused = paused_calls(counts)
                if paused > reached:
                    reached, held = paused, tree_rss_kib(tree)
                    held_pss = tree_pss_kib(tree)
                    settled_at = None
                elif settled_at is None:
                    settled_at = time.monotonic()
                stats = caller.stats()
                created_all = stats is not None and stats.created >= target
                if created_all and settled_at is not None and time.monotonic() - settled_at > 3:
                    break
            # The calls end by themselves (BYE after the pause); wait for that, bounded.
            caller.wait(timeout + 10)
            callee.wait(15)
            stats = caller.stats()
            if stats is not None:
                failed = stats.failed
    finally:
        bridge.stop()
    return HoldResult(
        target=target,
        reached=reached,
        rss_idle_kib=idle,
        rss_held_kib=held,
        pss_held_kib=held_pss,
        failed=failed,
        errors=caller.errors(),
    )


def paused_calls(counts: Path) -> int:
    """Calls in the UAC's pause now, from SIPp's `-trace_counts` CSV (`6_Pause_Sessions`)."""
    if not counts.is_file():
        return 0
    rows = [line for line in counts.read_text(errors="replace").splitlines() if line.strip()]
    if len(rows) < 2:
        return 0
    raw = dict(zip(rows[0].split(";"), rows[-1].split(";"), strict=False))
    value = raw.get("6_Pause_Sessions", "0").strip()
    return int(value) if value.isdigit() else 0


def describe(result: RateResult) -> str:
    stats = result.stats
    if stats is None:
        return f"{result.label:16} no statistics ({result.errors.strip() or 'did not run'})"
    line = (
        f"{result.label:16} {stats.rate:8.0f} calls/s  {stats.successful:7d} ok  "
        f"{stats.failed:5d} failed  over {stats.elapsed_s:5.1f} s"
    )
    if result.cpu_per_call is not None:
        line += f"  CPU {result.cpu_per_call * 1e3:.3f} ms/call"
        if result.kernel_share is not None:
            line += f" ({result.kernel_share:.0%} kernel)"
    if result.rss_kib:
        line += f"  RSS {result.rss_kib / 1024:.0f} MiB"
    if result.store_cpu_per_call is not None:
        line += f"  PostgreSQL CPU {result.store_cpu_per_call * 1e3:.3f} ms/call"
    if result.refused is not None:
        line += f"  ({result.refused} of the ok refused with 503)"
    if stats.failures:
        line += f"  {stats.failures}"
    return line


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "n/a"


def run_benches(args: argparse.Namespace, workdir: Path) -> bool:
    """The rate and hold runs ``args`` asks for; True when the bridge failed calls."""
    failed = False
    if not args.skip_rate:
        print(
            f"Rate: {args.rate} calls/s offered for {args.duration:.0f} s, SIPp built-in "
            "uac -> uas on loopback (2 cores shared with the load generators), bridge "
            f"real-time priority {args.realtime_priority or 'none'}, media workers "
            f"{args.media_workers or 'none'}, call core {native.status()}, ticket store "
            f"{Bridge.storage.describe()}"
        )
        results: list[RateResult] = []
        if not args.skip_direct:
            results.append(rate_direct(workdir, args.rate, args.duration))
            print("  " + describe(results[-1]), flush=True)
        if not args.skip_kamailio:
            results.append(rate_kamailio(workdir, args.rate, args.duration))
            print("  " + describe(results[-1]), flush=True)
        bridged = rate_bridge(workdir, args.rate, args.duration)
        results.append(bridged)
        print("  " + describe(bridged), flush=True)
        if bridged.stats is None or bridged.stats.failed or bridged.errors.strip():
            failed = bridged.stats is None or bridged.stats.failed > 0
            if bridged.errors.strip():
                print("  bridge run errors (SIPp error log tail):")
                print("    " + bridged.errors.strip().replace("\n", "\n    "))
        for other in results[:-1]:
            theirs = other.stats.rate if other.stats else None
            mine = bridged.stats.rate if bridged.stats else None
            line = f"  bridge / {other.label}: rate {ratio(mine, theirs)}"
            if other.cpu_per_call is not None:
                line += f", CPU per call {ratio(bridged.cpu_per_call, other.cpu_per_call)}"
            print(line)
    if not args.skip_hold and args.hold > 0:
        # Each call anchors two RTP/RTCP pairs: 4 sockets. Without CAP_SYS_RESOURCE the hard
        # limit cannot be raised, which caps the concurrent calls this machine can hold.
        raise_fd_limit(65536)
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        processes = max(1, args.media_workers)  # each holds its share of the sockets
        stock = 128 if args.media_workers else 0  # pairs each worker binds ahead
        if args.hold * 4 // processes + 256 + stock > limit:
            capped = processes * (limit - 256 - stock) // 4
            print(f"  open-file limit {limit} (hard): {args.hold} calls capped to {capped}")
            args.hold = capped
        print(
            f"Hold: {args.hold} concurrent calls through the bridge (ramp {args.hold_rate}/s), "
            f"ticket store {Bridge.storage.describe()}"
        )
        held = hold_calls(workdir, args.hold, args.hold_rate)
        added = held.rss_held_kib - held.rss_idle_kib
        per_call = added / held.reached if held.reached else 0
        who = "bridge + media workers" if args.media_workers else "bridge"
        print(
            f"  established and held: {held.reached} of {held.target}, failed "
            f"{held.failed}; {who} RSS idle {held.rss_idle_kib / 1024:.0f} MiB, held "
            f"{held.rss_held_kib / 1024:.0f} MiB ({per_call:.1f} KiB per call), PSS held "
            f"{held.pss_held_kib / 1024:.0f} MiB"
        )
        if held.errors.strip():
            print("    " + held.errors.strip().replace("\n", "\n    "))
        failed = failed or held.failed > 0 or held.reached < held.target
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=500, help="offered calls/s (default 500)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per rate run")
    parser.add_argument("--hold", type=int, default=10000, help="concurrent calls to hold")
    parser.add_argument("--hold-rate", type=int, default=150, help="calls/s while ramping up")
    parser.add_argument("--skip-kamailio", action="store_true")
    parser.add_argument("--skip-direct", action="store_true")
    parser.add_argument("--skip-rate", action="store_true")
    parser.add_argument("--skip-hold", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    add_storage_argument(parser)
    parser.add_argument(
        "--realtime-priority",
        type=int,
        default=0,
        metavar="N",
        help="run the bridge with [scheduling] realtime_priority = N (SCHED_RR); SIPp and "
        "Kamailio keep normal scheduling",
    )
    parser.add_argument(
        "--max-call-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="run the bridge with [sip] max_call_rate = R; its UAC then dials 12315 (not "
        "urgent) so that calls over R/s are refused with 503",
    )
    parser.add_argument(
        "--media-workers",
        type=int,
        default=0,
        metavar="N",
        help="run the bridge with [media] workers = N (relay processes); CPU and RSS are then "
        "the bridge's and its workers' together, and the open-file cap of the hold run is "
        "per process",
    )
    args = parser.parse_args(argv)
    Bridge.media_workers = args.media_workers
    Bridge.realtime_priority = args.realtime_priority
    Bridge.max_call_rate = args.max_call_rate
    if shutil.which("sipp") is None:
        print("bench_calls: sipp is not installed (apt package sip-tester); skipped")
        return 0
    if not BRIDGE.exists():
        print(f"bench_calls: {BRIDGE.relative_to(ROOT)} missing (run `make venv`); skipped")
        return 0
    reason = unavailable(args.storage)
    if reason is not None:
        print(f"bench_calls: --storage {args.storage}: {reason}")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-calls-"))
    try:
        with opened(args.storage, free_port()) as storage:
            Bridge.storage = storage
            failed = run_benches(args, workdir)
    except StorageUnavailable as exc:
        print(f"bench_calls: --storage {args.storage}: {exc}")
        return 2
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
