"""The control socket between the bridge and one media worker process.

A ``SOCK_SEQPACKET`` Unix socket pair: every message is one pickled batch of items (both ends
are this program, started by the bridge itself, so pickle is trusted), and a message may carry
descriptors (``SCM_RIGHTS``) when a leg's bound sockets move from one worker to another.
Sending never blocks the loop that carries the audio: when the socket is full, messages queue
in order and go out as it drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MAX_MESSAGE = 1 << 20
MAX_FDS = 8

MessageHandler = Callable[[list[Any], list[int]], None]


def channel_pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


class ControlChannel:
    def __init__(
        self, sock: socket.socket, on_message: MessageHandler, on_closed: Callable[[], None]
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.on_message = on_message
        self.on_closed = on_closed
        self.closed = False
        self._queue: deque[tuple[bytes, tuple[int, ...]]] = deque()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._on_readable)

    def send(self, items: list[Any], fds: tuple[int, ...] = ()) -> None:
        """Queue one message; ``fds`` are ours to close once they are on their way."""
        if self.closed:
            _close_all(fds)
            return
        self._queue.append((pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL), fds))
        if len(self._queue) == 1:
            self._drain()

    def _drain(self) -> None:
        while self._queue:
            data, fds = self._queue[0]
            try:
                if fds:
                    socket.send_fds(self.sock, [data], list(fds))
                else:
                    self.sock.send(data)
            except BlockingIOError:
                self._loop.add_writer(self.sock.fileno(), self._on_writable)
                return
            except OSError as exc:
                log.error("media control socket failed: %s", exc)
                self._lost()
                return
            self._queue.popleft()
            _close_all(fds)

    def _on_writable(self) -> None:
        self._loop.remove_writer(self.sock.fileno())
        self._drain()

    def _on_readable(self) -> None:
        while not self.closed:
            try:
                data, fds, flags, _ = socket.recv_fds(self.sock, MAX_MESSAGE, MAX_FDS)
            except BlockingIOError:
                return
            except OSError as exc:
                log.error("media control socket failed: %s", exc)
                self._lost()
                return
            if not data:
                _close_all(fds)
                self._lost()
                return
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                log.error("media control message truncated (%d bytes): dropped", len(data))
                _close_all(fds)
                continue
            self.on_message(pickle.loads(data), fds)

    def _lost(self) -> None:
        if not self.closed:
            self.close()
            self.on_closed()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self.sock.fileno())
        self._loop.remove_writer(self.sock.fileno())
        self.sock.close()
        while self._queue:
            _close_all(self._queue.popleft()[1])


def _close_all(fds: tuple[int, ...] | list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
