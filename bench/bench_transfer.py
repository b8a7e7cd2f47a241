"""Transfer-key latency and screen-pop latency through the bridge, on loopback with real sockets.

``python -m bench.bench_transfer [--rate 50] [--duration 10] [--warmup 1] [--ring 1.0]
[--hold 1.0] [--storage sqlite|postgresql] [--keep]``

The bridge runs as a child process (``bridge run --config``, throwaway config and dial plan).
This script plays every other party with raw SIP text over UDP on 127.0.0.1:

- a *caller* (the carrier trunk) places ``--rate`` calls/s to ``110``;
- the bridge rings the *agent* (the 110 desk's trunk), which answers at once; ``--press-after``
  seconds after its call started the agent presses the transfer key ``*1`` as two SIP INFOs
  (``application/dtmf-relay``, ``Signal=*`` then, after its 200, ``Signal=1``);
- the bridge stores a ticket (SQLite, or with ``--storage postgresql`` a throw-away PostgreSQL
  cluster on 127.0.0.1 that this script starts and stops, see ``bench/storage.py``) and rings
  the *target* platform ``12313``, which sends 180 at once and 200 after ``--ring`` seconds; the
  bridge then releases the agent, and the caller hangs up ``--hold`` seconds later;
- a WebSocket subscriber (``GET /api/v1/events`` with an agent token of platform 12313, i.e. a
  receiving seat) waits for each ticket's ``ringing`` event (the screen pop).

Measured, for transfers started after ``--warmup`` seconds:

(a) key → INVITE: from ``sendto`` of the ``Signal=1`` INFO (``time.time_ns``) to the kernel's
    receive timestamp of the target's INVITE (``SO_TIMESTAMPNS``, same clock), so the peers'
    own event loop adds nothing to the arrival side;
(b) 180 → screen pop: from ``sendto`` of the target's 180 to the moment the WebSocket client
    hands over the ``ringing`` message (user space: includes this process's loop delay, whose
    p99 is printed alongside).

Every child stops by itself (bounded call count, a run deadline) and is killed by PID otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.bench_calls import (
    BRIDGE,
    HOST,
    cpu_by_pid,
    cpu_seconds,
    cpu_used_since,
    free_port,
    raise_fd_limit,
    rss_kib,
    stop,
)
from bench.plan import bench_config, bench_plan
from bench.sip_peer import (
    Dialog,
    Endpoint,
    Message,
    build,
    new_branch,
    parse,
    response,
    uri_of,
    user_of,
)
from bench.storage import (
    Storage,
    StorageUnavailable,
    add_storage_argument,
    opened,
    unavailable,
)
from bench.transfer_report import report

TOKEN = "bench-seat-token-0123456789"
T1 = 0.5

TRANSFER_EXTRA = """
[[trunks]]
name = "target"
destinations = ["sip:12313@127.0.0.1:{target_port}"]
[[platforms]]
key = "12313"
label = "12313 hotline"
trunk = "target"
[features]
digit_timeout = 3.0
[[features.codes]]
code = "*1"
action = "transfer"
to = "12313"
"""

SEAT_TOKEN = """
[[sidecar.tokens]]
token = "{token}"
name = "seat-12313-01"
role = "agent"
seat = "seat-12313-01"
platform = "12313"
"""

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n"
)


@dataclass(slots=True, kw_only=True)
class Transfer:
    index: int
    user: str
    call_id: str
    from_tag: str
    caller_to: str = ""
    caller_uri: str = ""
    agent: Dialog | None = None
    target: Dialog | None = None
    info_sent_ns: int = 0
    invite_kernel_ns: int = 0
    invite_loop_ns: int = 0
    ticket_id: str = ""
    ringing_sent_ns: int = 0
    answered: bool = False
    agent_released: bool = False
    done: bool = False
    failure: str = ""


@dataclass(slots=True)
class Pending:
    data: bytes
    on_response: Callable[[Message], None]
    interval: float = T1
    handle: asyncio.TimerHandle | None = None
    tries: int = 1


@dataclass(slots=True)
class Scenario:
    loop: asyncio.AbstractEventLoop
    bridge: tuple[str, int]
    press_after: float
    ring: float
    hold: float
    transfers: dict[str, Transfer] = field(default_factory=dict)
    pending: dict[str, Pending] = field(default_factory=dict)
    seen: dict[tuple[str, str, int, str], bytes] = field(default_factory=dict)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 0
    ended: int = 0
    stray: int = 0
    media: Endpoint | None = None
    caller: Endpoint | None = None
    agent: Endpoint | None = None
    target: Endpoint | None = None

    def open(self) -> None:
        self.media = Endpoint(self.loop, None)
        self.caller = Endpoint(self.loop, self.on_caller)
        self.agent = Endpoint(self.loop, self.on_agent)
        self.target = Endpoint(self.loop, self.on_target)

    def close(self) -> None:
        for pending in self.pending.values():
            if pending.handle is not None:
                pending.handle.cancel()
        for endpoint in (self.media, self.caller, self.agent, self.target):
            if endpoint is not None:
                endpoint.close()

    @property
    def sdp(self) -> str:
        assert self.media is not None
        return SDP.format(port=self.media.port)

    # client transactions: retransmitted on T1 doubling until any response (loopback, so rare)

    def request(
        self, endpoint: Endpoint, data: bytes, branch: str, on_response: Callable[[Message], None]
    ) -> int:
        pending = Pending(data, on_response)
        self.pending[branch] = pending
        pending.handle = self.loop.call_later(T1, self._retransmit, endpoint, branch)
        return endpoint.send(data, self.bridge)

    def _retransmit(self, endpoint: Endpoint, branch: str) -> None:
        pending = self.pending.get(branch)
        if pending is None:
            return
        if pending.tries >= 7:
            del self.pending[branch]
            pending.on_response(parse(b"SIP/2.0 408 Request Timeout\r\nCSeq: 0 X\r\n\r\n"))
            return
        pending.tries += 1
        pending.interval = min(pending.interval * 2, 4.0)
        endpoint.send(pending.data, self.bridge)
        pending.handle = self.loop.call_later(pending.interval, self._retransmit, endpoint, branch)

    def _response(self, message: Message) -> None:
        pending = self.pending.get(message.branch)
        if pending is None:
            if message.cseq[1] == "INVITE" and 200 <= message.status < 300:
                self._ack_again(message)
            return
        if pending.handle is not None:
            pending.handle.cancel()
            pending.handle = None
        if message.status >= 200:
            del self.pending[message.branch]
        pending.on_response(message)

    def _replayed(
        self, role: str, message: Message, endpoint: Endpoint, addr: tuple[str, int]
    ) -> bool:
        """A retransmitted request gets the response it got before."""
        number, method = message.cseq
        key = (role, message.call_id, number, method)
        if key in self.seen:
            if self.seen[key]:
                endpoint.send(self.seen[key], addr)
            return True
        return False

    def _answer(
        self, role: str, message: Message, endpoint: Endpoint, addr: tuple[str, int], data: bytes
    ) -> None:
        number, method = message.cseq
        self.seen[(role, message.call_id, number, method)] = data
        endpoint.send(data, addr)

    # caller -----------------------------------------------------------------------------

    def start_call(self, index: int) -> None:
        assert self.caller is not None
        user = f"1390{index:07d}"
        call_id = f"bench-{index}-{secrets.token_hex(4)}@127.0.0.1"
        transfer = Transfer(
            index=index,
            user=user,
            call_id=call_id,
            from_tag=secrets.token_hex(4),
        )
        self.transfers[user] = transfer
        self.transfers[call_id] = transfer
        branch = new_branch()
        port = self.caller.port
        bridge_uri = f"sip:110@{self.bridge[0]}:{self.bridge[1]}"
        data = build(
            f"INVITE {bridge_uri} SIP/2.0",
            [
                ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport"),
                ("Max-Forwards", "70"),
                ("From", f"<sip:{user}@127.0.0.1:{port}>;tag={transfer.from_tag}"),
                ("To", f"<{bridge_uri}>"),
                ("Call-ID", call_id),
                ("CSeq", "1 INVITE"),
                ("Contact", f"<sip:{user}@127.0.0.1:{port}>"),
                ("Content-Type", "application/sdp"),
            ],
            self.sdp,
        )
        self.request(self.caller, data, branch, lambda m: self._caller_invite_response(transfer, m))
        self.loop.call_later(self.press_after, self._press_key, transfer)

    def _caller_invite_response(self, transfer: Transfer, message: Message) -> None:
        if message.status < 200:
            return
        if message.status >= 300:
            self._fail(transfer, f"caller INVITE got {message.status}")
            return
        transfer.caller_to = message.get("to")
        transfer.caller_uri = uri_of(message.get("contact")) or f"sip:110@{HOST}"
        self._ack_again(message)

    def _ack_again(self, message: Message) -> None:
        transfer = self.transfers.get(message.call_id)
        if transfer is None or self.caller is None:
            return
        port = self.caller.port
        uri = uri_of(message.get("contact")) or transfer.caller_uri
        ack = build(
            f"ACK {uri} SIP/2.0",
            [
                ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch={new_branch()};rport"),
                ("Max-Forwards", "70"),
                ("From", message.get("from")),
                ("To", message.get("to")),
                ("Call-ID", message.call_id),
                ("CSeq", f"{message.cseq[0]} ACK"),
            ],
        )
        self.caller.send(ack, self.bridge)

    def _hang_up(self, transfer: Transfer) -> None:
        assert self.caller is not None
        if transfer.done or not transfer.caller_to:
            return
        port = self.caller.port
        branch = new_branch()
        data = build(
            f"BYE {transfer.caller_uri} SIP/2.0",
            [
                ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport"),
                ("Max-Forwards", "70"),
                ("From", f"<sip:{transfer.user}@127.0.0.1:{port}>;tag={transfer.from_tag}"),
                ("To", transfer.caller_to),
                ("Call-ID", transfer.call_id),
                ("CSeq", "2 BYE"),
            ],
        )
        self.request(self.caller, data, branch, lambda m: self._end(transfer, m))

    def _end(self, transfer: Transfer, message: Message) -> None:
        if message.status >= 300:
            self._fail(transfer, f"caller BYE got {message.status}")
            return
        self._finish(transfer)

    def on_caller(self, message: Message, addr: tuple[str, int], _stamp: int) -> None:
        assert self.caller is not None
        if not message.is_request:
            self._response(message)
            return
        if message.method == "ACK" or self._replayed("caller", message, self.caller, addr):
            return
        transfer = self.transfers.get(message.call_id)
        body = self.sdp if message.method == "INVITE" else ""
        data = response(message, 200, "OK", to_tag="c", body=body)
        self._answer("caller", message, self.caller, addr, data)
        if message.method == "BYE" and transfer is not None:
            self._fail(transfer, "the bridge hung up the caller")

    # agent ------------------------------------------------------------------------------

    def on_agent(self, message: Message, addr: tuple[str, int], _stamp: int) -> None:
        assert self.agent is not None
        if not message.is_request:
            self._response(message)
            return
        if message.method == "ACK" or self._replayed("agent", message, self.agent, addr):
            return
        if message.method == "INVITE" and ";tag=" not in message.get("to"):
            transfer = self.transfers.get(user_of(message.get("from")))
            tag = secrets.token_hex(4)
            data = response(
                message,
                200,
                "OK",
                to_tag=tag,
                body=self.sdp,
                extra=(("Contact", f"<sip:110@127.0.0.1:{self.agent.port}>"),),
            )
            if transfer is None:
                self.stray += 1
            else:
                transfer.agent = Dialog(
                    call_id=message.call_id,
                    local=f"{message.get('to')};tag={tag}",
                    remote=message.get("from"),
                    remote_uri=uri_of(message.get("contact")),
                )
                self.transfers[message.call_id] = transfer
            self._answer("agent", message, self.agent, addr, data)
            return
        transfer = self.transfers.get(message.call_id)
        body = self.sdp if message.method == "INVITE" else ""
        self._answer(
            "agent", message, self.agent, addr, response(message, 200, "OK", to_tag="a", body=body)
        )
        if message.method == "BYE" and transfer is not None:
            transfer.agent_released = True

    def _press_key(self, transfer: Transfer) -> None:
        if transfer.agent is None or not transfer.caller_to:
            self._fail(transfer, "call not established when the key was due")
            return
        self._info(transfer, "*", lambda m: self._after_star(transfer, m))

    def _after_star(self, transfer: Transfer, message: Message) -> None:
        if message.status >= 300:
            self._fail(transfer, f"INFO * got {message.status}")
            return
        transfer.info_sent_ns = self._info(transfer, "1", lambda m: None)

    def _info(self, transfer: Transfer, digit: str, then: Callable[[Message], None]) -> int:
        assert self.agent is not None
        assert transfer.agent is not None
        dialog = transfer.agent
        dialog.cseq += 1
        branch = new_branch()
        data = build(
            f"INFO {dialog.remote_uri} SIP/2.0",
            [
                ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.agent.port};branch={branch};rport"),
                ("Max-Forwards", "70"),
                ("From", dialog.local),
                ("To", dialog.remote),
                ("Call-ID", dialog.call_id),
                ("CSeq", f"{dialog.cseq} INFO"),
                ("Contact", f"<sip:110@127.0.0.1:{self.agent.port}>"),
                ("Content-Type", "application/dtmf-relay"),
            ],
            f"Signal={digit}\r\nDuration=160\r\n",
        )
        return self.request(self.agent, data, branch, then)

    # target -----------------------------------------------------------------------------

    def on_target(self, message: Message, addr: tuple[str, int], stamp: int) -> None:
        assert self.target is not None
        if not message.is_request:
            self._response(message)
            return
        if message.method == "ACK":
            transfer = self.transfers.get(message.call_id)
            if transfer is not None and not transfer.answered:
                transfer.answered = True
                self.loop.call_later(self.hold, self._hang_up, transfer)
            return
        if self._replayed("target", message, self.target, addr):
            return
        if message.method == "INVITE" and ";tag=" not in message.get("to"):
            loop_ns = time.time_ns()
            transfer = self.transfers.get(user_of(message.get("from")))
            tag = secrets.token_hex(4)
            ringing = response(message, 180, "Ringing", to_tag=tag)
            number, method = message.cseq
            self.seen[("target", message.call_id, number, method)] = ringing
            if transfer is None:
                self.stray += 1
                self.target.send(ringing, addr)
                return
            transfer.invite_kernel_ns = stamp
            transfer.invite_loop_ns = loop_ns
            transfer.ticket_id = message.get("x-ticket-id")
            transfer.target = Dialog(
                call_id=message.call_id,
                local=f"{message.get('to')};tag={tag}",
                remote=message.get("from"),
                remote_uri=uri_of(message.get("contact")),
            )
            self.transfers[message.call_id] = transfer
            transfer.ringing_sent_ns = self.target.send(ringing, addr)
            ok = response(
                message,
                200,
                "OK",
                to_tag=tag,
                body=self.sdp,
                extra=(("Contact", f"<sip:12313@127.0.0.1:{self.target.port}>"),),
            )
            self.loop.call_later(self.ring, self._answer, "target", message, self.target, addr, ok)
            return
        self._answer("target", message, self.target, addr, response(message, 200, "OK", to_tag="t"))

    # bookkeeping ------------------------------------------------------------------------

    def _fail(self, transfer: Transfer, reason: str) -> None:
        if not transfer.failure:
            transfer.failure = reason
        self._finish(transfer)

    def _finish(self, transfer: Transfer) -> None:
        if transfer.done:
            return
        transfer.done = True
        self.ended += 1
        if self.ended >= self.expected:
            self.finished.set()


# -- measurement ----------------------------------------------------------------------------


async def watch_screen_pops(url: str, pops: dict[str, int], ready: asyncio.Event) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session, session.ws_connect(url, headers=headers) as ws:
        async for frame in ws:
            if frame.type is not aiohttp.WSMsgType.TEXT:
                break
            at = time.time_ns()
            message = json.loads(frame.data)
            if message.get("type") == "subscribed":
                ready.set()
            elif message.get("type") == "ticket" and message.get("kind") == "ringing":
                pops.setdefault(message["ticket"]["id"], at)


async def watch_loop_lag(lags: list[float], stop_at: float) -> None:
    # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds.
    while time.perf_counter() < stop_at:
        before = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append((time.perf_counter() - before - 0.01) * 1000)


@dataclass(slots=True, kw_only=True)
class Options:
    rate: int
    duration: float
    warmup: float
    press_after: float
    ring: float
    hold: float
    keep: bool
    storage: str = "sqlite"
    """The ``--storage`` asked for."""


class BridgeProcess:
    def __init__(
        self, workdir: Path, *, caller: int, agent: int, target: int, storage_url: str
    ) -> None:
        self.workdir = workdir
        self.storage_url = storage_url
        (workdir / "plan.toml").write_text(
            bench_plan(
                caller_port=caller,
                desk_110_port=agent,
                extra=TRANSFER_EXTRA.format(target_port=target),
            )
        )
        self.sip_port = self.http_port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, attempts: int = 3) -> int:
        """Start on fresh ports; again when another process took one between pick and bind."""
        for _ in range(attempts):
            self.sip_port = free_port()
            self.http_port = free_port()
            (self.workdir / "bridge.toml").write_text(
                bench_config(
                    sip_port=self.sip_port,
                    http_port=self.http_port,
                    media_min=40000,
                    media_max=60000,
                    extra=SEAT_TOKEN.format(token=TOKEN),
                    storage_url=self.storage_url,
                )
            )
            log = (self.workdir / "bridge.log").open("wb")
            self.process = subprocess.Popen(
                [str(BRIDGE), "run", "--config", str(self.workdir / "bridge.toml")],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                preexec_fn=lambda: raise_fd_limit(65536),
            )
            if self._listening(within=15):
                return self.process.pid
            stop(self.process)
        raise RuntimeError("the bridge did not start:\n" + self.log_tail())

    def _listening(self, within: float) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and self.process.poll() is None:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                if probe.connect_ex((HOST, self.http_port)) == 0:
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def log_tail(self, lines: int = 8) -> str:
        path = self.workdir / "bridge.log"
        text = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
        return "\n".join(text[-lines:])


async def run(options: Options, workdir: Path, storage: Storage) -> int:
    loop = asyncio.get_running_loop()
    scenario = Scenario(
        loop=loop,
        bridge=(HOST, 0),
        press_after=options.press_after,
        ring=options.ring,
        hold=options.hold,
    )
    scenario.open()
    assert scenario.caller is not None
    assert scenario.agent is not None
    assert scenario.target is not None
    bridge = BridgeProcess(
        workdir,
        caller=scenario.caller.port,
        agent=scenario.agent.port,
        target=scenario.target.port,
        storage_url=storage.url("bench_transfer"),
    )
    total = int(options.rate * (options.warmup + options.duration))
    scenario.expected = total
    pops: dict[str, int] = {}
    lags: list[float] = []
    watcher: asyncio.Task[None] | None = None
    try:
        pid = await loop.run_in_executor(None, bridge.start)
        scenario.bridge = (HOST, bridge.sip_port)
        ready = asyncio.Event()
        url = f"http://{HOST}:{bridge.http_port}/api/v1/events"
        watcher = loop.create_task(watch_screen_pops(url, pops, ready))
        await asyncio.wait_for(ready.wait(), 10)
        cpu_before = cpu_seconds(pid)
        server_before = cpu_by_pid(storage.server_pids())  # PostgreSQL's, if used
        began = loop.time()
        for index in range(total):
            loop.call_at(began + index / options.rate, scenario.start_call, index)
        run_time = options.warmup + options.duration
        lag_task = loop.create_task(watch_loop_lag(lags, time.perf_counter() + run_time))
        deadline = run_time + options.press_after + options.ring + options.hold + 20
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(scenario.finished.wait(), deadline)
        await asyncio.sleep(0.3)  # the last screen pops may trail the last BYE
        elapsed = loop.time() - began
        cpu = cpu_seconds(pid) - cpu_before
        store_cpu = cpu_used_since(server_before, storage.server_pids()) if server_before else None
        rss = rss_kib(pid)
        lag_task.cancel()
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await watcher
        scenario.close()
        bridge.stop()
    return report(
        options,
        scenario,
        pops,
        lags,
        cpu=cpu,
        rss=rss,
        elapsed=elapsed,
        log_tail=bridge.log_tail(),
        store=storage.describe(),
        store_cpu=store_cpu,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=int, default=50, help="transfers per second")
    parser.add_argument("--duration", type=float, default=10.0, help="counted seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not counted")
    parser.add_argument("--press-after", type=float, default=0.3, help="key after call start")
    parser.add_argument("--ring", type=float, default=1.0, help="target rings this long")
    parser.add_argument("--hold", type=float, default=1.0, help="caller stays after transfer")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    add_storage_argument(parser)
    args = parser.parse_args(argv)
    if not BRIDGE.exists():
        print(f"no bridge executable at {BRIDGE.relative_to(BRIDGE.parents[2])}; run make venv")
        return 2
    reason = unavailable(args.storage)
    if reason is not None:
        print(f"bench_transfer: --storage {args.storage}: {reason}")
        return 2
    options = Options(
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        press_after=args.press_after,
        ring=args.ring,
        hold=args.hold,
        keep=args.keep,
        storage=args.storage,
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-transfer-"))
    try:
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        with opened(options.storage, free_port()) as storage:
            return asyncio.run(run(options, workdir, storage))
    except StorageUnavailable as exc:
        print(f"bench_transfer: --storage {options.storage}: {exc}")
        return 2
    finally:
        if options.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
