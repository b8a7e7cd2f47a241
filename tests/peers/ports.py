"""Free loopback port numbers for real SIP peers.

Peers are separate processes that bind their own sockets, so the only way to hand them a port is
to find a number nobody holds now and hope nobody takes it before the peer binds. Two things keep
that window harmless: every number is checked on both UDP and TCP (SIP may use either, baresip's
control channel is TCP), and a number handed out is not handed out again until its holder gives
it back after its sockets are closed, so two fixtures of one session cannot race each other.
Numbers are drawn at random below the kernel's ephemeral range, where the kernel itself never
picks ports for outgoing sockets.
"""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterator

HOST = "127.0.0.1"
_LOW = 20000
_HIGH = 32000  # Linux ephemeral ports start at 32768.
SMALL_BLOCK = 8
"""Blocks up to this many ports (SIP ports, a phone's RTP pair) are kept apart from larger
ones (see :meth:`PortAllocator._candidates`)."""


def _is_free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        sock = socket.socket(socket.AF_INET, kind)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        finally:
            sock.close()
    return True


class PortAllocator:
    """Hands out loopback ports free on UDP and TCP, never the same number twice."""

    def __init__(self, low: int = _LOW, high: int = _HIGH, seed: int | None = None) -> None:
        self._low = low
        self._high = high
        self._issued: set[int] = set()
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def block(self, count: int, *, align: int = 1) -> int:
        """Return the first of `count` consecutive free ports; the first is a multiple of `align`.

        RTP wants even ports (RFC 3550 section 11) and SIPp binds both its media port and media
        port + 2, so media needs whole blocks, not scattered numbers.
        """
        with self._lock:
            for first in self._candidates(count, align):
                span = range(first, first + count)
                if any(p in self._issued for p in span):
                    continue
                if all(_is_free(p) for p in span):
                    self._issued.update(span)
                    return first
        raise RuntimeError(f"no block of {count} free ports in {self._low}-{self._high}")

    def release(self, first: int, count: int = 1) -> None:
        """Give back a block whose sockets are all closed, so a long run does not run dry."""
        with self._lock:
            self._issued.difference_update(range(first, first + count))

    def _candidates(self, count: int, align: int) -> Iterator[int]:
        """Every aligned start, from a random point onwards and round: random so that
        concurrent runs on one machine rarely collide, exhaustive so that a fragmented range
        still yields a block while one exists. Single ports and small blocks (never given
        back, mostly) come from the upper half first, large blocks (a bridge's media range,
        given back at its teardown) from the lower half: scattered over the whole range, a
        suite's thousands of single ports left no room for a block of 256."""
        middle = self._low + (self._high - self._low) // 2
        small = count <= SMALL_BLOCK
        preferred = (middle, self._high) if small else (self._low, middle)
        yield from self._starts(*preferred, count, align)
        yield from self._starts(self._low, self._high, count, align)

    def _starts(self, low: int, high: int, count: int, align: int) -> Iterator[int]:
        starts = range(low + (-low % align), high - count + 1, align)
        if not starts:
            return
        offset = self._random.randrange(len(starts))
        for index in range(len(starts)):
            yield starts[(offset + index) % len(starts)]

    def port(self) -> int:
        return self.block(1)

    def ports(self, count: int) -> list[int]:
        return [self.port() for _ in range(count)]


_default = PortAllocator()


def free_port() -> int:
    """One free loopback port (UDP and TCP) from the process-wide allocator."""
    return _default.port()


def free_block(count: int, *, align: int = 1) -> int:
    return _default.block(count, align=align)


def default_allocator() -> PortAllocator:
    return _default


def _proc_net_ports(table: str, *, listen_only: bool) -> set[int]:
    """Local ports of IPv4 sockets bound on loopback or any address, read from /proc/net.

    Reading the kernel's table (rather than probing with bind) cannot steal the port from the
    peer that is about to bind it.
    """
    ports: set[int] = set()
    try:
        with open(f"/proc/net/{table}", encoding="ascii") as lines:
            next(lines, None)
            for line in lines:
                fields = line.split()
                address, _, port_hex = fields[1].partition(":")
                if address not in {"0100007F", "00000000"}:
                    continue
                if listen_only and fields[3] != "0A":  # TCP_LISTEN
                    continue
                ports.add(int(port_hex, 16))
    except FileNotFoundError:
        pass
    return ports


def is_bound(port: int, proto: str = "udp") -> bool:
    """True when some process holds `port` on 127.0.0.1 (UDP bound, or TCP listening)."""
    if proto == "udp":
        return port in _proc_net_ports("udp", listen_only=False)
    return port in _proc_net_ports("tcp", listen_only=True)
