"""The audio of one simulated call: a steady G.711 tone out, a count of what comes back.

Each party of the demo sends its own pure tone, so what a party hears proves where the audio
came from: the caller hearing the seat's frequency means the relay really joined those two
legs, not merely that some packets arrived; in a conference a party hears both others' tones at
once (:meth:`RtpStream.heard_tones`). Packets are paced from the loop clock (one 20 ms frame per
tick, scheduled from the start time so pacing errors do not accumulate).

A key press goes out as RFC 4733 telephone-events in the same stream: while a digit sounds its
event packets replace the voice frames, all carrying the RTP timestamp at which the tone began
(§2.5.1.2), the first with the marker bit, the last sent three times with the E bit (§2.5.1.4).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import deque

import numpy as np

from bridge.media import g711
from bridge.media.dtmf import event_packets
from bridge.media.mixer import FRAME_SAMPLES, FRAME_SECONDS
from bridge.media.rtp import MalformedPacketError, RtpPacket, parse_rtp
from bridge.media.tone import SAMPLE_RATE, Samples, ToneSource

Address = tuple[str, int]

_HEARD_FRAMES = 25
"""Frames kept for :meth:`RtpStream.heard_hz`: half a second resolves the tone to 2 Hz."""
_KEY_EVENT_UNITS = 800
"""Each key press lasts 100 ms (in 8 kHz timestamp units), like a phone's keypad."""
_KEY_GAP_FRAMES = 3
"""Voice frames between two key presses, so each is a separate event (§2.5.1.2)."""
_TONE_SHARE = 0.2
"""A tone counts as heard when its spectral peak reaches this share of the loudest one."""


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, stream: RtpStream) -> None:
        self.stream = stream

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.stream._on_packet(data)

    def error_received(self, exc: Exception) -> None:
        # Port unreachable while the far end is not listening yet (or any more): harmless.
        self.stream.send_errors += 1


class RtpStream:
    """An RTP socket that sends ``tone_hz`` and records what it receives."""

    def __init__(self, tone_hz: float) -> None:
        self.tone_hz = tone_hz
        self.port = 0
        self.sent = 0
        self.received = 0
        self.send_errors = 0
        self.payload_types: set[int] = set()
        self._transport: asyncio.DatagramTransport | None = None
        self._sender: asyncio.Task[None] | None = None
        self._recent: deque[Samples] = deque(maxlen=_HEARD_FRAMES)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._keys: deque[tuple[str, int, asyncio.Future[None]]] = deque()
        self.keys_sent = 0

    @classmethod
    async def open(cls, host: str, tone_hz: float) -> RtpStream:
        stream = cls(tone_hz)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Receiver(stream), local_addr=(host, 0)
        )
        stream._transport = transport
        stream.port = int(transport.get_extra_info("sockname")[1])
        return stream

    def start(self, remote: Address, payload_type: int) -> None:
        """Start sending to ``remote`` (where the answer or offer told us to send)."""
        if self._sender is None and self._transport is not None:
            self._sender = asyncio.get_running_loop().create_task(
                self._send_loop(remote, payload_type)
            )

    async def _send_loop(self, remote: Address, payload_type: int) -> None:
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        tone = ToneSource((self.tone_hz,), on_seconds=1.0, off_seconds=0.0, level_dbfs=-12.0)
        ssrc = secrets.randbits(32)
        sequence = secrets.randbits(16)
        timestamp = secrets.randbits(32)
        start = loop.time()
        ticks = 0
        while not self._transport.is_closing():
            if self._keys:
                digit, event_pt, done = self._keys.popleft()
                for index, event in enumerate(event_packets(digit, duration=_KEY_EVENT_UNITS)):
                    packet = RtpPacket(
                        payload_type=event_pt,
                        sequence=sequence,
                        timestamp=timestamp,
                        ssrc=ssrc,
                        marker=index == 0,
                        payload=event.to_bytes(),
                    )
                    self._transport.sendto(packet.to_bytes(), remote)
                    sequence += 1
                    if not event.end:
                        ticks += 1
                        await asyncio.sleep(max(0.0, start + ticks * FRAME_SECONDS - loop.time()))
                timestamp += _KEY_EVENT_UNITS
                self.keys_sent += 1
                if not done.done():
                    done.set_result(None)
                for _ in range(_KEY_GAP_FRAMES):
                    tone.next_frame()
                    timestamp += FRAME_SAMPLES
                    ticks += 1
                await asyncio.sleep(max(0.0, start + ticks * FRAME_SECONDS - loop.time()))
                continue
            packet = RtpPacket(
                payload_type=payload_type,
                sequence=sequence,
                timestamp=timestamp,
                ssrc=ssrc,
                marker=self.sent == 0,
                payload=g711.encode(payload_type, tone.next_frame()),
            )
            self._transport.sendto(packet.to_bytes(), remote)
            self.sent += 1
            ticks += 1
            sequence += 1
            timestamp += FRAME_SAMPLES
            await asyncio.sleep(max(0.0, start + ticks * FRAME_SECONDS - loop.time()))

    async def press_keys(self, digits: str, event_payload_type: int, within: float) -> bool:
        """Send ``digits`` as RFC 4733 events in this stream; True once all went out.

        The stream must be sending already (the call is answered): events ride on its SSRC and
        sequence numbers, so the far end's relay sees them as this party's key presses.
        """
        if self._sender is None:
            return False
        loop = asyncio.get_running_loop()
        futures = []
        for digit in digits:
            future: asyncio.Future[None] = loop.create_future()
            self._keys.append((digit, event_payload_type, future))
            futures.append(future)
        try:
            await asyncio.wait_for(asyncio.gather(*futures), within)
        except TimeoutError:
            return False
        return True

    def _on_packet(self, data: bytes) -> None:
        try:
            packet = parse_rtp(data)
        except (MalformedPacketError, ValueError):
            return
        self.received += 1
        self.payload_types.add(packet.payload_type)
        if g711.is_g711(packet.payload_type):
            self._recent.append(g711.decode(packet.payload_type, packet.payload))
        for entry in list(self._waiters):
            count, future = entry
            if self.received >= count:
                self._waiters.remove(entry)
                if not future.done():
                    future.set_result(None)

    async def wait_received(self, count: int, within: float) -> bool:
        """True once ``count`` packets came in; False if ``within`` seconds pass first."""
        if self.received >= count:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (count, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(future, within)
        except TimeoutError:
            return False
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)
        return True

    def heard_hz(self) -> float | None:
        """The loudest frequency of the last half second received, or None if it was silent."""
        if len(self._recent) < 5:
            return None
        samples = np.concatenate(tuple(self._recent)).astype(np.float64)
        if float(np.abs(samples).max()) < 64:
            return None
        spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
        spectrum[0] = 0.0
        return float(np.argmax(spectrum)) * SAMPLE_RATE / len(samples)

    def heard_tones(self, candidates: tuple[float, ...]) -> tuple[float, ...]:
        """Which of ``candidates`` (Hz) sound in the last half second: several at once when a
        conference mixes parties together."""
        if len(self._recent) < 5:
            return ()
        samples = np.concatenate(tuple(self._recent)).astype(np.float64)
        if float(np.abs(samples).max()) < 64:
            return ()
        spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
        spectrum[0] = 0.0
        loudest = float(spectrum.max())
        bin_hz = SAMPLE_RATE / len(samples)
        heard = []
        for hz in candidates:
            centre = round(hz / bin_hz)
            near = spectrum[max(centre - 3, 0) : centre + 4]
            if near.size and float(near.max()) >= _TONE_SHARE * loudest:
                heard.append(hz)
        return tuple(heard)

    async def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        if self._transport is not None:
            self._transport.close()
        for _, future in self._waiters:
            if not future.done():
                future.cancel()
        self._waiters.clear()
        for _, _, done in self._keys:
            if not done.done():
                done.cancel()
        self._keys.clear()
