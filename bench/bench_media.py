"""Media relay load on loopback: relayed calls and three-party mixes, against a bare relay.

``python bench/bench_media.py [--calls 500] [--mixes 150] [--seconds 4] [--warmup 0.5]
[--loop uvloop] [--sample 5] [--realtime-priority N] [--phones-priority N] [--workers N]``

The relay runs in a child process, as in production; this process plays the phones with plain
non-blocking sockets (one per leg, as a real call has) driven by epoll, so the phones cost as
little as possible and do not share the relay's core. Every phone sends a 20 ms packet 50 times
a second, phones spread evenly over the 20 ms so the load is smooth as with real calls. Half the
calls are A-law on one leg and μ-law on the other (transcoded), half A-law on both. The phones
send for ``--warmup`` seconds before the measured window opens: real calls start one by one,
while here a thousand streams start in the same 20 ms, and each stream's first packet (latching,
stream state) costs the relay more than the rest, a burst no real service sees.

Each packet carries (stream, index, send time) in an RTP header extension, which the relay
passes through while rewriting the fixed header and transcoding the payload; so the receiver
measures loss and one-way delay per packet. Every phone sends, but only the phones of every
``--sample``-th call are read (default one in five): real phones are other machines, and
reading all 50,000 packets/s here would take the CPU the relay is being measured on. A packet's
delay runs from its send time to the kernel's receive time stamp on the phone's socket
(SO_TIMESTAMPNS), so it is what the relay and loopback add, not how late the phone process got
round to reading it (printed too, "as read"). "Added jitter" is each packet's delay above the
smallest delay seen on its stream, p99 over all packets. CPU is the relay process's own CPU time
over the measured window. The relay sends no RTCP here: these phones have no RTCP sockets. With
``--phones-priority N`` (below the relay's ``--realtime-priority``) the phones run at SCHED_RR
too, so the relay competes with them as it would with other real-time work.

With ``--realtime-priority`` a stall probe (see :mod:`bench.stall_probe`) runs on every CPU one
step above the relay, and each run says how often the machine itself stopped for over 2 ms, how
many of the packets delayed over 5 ms were on their way during such a stall, and the added jitter
p99 without those packets. On a virtual machine whose host pauses it for a few milliseconds now
and then, no relay can do better than those stalls.

Three runs, all bounded (about 5 s each): a bare asyncio relay that forwards datagrams between
fixed socket pairs (the ratio baseline), the bridge relay with the same calls, and the bridge
relay mixing three-party conferences on its 20 ms tick. Figures are printed; BENCHMARKS.md
records them.

``--workers N`` runs the bridge relay and the mix as the product does with ``[media] workers =
N``: the child process plays the bridge process, creating a :class:`WorkerMedia` over the port
range (N worker processes, each a MediaRelay over its share, on uvloop when installed whatever
``--loop`` says) and driving it through the call core's Media calls: ``allocate`` (a call's
second leg, or a conference's other members, with ``near=`` its first leg, so a call stays in
one worker), ``point`` at the phones and ``connect``/``conference``. Before it reports ready it
waits, bounded, until every worker has handled its set-up commands (see
:func:`_serve_workers`). CPU is then the sum over the child and the workers of
``/proc/<pid>/stat`` utime+stime over the sending window, printed with the number of processes
it is spread over and the share of the busiest one: a process that has its core to itself keeps
up, so the busiest share, not the sum, decides the jitter. The workers' tick lateness and
counters are out of reach, so the mix is judged at the phones instead: "mix arrival jitter" is
each sampled phone's inter-arrival gap of mixed packets minus 20 ms, p99 (and max) over all gaps
in the sending window; the mixed packets received are compared with one per 20 ms of the window.
``--realtime-priority`` is passed on to the workers. The bare run is the same with or without
workers (the per-packet baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from bench.stall_probe import Stall, StallProbe, during_stalls
from bridge import native
from bridge.config import MediaConfig
from bridge.media import g711
from bridge.media.dispatch import WorkerLeg
from bridge.media.relay import MediaEndpoint, MediaRelay
from bridge.media.worker import STOCK
from bridge.media_workers import WorkerMedia
from bridge.process import apply_realtime_priority, settle_heap

HOST = "127.0.0.1"
PORT_MIN = 20000
PACKET_SECONDS = 0.02
JITTER_TARGET_MS = 5.0
_HEADER = struct.Struct("!BBHII")
_EXTENSION = struct.Struct("!HHIId")  # profile, words, stream, index, send time
PAYLOAD = bytes(160)
SO_TIMESTAMPNS = 35
"""Linux: the kernel stamps each datagram with the time it reached the socket (``timespec``,
CLOCK_REALTIME), so the send time in a packet is taken on the same clock."""
_TIMESPEC = struct.Struct("@qq")


# -- the relay side (child process) ----------------------------------------------------------


def _leg_codec(mode: str, leg: int) -> int:
    """Legs 1, 5, 9, ... speak μ-law: every other call is transcoded, both ways."""
    return g711.PCMU if mode == "relay" and leg % 4 == 1 else g711.PCMA


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


class _BareForward(asyncio.DatagramProtocol):
    """The baseline: forward every datagram, untouched, to one fixed address."""

    def __init__(self) -> None:
        self.out: asyncio.DatagramTransport | None = None
        self.to: tuple[str, int] = (HOST, 0)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.out is not None:
            self.out.sendto(data, self.to)


async def _serve(conn: Connection, mode: str, count: int) -> None:
    """Set up ``count`` legs for ``mode``, report ports, then measure between start and stop."""
    loop = asyncio.get_running_loop()
    # Spare pairs in the range: ports other programs hold are skipped, as in production.
    # No RTCP: the phones here have no RTCP sockets (port + 1 may be another phone's).
    relay = MediaRelay(HOST, PORT_MIN, PORT_MIN + 4 * count + 400, rtcp_interval=0)
    endpoints: list[MediaEndpoint] = []
    bare: list[tuple[asyncio.DatagramTransport, _BareForward]] = []
    if mode == "bare":
        for _ in range(count):
            transport, protocol = await loop.create_datagram_endpoint(
                _BareForward, local_addr=(HOST, 0)
            )
            bare.append((transport, protocol))
        ports = [t.get_extra_info("sockname")[1] for t, _ in bare]
    else:
        for index in range(count):
            endpoints.append(relay.allocate(codec=_leg_codec(mode, index)))
        ports = [e.port for e in endpoints]
    conn.send(ports)
    phone_ports: list[int] = conn.recv()
    if mode == "bare":
        for index, (_, protocol) in enumerate(bare):
            partner = index ^ 1
            protocol.out = bare[partner][0]
            protocol.to = (HOST, phone_ports[partner])
    else:
        for endpoint, port in zip(endpoints, phone_ports, strict=True):
            endpoint.set_remote(HOST, port)
        if mode == "relay":
            for index in range(0, count, 2):
                relay.connect(endpoints[index], endpoints[index + 1])
        else:
            for index in range(0, count, 3):
                relay.conference(endpoints[index : index + 3])
    settle_heap()  # as the service does once started
    conn.send("ready")

    done = asyncio.Event()
    marks: dict[str, float] = {}

    def on_command() -> None:
        command = conn.recv()
        if command == "start":
            marks["cpu"], marks["wall"] = time.process_time(), time.monotonic()
            marks["ticks"] = relay.counters.ticks
            relay.tick_lateness.clear()
        elif command == "stop":
            marks["cpu"] = time.process_time() - marks["cpu"]
            marks["wall"] = time.monotonic() - marks["wall"]
            marks["ticks"] = relay.counters.ticks - marks["ticks"]
            done.set()

    loop.add_reader(conn.fileno(), on_command)
    await done.wait()
    loop.remove_reader(conn.fileno())
    lateness = np.array(relay.tick_lateness or [0.0]) * 1000
    conn.send(
        {
            "cpu": marks["cpu"],
            "wall": marks["wall"],
            "ticks": marks["ticks"],
            "tick_p50_ms": float(np.percentile(lateness, 50)),
            "tick_p99_ms": float(np.percentile(lateness, 99)),
            "tick_max_ms": float(lateness.max()),
            "counters": relay.counters.as_dict(),
        }
    )
    relay.close()
    for transport, _ in bare:
        transport.close()


SETUP_TIMEOUT = 15.0
"""Seconds the media workers may take to refill their port stock or handle the set-up."""


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Let the loop run (it carries the workers' control traffic) until ``condition`` holds."""
    deadline = time.monotonic() + SETUP_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"media workers: timed out waiting until {what}")
        await asyncio.sleep(0.002)


def _cpu_ticks(pids: list[int]) -> dict[int, int]:
    """utime + stime of each process (all its threads), in clock ticks."""
    ticks: dict[int, int] = {}
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # fields from 3 (state) on
        ticks[pid] = int(fields[11]) + int(fields[12])  # fields 14 and 15
    return ticks


async def _serve_workers(
    conn: Connection, mode: str, count: int, workers: int, priority: int
) -> None:
    """As :func:`_serve` for "relay" and "mix", with the media in ``workers`` worker processes.

    This process plays the bridge process: it drives :class:`WorkerMedia` through the call
    core's synchronous Media calls, and the commands reach the workers as the loop runs.
    """
    group = 3 if mode == "mix" else 2
    # As in _serve, plus room for each worker's stock of pairs bound ahead of demand.
    port_max = PORT_MIN + 4 * count + 400 + 4 * STOCK * workers
    config = MediaConfig(host=HOST, port_min=PORT_MIN, port_max=port_max, workers=workers)
    lost: list[WorkerLeg] = []
    media = WorkerMedia(
        config,
        on_digit=lambda leg, digit: None,
        # A worker died (no media timeout is configured).
        on_timeout=lambda leg, reason: lost.append(leg),
        realtime_priority=priority,
        log_level="warning",  # their info lines would land among the figures
    )
    await media.start()
    ready = media.dispatch.ready
    try:
        legs: list[WorkerLeg] = []
        for _ in range(0, count, group):
            # A worker gives out the pairs it bound ahead (STOCK) and binds more once it has
            # handled the takes: wait for every worker to have a whole call's worth, so that
            # near= keeps each call in one worker, as it does in production.
            await _until(lambda: min(map(len, ready)) >= group, "their port stock is refilled")
            lead = media.allocate()
            members = [lead, *(media.allocate(near=lead) for _ in range(group - 1))]
            if any(leg.worker != lead.worker for leg in members):
                raise RuntimeError("near= did not keep a call's legs in one worker")
            legs.extend(members)
        conn.send([leg.port for leg in legs])
        phone_ports: list[int] = conn.recv()
        for index, (leg, port) in enumerate(zip(legs, phone_ports, strict=True)):
            media.point(leg, HOST, port, _leg_codec(mode, index), telephone_event_pt=101)
        for index in range(0, count, group):
            if mode == "relay":
                media.connect(legs[index], legs[index + 1])
            else:
                media.conference(legs[index : index + group])
        # The workers do not acknowledge commands, but they refill their stock after each
        # control message and report the new ports: a worker's stock back at STOCK means it
        # has handled every take sent to it, and with it every command sent before. So one
        # more take per worker (a spare leg that stays unused), after the set-up commands,
        # then wait for every stock to be full again.
        await _until(lambda: all(ready), "every worker has a port to give")
        for worker in range(workers):
            member = next((leg for leg in legs if leg.worker == worker), None)
            if member is not None and media.allocate(near=member).worker != worker:
                raise RuntimeError("the spare leg went to another worker")
        await _until(lambda: all(len(r) >= STOCK for r in ready), "the set-up is handled")
        settle_heap()  # as the service does once started
        conn.send("ready")

        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        marks: dict[str, Any] = {}

        def on_command() -> None:
            command = conn.recv()
            if command == "start":
                marks["pids"] = [os.getpid(), *media.pids]
                marks["wall"] = time.monotonic()
                marks["ticks"] = _cpu_ticks(marks["pids"])
            elif command == "stop":
                wall = time.monotonic() - marks["wall"]
                try:
                    after = _cpu_ticks(marks["pids"])
                except FileNotFoundError:
                    raise RuntimeError("a media worker died during the run") from None
                marks["wall"] = wall
                marks["ticks"] = {pid: after[pid] - marks["ticks"][pid] for pid in after}
                done.set()

        loop.add_reader(conn.fileno(), on_command)
        await done.wait()
        loop.remove_reader(conn.fileno())
        clock = os.sysconf("SC_CLK_TCK")
        per_process = [marks["ticks"][pid] / clock for pid in marks["pids"]]
        conn.send(
            {
                "cpu": sum(per_process),
                "wall": marks["wall"],
                "ticks": None,  # the mixers' ticks are counted in the workers
                "processes": len(per_process),
                "busiest_cpu": max(per_process),
                "lost": len(lost),
                "counters": {},
            }
        )
    finally:
        await media.close()


def _child(
    conn: Connection, mode: str, count: int, loop_kind: str, priority: int, workers: int
) -> None:
    apply_realtime_priority(priority)  # the bridge's [scheduling] option, bare relay included
    loop = _new_loop(loop_kind)
    try:
        if workers and mode != "bare":
            loop.run_until_complete(_serve_workers(conn, mode, count, workers, priority))
        else:
            loop.run_until_complete(_serve(conn, mode, count))
    finally:
        loop.close()


# -- the phones (this process) ---------------------------------------------------------------


@dataclass
class RunResult:
    mode: str
    legs: int
    seconds: float
    sent: int
    expected: int
    received: int
    delays_ms: np.ndarray
    """Send to arrival in the receiving phone's socket: what the relay (and loopback) adds."""
    read_delays_ms: np.ndarray
    """Send to the phone reading the packet: adds the phone process's own lateness."""
    arrived: np.ndarray
    """time.time() each packet reached its phone's socket."""
    streams: np.ndarray
    relay: dict[str, Any]
    arrivals: np.ndarray | None = None
    """(phone, arrival time) of every packet heard in the sending window, when asked for."""
    stalls: list[Stall] | None = None
    """What the stall probe saw during the run (with a real-time relay)."""

    @property
    def loss(self) -> float:
        return 1 - self.received / self.expected if self.expected else 0.0

    def added_jitter_ms(
        self, q: float, *, as_read: bool = False, outside_stalls: bool = False
    ) -> float:
        delays = self.read_delays_ms if as_read else self.delays_ms
        if not len(delays):
            return float("nan")
        floor = np.full(self.legs, np.inf)
        np.minimum.at(floor, self.streams, delays)
        added = delays - floor[self.streams]
        if outside_stalls:
            added = added[~self.in_stalls]
        return float(np.percentile(added, q)) if len(added) else float("nan")

    @property
    def in_stalls(self) -> np.ndarray:
        """Which packets were on their way while the machine stalled (see bench.stall_probe)."""
        sent = self.arrived - self.delays_ms / 1000
        return during_stalls(sent, self.arrived, self.stalls or [])

    @property
    def relay_cpu_share(self) -> float:
        return float(self.relay["cpu"]) / float(self.relay["wall"])

    @property
    def busiest_cpu_share(self) -> float:
        return float(self.relay["busiest_cpu"]) / float(self.relay["wall"])

    def arrival_jitter_ms(self, q: float) -> float:
        """Percentile ``q`` of each stream's gaps between arrivals, minus the 20 ms tick."""
        if self.arrivals is None or len(self.arrivals) < 2:
            return float("nan")
        phones, times = self.arrivals[:, 0], self.arrivals[:, 1]
        order = np.lexsort((times, phones))
        phones, times = phones[order], times[order]
        same_stream = phones[1:] == phones[:-1]
        gaps = np.diff(times)[same_stream]
        if not len(gaps):
            return float("nan")
        return float(np.percentile(gaps * 1000 - PACKET_SECONDS * 1000, q))


_ANCILLARY_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)


def _kernel_time(ancillary: list[tuple[int, int, bytes]], fallback: float) -> float:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return seconds + nanoseconds / 1e9
    return fallback


def _packet(stream: int, index: int, payload_type: int) -> bytes:
    header = _HEADER.pack(
        0x90, payload_type, index & 0xFFFF, (160 * index) & 0xFFFFFFFF, stream + 1
    )
    return header + _EXTENSION.pack(0xBEDE, 4, stream, index, time.time()) + PAYLOAD


def run(
    mode: str,
    legs: int,
    seconds: float,
    loop_kind: str,
    sample: int,
    priority: int = 0,
    workers: int = 0,
    warmup: float = 0.5,
) -> RunResult:
    """One bounded run: ``legs`` phones, each sending for ``seconds`` at 50 packets/s."""
    ctx = mp.get_context("fork")
    parent, child_conn = ctx.Pipe()
    child = ctx.Process(
        target=_child, args=(child_conn, mode, legs, loop_kind, priority, workers), daemon=True
    )
    child.start()
    phones: list[socket.socket] = []
    try:
        if not parent.poll(30):
            raise RuntimeError("relay process did not start")
        relay_ports: list[int] = parent.recv()
        for _ in range(legs):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.bind((HOST, 0))
            s.setblocking(False)
            phones.append(s)
        parent.send([s.getsockname()[1] for s in phones])
        if not parent.poll(30):
            raise RuntimeError("relay did not get ready")
        parent.recv()
        settle_heap()  # the phones are the instrument: no collection pause of theirs in the figures
        arrivals = mode == "mix" and workers > 0
        probe = StallProbe(priority + 1) if priority else None
        try:
            result = _drive(
                mode, legs, seconds, phones, relay_ports, parent, sample, warmup, arrivals
            )
        finally:
            stalls = probe.stop() if probe is not None else None
        return replace(result, stalls=stalls)
    finally:
        for s in phones:
            s.close()
        child.join(timeout=5)
        if child.is_alive():
            child.kill()


def _drive(
    mode: str,
    legs: int,
    seconds: float,
    phones: list[socket.socket],
    relay_ports: list[int],
    conn: Connection,
    sample: int,
    warmup: float,
    arrivals: bool = False,
) -> RunResult:
    # Only every ``sample``-th call (or conference) is listened to: the phones of a real call
    # are other machines, and reading every packet here would starve the relay of CPU.
    group = 3 if mode == "mix" else 2
    listened = [i for i in range(legs) if (i // group) % sample == 0]
    by_fd = {phones[i].fileno(): i for i in listened}
    poller = select.epoll()
    for i in listened:
        poller.register(phones[i].fileno(), select.EPOLLIN)
    slots = 20  # phones spread over the 20 ms, one slot per millisecond
    destinations = [(HOST, port) for port in relay_ports]
    payload_types = [_leg_codec(mode, phone) for phone in range(legs)]
    sent_by = [0] * legs
    delays: list[float] = []  # send to arrival in the phone's socket (kernel time stamp)
    read_delays: list[float] = []  # send to the phone reading it
    arrived: list[float] = []
    streams: list[int] = []
    heard: list[tuple[int, float]] = []  # (phone, arrival time), when ``arrivals``
    received = 0
    index = 0
    start = time.monotonic()
    window = start + warmup
    window_wall = float("inf")  # time.time() when the measured window opened
    end = window + seconds
    drain_until = end + 0.3

    def receive(timeout: float) -> None:
        nonlocal received
        for fd, _ in poller.poll(timeout):
            who = by_fd[fd]
            sock = phones[who]
            while True:
                try:
                    data, ancillary, _, _ = sock.recvmsg(2048, _ANCILLARY_SPACE)
                except BlockingIOError:
                    break
                if len(data) > 1 and 200 <= data[1] <= 204:
                    continue  # RTCP of worker relays, sent to port + 1: another phone's port
                read_at = time.time()
                arrived_at = _kernel_time(ancillary, read_at)
                if mode == "mix":
                    received += int(arrived_at >= window_wall)
                elif len(data) >= 32 and data[0] == 0x90:
                    _, _, stream, _, sent_at = _EXTENSION.unpack_from(data, 12)
                    if sent_at < window_wall:
                        continue  # sent during the warm-up
                    received += 1
                    delays.append(arrived_at - sent_at)
                    arrived.append(arrived_at)
                    read_delays.append(read_at - sent_at)
                    streams.append(stream)
                if arrivals and arrived_at >= window_wall and time.monotonic() < end:
                    heard.append((who, arrived_at))

    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now >= window and window_wall == float("inf"):
            conn.send("start")
            window_wall = time.time()
        # Send every phone's packet whose turn has come, then read until the next slot.
        slot_due = start + index * PACKET_SECONDS / slots
        if now >= slot_due:
            frame = index // slots
            for phone in range(index % slots, legs, slots):
                packet = _packet(phone, frame, payload_types[phone])
                phones[phone].sendto(packet, destinations[phone])
                sent_by[phone] += int(now >= window)
            index += 1
            continue
        receive(max(0.0, slot_due - now))
    conn.send("stop")  # the relay's CPU is measured over the sending window only
    while time.monotonic() < drain_until:
        receive(max(0.0, drain_until - time.monotonic()))
    if not conn.poll(10):
        raise RuntimeError("relay did not report")
    report: dict[str, Any] = conn.recv()
    poller.close()
    if mode == "mix" and report["ticks"] is None:
        # The ticks are counted in the workers: one mixed packet per 20 ms of the window.
        expected = round(report["wall"] / PACKET_SECONDS) * len(listened)
    elif mode == "mix":
        expected = int(report["ticks"]) * len(listened)
    else:
        expected = sum(sent_by[i ^ 1] for i in listened)  # i hears its call's other leg
    return RunResult(
        mode=mode,
        legs=legs,
        seconds=seconds,
        sent=sum(sent_by),
        expected=expected,
        received=received,
        delays_ms=np.array(delays) * 1000,
        read_delays_ms=np.array(read_delays) * 1000,
        arrived=np.array(arrived),
        streams=np.array(streams, dtype=np.int64),
        relay=report,
        arrivals=np.array(heard, dtype=np.float64).reshape(-1, 2) if arrivals else None,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500, help="relayed two-leg calls")
    parser.add_argument("--mixes", type=int, default=150, help="three-party conferences")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured time per run")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument(
        "--sample", type=int, default=5, help="listen to every Nth call or mix (1 = all)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.5,
        help="seconds every phone sends before the measured window opens",
    )
    parser.add_argument(
        "--realtime-priority",
        type=int,
        default=0,
        metavar="N",
        help="run the relays (bare and bridge) at SCHED_RR priority N, as the bridge's "
        "[scheduling] realtime_priority does",
    )
    parser.add_argument(
        "--phones-priority",
        type=int,
        default=0,
        metavar="N",
        help="run the phones (this process) at SCHED_RR priority N, below the relays': they "
        "stand for other machines, so their own scheduling delays are not the relay's jitter",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="run the bridge relay and the mix in N media worker processes, as [media] "
        "workers = N does (CPU summed over them); the bare relay stays one process",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.warmup <= 2:
        parser.error("--warmup must be in [0, 2] seconds")
    if not 0 < args.seconds <= 5:
        parser.error("--seconds must be in (0, 5]: the whole benchmark stays under 20 s")
    if not 0 <= args.workers <= 64:
        parser.error("--workers must be in [1, 64] ([media] workers), or 0 for none")
    if args.phones_priority and not 0 < args.phones_priority < args.realtime_priority:
        parser.error("--phones-priority must be above 0 and below --realtime-priority")
    apply_realtime_priority(args.phones_priority)
    with contextlib.suppress(ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))

    legs = 2 * args.calls
    print(
        f"media relay bench: {args.calls} calls ({legs} streams, {50 * legs} packets/s), "
        f"{args.mixes} three-party mixes, {args.seconds:g} s each, loop={args.loop}, "
        f"{os.cpu_count()} CPUs, relay real-time priority {args.realtime_priority or 'none'}, "
        f"phones {args.phones_priority or 'none'}, "
        f"packet path {native.status()}"
        + (f", bridge media in {_workers(args.workers)}" if args.workers else "")
    )
    cpus = os.cpu_count() or 1
    if args.workers and args.workers >= cpus:
        print(
            f"  ({_workers(args.workers)} and the phones on {cpus} CPUs: they compete for the "
            "cores, so the relay and mix figures measure that contention too)"
        )
    common = (args.seconds, args.loop, args.sample, args.realtime_priority)
    bare = run("bare", legs, *common, warmup=args.warmup)
    relay = run("relay", legs, *common, workers=args.workers, warmup=args.warmup)
    for result in (bare, relay):
        target = int(50 * result.legs * result.seconds)
        if result.sent < 0.98 * target:
            print(
                f"  ({result.mode}: the phones fell behind, {result.sent} of {target} packets "
                "sent: this machine is too busy for these figures to mean much)"
            )
        us_per_packet = result.relay["cpu"] / max(1, result.sent) * 1e6
        print(
            f"  {result.mode:5}  sent {result.sent:7d}  loss {100 * result.loss:6.3f} %  "
            f"delay p50 {_percentile(result.delays_ms, 50):6.2f} ms  "
            f"added jitter p99 {result.added_jitter_ms(99):6.2f} ms "
            f"(as read {result.added_jitter_ms(99, as_read=True):6.2f})  "
            f"CPU {100 * result.relay_cpu_share:5.1f} % of a core  "
            + _spread(result)
            + f"{us_per_packet:5.1f} µs/packet  "
            f"{1000 * result.relay_cpu_share / args.calls:6.3f} ms CPU per call-second"
        )
        if result.stalls is not None:
            print("         " + _stalls(result))
    ratio = relay.relay_cpu_share / bare.relay_cpu_share if bare.relay_cpu_share else float("nan")
    if args.workers:
        print(
            f"  relay/bare CPU ratio {ratio:.2f} (relay CPU summed over "
            f"{relay.relay['processes']} processes); relay counters n/a (in workers)" + _lost(relay)
        )
    else:
        print(
            f"  relay/bare CPU ratio {ratio:.2f}; "
            f"relay counters {_nonzero(relay.relay['counters'])}"
        )

    if args.mixes and args.workers:
        mix = run("mix", 3 * args.mixes, *common, workers=args.workers, warmup=args.warmup)
        print(
            f"  mix    {args.mixes} conferences in {_workers(args.workers)}: "
            "tick lateness n/a (in workers), "
            f"mix arrival jitter p99 {mix.arrival_jitter_ms(99):.2f} ms "
            f"max {mix.arrival_jitter_ms(100):.2f} ms, "
            f"mixed packets received {mix.received}/~{mix.expected} (sampled legs; expected: "
            f"one per 20 ms), CPU {100 * mix.relay_cpu_share:5.1f} % of a core "
            + _spread(mix).rstrip()
            + f", {1000 * mix.relay_cpu_share / args.mixes:6.3f} ms CPU per mix-second"
            + _lost(mix)
        )
    elif args.mixes:
        mix = run("mix", 3 * args.mixes, *common, warmup=args.warmup)
        ticks = mix.relay["ticks"]
        print(
            f"  mix    {args.mixes} conferences: {ticks} ticks, "
            f"tick lateness p50 {mix.relay['tick_p50_ms']:.2f} ms "
            f"p99 {mix.relay['tick_p99_ms']:.2f} ms max {mix.relay['tick_max_ms']:.2f} ms, "
            f"mixed packets received {mix.received}/{mix.expected} (sampled legs), "
            f"CPU {100 * mix.relay_cpu_share:5.1f} % of a core, "
            f"{1000 * mix.relay_cpu_share / args.mixes:6.3f} ms CPU per mix-second; "
            f"counters {_nonzero(mix.relay['counters'])}"
        )
    return 0


def _stalls(result: RunResult) -> str:
    """The machine's own stalls in the run, and how much of the jitter they account for."""
    stalls = result.stalls or []
    longest = max((stall.length_ms for stall in stalls), default=0.0)
    floor = np.full(result.legs, np.inf)
    np.minimum.at(floor, result.streams, result.delays_ms)
    late = result.delays_ms - floor[result.streams] > JITTER_TARGET_MS
    return (
        f"machine stalls over 2 ms: {len(stalls)} (longest {longest:.1f} ms); "
        f"packets delayed over {JITTER_TARGET_MS:g} ms: {int(late.sum())}, "
        f"{int((late & result.in_stalls).sum())} of them during a stall; "
        f"added jitter p99 outside stalls {result.added_jitter_ms(99, outside_stalls=True):.2f} ms"
    )


def _nonzero(counters: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counters.items() if v}


def _percentile(values: np.ndarray, q: float) -> float:
    """NaN when nothing was heard (the loss figure then says why), rather than a traceback."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


def _spread(result: RunResult) -> str:
    """With workers: how many processes the CPU is spread over, and the busiest one's share."""
    if "processes" not in result.relay:
        return ""
    return (
        f"over {result.relay['processes']} processes, "
        f"busiest {100 * result.busiest_cpu_share:5.1f} %  "
    )


def _workers(count: int) -> str:
    return f"{count} worker process" + ("es" if count > 1 else "")


def _lost(result: RunResult) -> str:
    lost = int(result.relay.get("lost", 0))
    return f" ({lost} legs lost with a worker: these figures mean little)" if lost else ""


if __name__ == "__main__":
    sys.exit(main())
