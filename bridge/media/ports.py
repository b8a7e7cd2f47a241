"""The RTP port pool: even ports for RTP, each with the odd port above it for RTCP.

Pure bookkeeping; the relay binds the sockets. Released ports go to the back of the queue, so a
late packet of an ended call does not land in the call that got its port next. A *parked* pair
is released but still bound, waiting for the relay to reuse it: neither free nor in use.
"""

from __future__ import annotations

from collections import deque


class PortPoolExhaustedError(RuntimeError):
    """No free RTP port pair: the engine answers the INVITE 503 rather than 200 without media."""


class PortPool:
    """Even RTP ports of a range, each with the odd RTCP port above it (RFC 3550 §11)."""

    def __init__(self, port_min: int, port_max: int) -> None:
        first = port_min + (port_min % 2)
        if not 0 < first < port_max <= 65535:
            raise ValueError(f"RTP port range {port_min}-{port_max} holds no even/odd pair")
        self._range = range(first, port_max, 2)
        self._free: deque[int] = deque(self._range)
        self._in_use: set[int] = set()
        self._parked: set[int] = set()

    @property
    def free(self) -> int:
        return len(self._free)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    @property
    def parked(self) -> int:
        return len(self._parked)

    def owns(self, port: int) -> bool:
        """Whether ``port`` is an RTP port of this pool's range, whatever its state."""
        return port in self._range

    def take(self) -> int:
        if not self._free:
            raise PortPoolExhaustedError("no free RTP port pair")
        port = self._free.popleft()
        self._in_use.add(port)
        return port

    def give_back(self, port: int) -> None:
        if port in self._in_use or port in self._parked:
            self._in_use.discard(port)
            self._parked.discard(port)
            self._free.append(port)

    def park(self, port: int) -> None:
        """The pair's call ended but its sockets stay bound for reuse."""
        if port in self._in_use:
            self._in_use.remove(port)
            self._parked.add(port)

    def unpark(self, port: int) -> None:
        """A parked pair is reused by a new call."""
        if port in self._parked:
            self._parked.remove(port)
            self._in_use.add(port)
