"""Media split over worker processes: which worker holds each leg, and what each must be told.

Theory of operation. With ``[media] workers = N`` the relay runs in N processes, each owning an
equal share of the RTP port range, so the media of many calls spreads over the machine's cores
and each process has descriptors of its own. The call core still needs a port *now*, while it
writes an SDP, so every worker keeps a stock of port pairs bound in advance and tells this side
their ports (``ready``); :meth:`MediaDispatch.allocate` takes one from the stock of the worker
beside ``near`` (a leg of the same call) or of the least loaded worker, and the worker learns of
it with the next batch of commands. The legs handed out are :class:`WorkerLeg` stand-ins.

Relaying happens inside one worker, so connecting two legs that live in different workers (an
attended transfer joins legs of two calls) first *moves* one of them: its worker exports it
(the bound sockets travel back over the control socket with the stream's state), and the
destination adopts it. Until the adoption has been sent, everything else for the destination
waits in a backlog, so no command can overtake the leg it names:

    leg        command          to               then
    b in W2    connect(a@W1, b) W2: export b     W1 blocked; connect(a, b) backlogged for W1
    b moving   "exported" b     W1: adopt b      W1 unblocked: its backlog follows the adoption

A worker that dies takes its legs with it: each is reported as a media timeout, the same event
a silent phone causes, so the core hangs up that party and gives the caller back if it can.

Each worker reports its relay's counters (``RelayCounters``: packets dropped by reason, digits,
ticks) once a second; :meth:`MediaDispatch.counters` sums them. A worker that dies takes its
counts since its last report with it, but what it had reported is kept, so the totals (exported
as Prometheus counters) never go backwards when a worker is replaced.

Commands and reports are plain tuples (``(op, *args)``), pickled in batches by the channel.
This module keeps the bookkeeping only: no sockets, no processes, no clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields
from typing import Any

from bridge.media.stats import StreamStatsSnapshot

Item = tuple[Any, ...]
"""One command or report: ``(op, *args)``."""

MAX_BATCH = 256
"""Items per control message: keeps every message far below a socket buffer."""


STATS_FIELDS = tuple(f.name for f in fields(StreamStatsSnapshot))
"""The order of a leg's figures in a "stats" report: a tuple is cheap to build in the worker."""


def figures_of(snapshot: StreamStatsSnapshot) -> tuple[Any, ...]:
    return tuple(getattr(snapshot, name) for name in STATS_FIELDS)


class NoMediaPortError(RuntimeError):
    """No worker has a bound port pair to give: the call gets 503, not a call without audio."""


def split_ports(port_min: int, port_max: int, workers: int) -> list[tuple[int, int]]:
    """Equal, disjoint even-aligned shares of ``[port_min, port_max)``, one per worker."""
    first = port_min + (port_min % 2)
    pairs = (port_max - first) // 2
    if workers < 1 or pairs < workers:
        raise ValueError(f"RTP port range {port_min}-{port_max} cannot be split {workers} ways")
    share = pairs // workers
    bounds = [first + 2 * share * index for index in range(workers)] + [port_max]
    return [(bounds[i], bounds[i + 1]) for i in range(workers)]


class _StatsMirror:
    """The latest RFC 3550 figures the worker reported for a leg (``stats.snapshot()``)."""

    __slots__ = ("latest",)

    def __init__(self) -> None:
        self.latest = StreamStatsSnapshot(
            packets_received=0,
            bytes_received=0,
            packets_expected=0,
            packets_lost=0,
            jitter_ms=0.0,
            packets_sent=0,
            bytes_sent=0,
        )

    def snapshot(self) -> StreamStatsSnapshot:
        return self.latest


class WorkerLeg:
    """The call core's handle on a leg whose media lives in a worker process."""

    __slots__ = ("codec", "conference", "host", "port", "stats", "worker")

    def __init__(self, host: str, port: int, worker: int) -> None:
        self.host = host
        self.port = port
        self.worker = worker
        self.codec: int | None = None
        self.conference: int | None = None
        """The conference this leg was last put in (its id on this side), if any."""
        self.stats = _StatsMirror()

    def __repr__(self) -> str:
        return f"<WorkerLeg {self.host}:{self.port} in worker {self.worker}>"


@dataclass(frozen=True, kw_only=True, slots=True)
class DigitDetected:
    leg: WorkerLeg
    digit: Any
    """The worker's :class:`~bridge.media.dtmf.DtmfDigit`."""


@dataclass(frozen=True, kw_only=True, slots=True)
class MediaLost:
    """The leg's phone went silent for the media timeout, or its worker died."""

    leg: WorkerLeg
    reason: str


MediaEvent = DigitDetected | MediaLost


@dataclass(frozen=True, kw_only=True, slots=True)
class Outgoing:
    """One control message for one worker; ``fds`` travel with it (and are closed after)."""

    worker: int
    items: list[Item]
    fds: tuple[int, ...] = ()


@dataclass(slots=True)
class _Move:
    source: int
    destination: int


class MediaDispatch:
    def __init__(self, host: str, ranges: list[tuple[int, int]]) -> None:
        self.host = host
        self.ranges = ranges
        count = len(ranges)
        self.alive = [False] * count
        self.ready: list[deque[int]] = [deque() for _ in range(count)]
        """Ports each worker has bound and not yet given out."""
        self.load = [0] * count
        """Legs each worker carries."""
        self.legs: dict[int, WorkerLeg] = {}
        self._outbox: list[list[Item]] = [[] for _ in range(count)]
        self._messages: list[Outgoing] = []
        self._blocked = [0] * count
        self._backlog: list[list[Item]] = [[] for _ in range(count)]
        self._moves: dict[int, list[_Move]] = {}
        """Moves under way, per port, oldest first: a leg joined again before its first move
        finished moves on from its first destination, whose backlog holds that export."""
        self._conference_ids = 0
        self.moves = 0
        """Legs moved between workers so far (joins of two calls' legs)."""
        self.unused_fds: list[int] = []
        """Descriptors received but not passed on: the I/O side closes them."""
        self.worker_counters: list[dict[str, int]] = [{} for _ in range(count)]
        """The relay counters each worker last reported, since it (last) started."""
        self._counters_of_the_dead: dict[str, int] = {}
        """The last counts of workers that have died, summed."""

    # -- the call core's Media operations -------------------------------------------------

    def allocate(self, near: WorkerLeg | None = None) -> WorkerLeg:
        worker = self._choose(near)
        port = self.ready[worker].popleft()
        leg = WorkerLeg(self.host, port, worker)
        self.legs[port] = leg
        self.load[worker] += 1
        self._send(worker, ("take", port))
        return leg

    def _choose(self, near: WorkerLeg | None) -> int:
        if near is not None and self.legs.get(near.port) is near:
            worker = near.worker
            if self.alive[worker] and self.ready[worker]:
                return worker
        candidates = [w for w in range(len(self.ranges)) if self.alive[w] and self.ready[w]]
        if not candidates:
            raise NoMediaPortError("no free RTP port pair in any media worker")
        return min(candidates, key=lambda w: (self.load[w], -len(self.ready[w])))

    def point(
        self,
        leg: WorkerLeg,
        host: str,
        port: int,
        payload_type: int | None,
        *,
        telephone_event_pt: int | None,
    ) -> None:
        if payload_type is not None:
            leg.codec = payload_type
        self._send_for(leg, ("point", leg.port, host, port, payload_type, telephone_event_pt))

    def connect(self, a: WorkerLeg, b: WorkerLeg) -> None:
        if a is b:
            raise ValueError("cannot connect a leg to itself")
        self._gather([a, b])
        a.conference = b.conference = None
        self._send_for(a, ("connect", a.port, b.port))

    def conference(self, legs: list[WorkerLeg]) -> None:
        if not legs:
            return
        self._gather(legs)
        self._conference_ids += 1
        for leg in legs:
            leg.conference = self._conference_ids
        self._send_for(legs[0], ("conference", [leg.port for leg in legs]))

    def set_mode(self, leg: WorkerLeg, mode: str, whisper_to: WorkerLeg | None = None) -> None:
        if leg.conference is None:
            raise ValueError(f"{leg!r} is in no conference")
        whisper = None if whisper_to is None else whisper_to.port
        self._send_for(leg, ("mode", leg.port, mode, whisper))

    def hold(self, leg: WorkerLeg) -> None:
        self._send_for(leg, ("hold", leg.port))

    def unhold(self, leg: WorkerLeg) -> None:
        self._send_for(leg, ("unhold", leg.port))

    def private_keys(self, leg: WorkerLeg) -> None:
        self._send_for(leg, ("private_keys", leg.port))

    def release(self, leg: WorkerLeg) -> None:
        if self.legs.get(leg.port) is not leg:
            return
        del self.legs[leg.port]
        self.load[leg.worker] -= 1
        self._send(leg.worker, ("release", leg.port))

    # -- moving legs between workers ----------------------------------------------------

    def _gather(self, legs: list[WorkerLeg]) -> None:
        """Bring every leg into the first one's worker, which will relay between them."""
        home = legs[0].worker
        for leg in legs[1:]:
            if leg.worker != home and self.legs.get(leg.port) is leg:
                self._move(leg, home)

    def _move(self, leg: WorkerLeg, destination: int) -> None:
        source = leg.worker
        self._send(source, ("export", leg.port))
        self._moves.setdefault(leg.port, []).append(_Move(source, destination))
        self.moves += 1
        self.load[source] -= 1
        self.load[destination] += 1
        leg.worker = destination
        self._blocked[destination] += 1

    def _exported(self, port: int, state: Any, fds: list[int]) -> list[MediaEvent]:
        chain = self._moves.get(port)
        if not chain:
            # Its destination died meanwhile: the sockets close here, the port goes home.
            self.unused_fds.extend(fds)
            self._send(self.owner_of(port), ("reclaim", port))
            return []
        move = chain.pop(0)
        if not chain:
            del self._moves[port]
        destination = move.destination
        leg = self.legs.get(port)
        if len(fds) != 2 or state is None:
            self.unused_fds.extend(fds)
            self._unblock(destination)
            if leg is None:
                return []
            del self.legs[port]
            self.load[leg.worker] -= 1
            return [MediaLost(leg=leg, reason="media worker lost the leg")]
        self._flush_outbox(destination)
        adopt = Outgoing(worker=destination, items=[("adopt", port, state)], fds=tuple(fds))
        self._messages.append(adopt)
        self._unblock(destination)
        return []

    def _unblock(self, worker: int) -> None:
        self._blocked[worker] -= 1
        if self._blocked[worker] == 0:
            self._outbox[worker].extend(self._backlog[worker])
            self._backlog[worker].clear()

    # -- reports from the workers ---------------------------------------------------------

    def receive(self, worker: int, items: list[Item], fds: list[int]) -> list[MediaEvent]:
        """Apply one control message from ``worker``; what the core must hear is returned."""
        events: list[MediaEvent] = []
        for item in items:
            op = item[0]
            if op == "ready":
                self.alive[worker] = True
                self.ready[worker].extend(item[1])
            elif op == "stats":
                for port, figures in item[1]:
                    leg = self.legs.get(port)
                    if leg is not None and leg.worker == worker:
                        named = dict(zip(STATS_FIELDS, figures, strict=True))
                        leg.stats.latest = StreamStatsSnapshot(**named)
            elif op == "digit":
                leg = self.legs.get(item[1])
                if leg is not None and leg.worker == worker:
                    events.append(DigitDetected(leg=leg, digit=item[2]))
            elif op == "timeout":
                leg = self.legs.get(item[1])
                if leg is not None and leg.worker == worker:
                    events.append(MediaLost(leg=leg, reason="media timeout"))
            elif op == "exported":
                events.extend(self._exported(item[1], item[2], fds))
                fds = []
            elif op == "freed":
                self._send(self.owner_of(item[1]), ("reclaim", item[1]))
            elif op == "counters":
                self._counters(worker, item[1])
        self.unused_fds.extend(fds)
        return events

    def _counters(self, worker: int, report: dict[str, int]) -> None:
        latest = self.worker_counters[worker]
        if any(report.get(name, 0) < count for name, count in latest.items()):
            self._retire_counters(worker)  # counting from 0 again: a run we did not see end
        self.worker_counters[worker] = dict(report)

    def _retire_counters(self, worker: int) -> None:
        dead = self._counters_of_the_dead
        for name, count in self.worker_counters[worker].items():
            dead[name] = dead.get(name, 0) + count
        self.worker_counters[worker] = {}

    def counters(self) -> dict[str, int]:
        """The relay counters summed over every worker, those that died included: each only
        ever goes up."""
        totals = dict(self._counters_of_the_dead)
        for latest in self.worker_counters:
            for name, count in latest.items():
                totals[name] = totals.get(name, 0) + count
        return totals

    def owner_of(self, port: int) -> int:
        for worker, (low, high) in enumerate(self.ranges):
            if low <= port < high:
                return worker
        raise ValueError(f"port {port} is in no worker's range")

    def worker_lost(self, worker: int) -> list[MediaEvent]:
        """The worker died: its legs have no media any more, its stock is gone."""
        self.alive[worker] = False
        self._retire_counters(worker)
        self.ready[worker].clear()
        self._outbox[worker].clear()
        self._backlog[worker].clear()
        for message in self._messages:
            if message.worker == worker:
                self.unused_fds.extend(message.fds)  # an adoption it will never make
        self._messages = [m for m in self._messages if m.worker != worker]
        events: list[MediaEvent] = []
        arriving: set[int] = set()
        for port, chain in list(self._moves.items()):
            kept: list[_Move] = []
            for move in chain:
                if move.source == worker:
                    # Its sockets died with the worker: the destination will never adopt it.
                    self._unblock(move.destination)
                    leg = self.legs.pop(port, None)
                    if leg is not None:
                        self.load[leg.worker] -= 1
                        events.append(MediaLost(leg=leg, reason="media worker died"))
                elif move.destination == worker:
                    # Still in its source: it is closed (and its port reclaimed) once
                    # exported, even if the leg was released meanwhile.
                    arriving.add(port)
                else:
                    kept.append(move)
            if kept:
                self._moves[port] = kept
            else:
                del self._moves[port]
        self._blocked[worker] = 0
        for port, leg in list(self.legs.items()):
            if leg.worker != worker:
                continue
            del self.legs[port]
            if port not in arriving and self.owner_of(port) != worker:
                self._send(self.owner_of(port), ("reclaim", port))
            events.append(MediaLost(leg=leg, reason="media worker died"))
        self.load[worker] = 0
        return events

    # -- sending ------------------------------------------------------------------------

    def _send_for(self, leg: WorkerLeg, item: Item) -> None:
        if self.legs.get(leg.port) is leg:
            self._send(leg.worker, item)

    def _send(self, worker: int, item: Item) -> None:
        if not self.alive[worker]:
            return
        if self._blocked[worker]:
            self._backlog[worker].append(item)
        else:
            self._outbox[worker].append(item)

    def _flush_outbox(self, worker: int) -> None:
        items = self._outbox[worker]
        for start in range(0, len(items), MAX_BATCH):
            self._messages.append(Outgoing(worker=worker, items=items[start : start + MAX_BATCH]))
        items.clear()

    def take_outgoing(self) -> list[Outgoing]:
        """Every control message to send now, in order per worker."""
        for worker in range(len(self.ranges)):
            self._flush_outbox(worker)
        messages, self._messages = self._messages, []
        return messages
