"""Conference mixer: 20 ms frames of 8 kHz int16, every listener hears all audible others.

Theory of operation. Each participant has a mode that says who hears them; everyone hears every
audible participant but themselves (an N-1 mix, so no one hears their own echo):

    mode      heard by                 hears
    full      everyone else            everyone audible
    listen    no one                   everyone audible      (silent supervisor)
    whisper   only the chosen target   everyone audible      (coaching an agent)
    mute      no one                   everyone audible      (microphone muted)

``listen`` and ``mute`` mix alike; they differ in intent, which the call model tracks. The rule
is a gain matrix ``G[listener, speaker]`` of 0s and 1s, so one matrix product mixes a whole
conference, and :func:`mix_batch` stacks every conference of the same size into one product per
tick. Sums are taken in float32 (exact for the sizes used) and clipped to int16: saturation, not
wrap-around, when loud speakers add up.

Audio arrives in packets of any size (20 or 30 ms) at uneven times. Each participant has a small
playout buffer: it starts playing once it holds ``prime_samples``, gives one frame per tick, and
refills (counting as silence meanwhile) when it runs dry, so a late, lost or silent stream is
just silence for one tick and never holds up the others. A buffer grown past ``max_samples``
drops its oldest audio to keep latency bounded.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FRAME_SAMPLES = 160
FRAME_SECONDS = 0.02

Samples = NDArray[np.int16]
_INT16_MIN = -32768.0
_INT16_MAX = 32767.0


class MixMode(enum.Enum):
    FULL = "full"
    LISTEN = "listen"
    WHISPER = "whisper"
    MUTE = "mute"


@dataclass(slots=True)
class _Participant:
    mode: MixMode
    whisper_to: Hashable | None
    buffer: Samples
    """Preallocated playout buffer; ``fill`` samples of it are queued, oldest first."""
    fill: int = 0
    playing: bool = False


class Mixer:
    """One conference. Keys are any hashable the caller uses for its participants."""

    def __init__(self, *, prime_samples: int = 2 * FRAME_SAMPLES, max_samples: int = 800) -> None:
        if not FRAME_SAMPLES <= prime_samples <= max_samples:
            raise ValueError("need FRAME_SAMPLES <= prime_samples <= max_samples")
        self.prime_samples = prime_samples
        self.max_samples = max_samples
        self._participants: dict[Hashable, _Participant] = {}
        self._gains: NDArray[np.float32] | None = None

    @property
    def keys(self) -> tuple[Hashable, ...]:
        return tuple(self._participants)

    def __len__(self) -> int:
        return len(self._participants)

    def __contains__(self, key: object) -> bool:
        return key in self._participants

    def mode_of(self, key: Hashable) -> tuple[MixMode, Hashable | None]:
        p = self._participants[key]
        return p.mode, p.whisper_to

    def add(
        self,
        key: Hashable,
        mode: MixMode = MixMode.FULL,
        *,
        whisper_to: Hashable | None = None,
        lead_in: Samples | None = None,
    ) -> None:
        """``lead_in``: audio the participant's listeners heard last before it joined (it was
        relayed to them); it plays at once, so joining is heard as that audio again rather
        than as silence while the buffer fills to its priming level."""
        if key in self._participants:
            raise ValueError(f"{key!r} is already in the conference")
        participant = _Participant(
            mode=mode, whisper_to=None, buffer=np.zeros(self.max_samples, dtype=np.int16)
        )
        if lead_in is not None and len(lead_in):
            audio = lead_in[-FRAME_SAMPLES:]
            participant.buffer[: len(audio)] = audio
            participant.fill = len(audio)
            participant.playing = True
        self._participants[key] = participant
        self.set_mode(key, mode, whisper_to=whisper_to)

    def set_mode(self, key: Hashable, mode: MixMode, *, whisper_to: Hashable | None = None) -> None:
        if (mode is MixMode.WHISPER) != (whisper_to is not None):
            raise ValueError("whisper_to is required for whisper and only for whisper")
        if whisper_to == key:
            raise ValueError("a participant cannot whisper to themselves")
        participant = self._participants[key]
        participant.mode = mode
        participant.whisper_to = whisper_to
        self._gains = None

    def remove(self, key: Hashable) -> None:
        del self._participants[key]
        self._gains = None

    def push(self, key: Hashable, samples: Samples) -> None:
        """Queue audio received from ``key``; unknown keys are ignored (they just left)."""
        participant = self._participants.get(key)
        if participant is None or not len(samples):
            return
        fill, count = participant.fill, len(samples)
        if fill + count <= self.max_samples:
            participant.buffer[fill : fill + count] = samples
            participant.fill = fill + count
        else:
            newest = np.concatenate((participant.buffer[:fill], samples))[-self.prime_samples :]
            participant.buffer[: len(newest)] = newest
            participant.fill = len(newest)

    def gains(self) -> NDArray[np.float32]:
        """``G[listener, speaker]``: 1 where the listener hears the speaker."""
        if self._gains is None:
            keys = list(self._participants)
            n = len(keys)
            gains = np.zeros((n, n), dtype=np.float32)
            for s, key in enumerate(keys):
                speaker = self._participants[key]
                if speaker.mode is MixMode.FULL:
                    gains[:, s] = 1.0
                elif speaker.mode is MixMode.WHISPER and speaker.whisper_to in self._participants:
                    gains[keys.index(speaker.whisper_to), s] = 1.0
            np.fill_diagonal(gains, 0.0)
            self._gains = gains
        return self._gains

    def take_frames(self) -> NDArray[np.float32]:
        """Pull one frame per participant from the playout buffers, silence where none."""
        frames = np.zeros((len(self._participants), FRAME_SAMPLES), dtype=np.float32)
        for row, participant in enumerate(self._participants.values()):
            fill = participant.fill
            if not participant.playing:
                if fill < self.prime_samples:
                    continue
                participant.playing = True
            buffer = participant.buffer
            if fill > FRAME_SAMPLES:
                frames[row] = buffer[:FRAME_SAMPLES]
                buffer[: fill - FRAME_SAMPLES] = buffer[FRAME_SAMPLES:fill]
                participant.fill = fill - FRAME_SAMPLES
            else:
                frames[row, :fill] = buffer[:fill]
                participant.fill = 0
                # Ran dry (or exactly empty): refill to the priming level before playing on.
                participant.playing = fill == FRAME_SAMPLES
        return frames

    def mix(self) -> dict[Hashable, Samples]:
        """Mix one tick of this conference alone; see :func:`mix_batch` for many."""
        return mix_batch([self])[0]


def mix_batch(mixers: Sequence[Mixer]) -> list[dict[Hashable, Samples]]:
    """Mix one tick of many conferences, one stacked matrix product per conference size."""
    results: list[dict[Hashable, Samples]] = [{} for _ in mixers]
    by_size: dict[int, list[int]] = {}
    for index, mixer in enumerate(mixers):
        if len(mixer):
            by_size.setdefault(len(mixer), []).append(index)
    for indices in by_size.values():
        gains = np.stack([mixers[i].gains() for i in indices])
        frames = np.stack([mixers[i].take_frames() for i in indices])
        mixed = np.matmul(gains, frames)
        np.clip(mixed, _INT16_MIN, _INT16_MAX, out=mixed)
        out = mixed.astype(np.int16)
        for slot, i in enumerate(indices):
            results[i] = dict(zip(mixers[i].keys, out[slot], strict=True))
    return results
