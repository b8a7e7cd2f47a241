"""RTP phones for media tests: datagram sockets that send as phones do and record what arrives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from bridge.media import g711
from bridge.media.rtp import RtpPacket, parse_rtp

HOST = "127.0.0.1"
RATE = 8000
TIMEOUT = 5.0


class HasPort(Protocol):
    @property
    def port(self) -> int: ...


class Phone(asyncio.DatagramProtocol):
    """A UDP socket that records every RTP packet it receives, with its arrival time."""

    def __init__(self) -> None:
        self.received: list[tuple[float, RtpPacket]] = []
        self.raw: list[bytes] = []
        self._arrived = asyncio.Event()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls) -> Phone:
        loop = asyncio.get_running_loop()
        transport, phone = await loop.create_datagram_endpoint(cls, local_addr=(HOST, 0))
        phone.transport = transport
        return phone

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.raw.append(data)
        self.received.append((time.monotonic(), parse_rtp(data)))
        self._arrived.set()

    def send(self, data: bytes, to: HasPort | tuple[str, int]) -> None:
        assert self.transport is not None
        addr = to if isinstance(to, tuple) else (HOST, to.port)
        self.transport.sendto(data, addr)

    async def wait_until(self, condition: Callable[[], bool], within: float = TIMEOUT) -> None:
        deadline = time.monotonic() + within
        while not condition():
            self._arrived.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("phone did not receive what was expected in time")
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                continue

    async def wait_for_packets(self, count: int, within: float = TIMEOUT) -> None:
        await self.wait_until(lambda: len(self.received) >= count, within)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def sine(freq: float, seconds: float, amplitude: float = 8000.0) -> np.ndarray:
    n = np.arange(round(seconds * RATE))
    return np.round(amplitude * np.sin(2 * np.pi * freq * n / RATE + 0.1)).astype(np.int16)


def rtp(
    payload_type: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False
) -> bytes:
    return RtpPacket(
        payload_type=payload_type,
        sequence=seq % 65536,
        timestamp=ts % 2**32,
        ssrc=ssrc,
        marker=marker,
        payload=payload,
    ).to_bytes()


async def stream(
    phone: Phone,
    to: HasPort,
    samples: np.ndarray,
    *,
    payload_type: int,
    ssrc: int,
    seq: int = 1000,
    ts: int = 0,
    paced: bool = True,
) -> None:
    """Send audio as 20 ms packets, paced on an absolute 20 ms schedule like a phone."""
    start = time.monotonic()
    for index in range(len(samples) // 160):
        frame = samples[index * 160 : (index + 1) * 160]
        phone.send(
            rtp(
                payload_type, seq + index, ts + 160 * index, ssrc, g711.encode(payload_type, frame)
            ),
            to,
        )
        if paced:
            delay = start + 0.02 * (index + 1) - time.monotonic()
            await asyncio.sleep(max(0.0, delay))
        elif index % 10 == 9:
            await asyncio.sleep(0)


def peak_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / RATE)[np.argmax(spectrum)])


def decode_all(packets: list[RtpPacket]) -> np.ndarray:
    return np.concatenate([g711.decode(p.payload_type, p.payload) for p in packets])
