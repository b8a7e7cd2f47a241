"""What a held party hears: a cadenced tone or a looped 8 kHz mono recording.

Sources hand out one 20 ms frame per call and keep their own position, so the relay's tick can
pull from them like from the mixer. The tone is computed from the absolute sample index, which
keeps its phase continuous across frames (no click every 20 ms). The WAV loader accepts only
what can be played without resampling, 8 kHz mono 8- or 16-bit PCM, and says what is wrong
otherwise: music on hold is configured once, so a clear refusal beats a silent conversion.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from bridge.media.mixer import FRAME_SAMPLES

SAMPLE_RATE = 8000
Samples = NDArray[np.int16]


class AudioSource(Protocol):
    def next_frame(self) -> Samples: ...


class ToneSource:
    """A sum of sine tones switched on and off in a cadence (e.g. 450 Hz, 0.4 s on, 4 s off)."""

    def __init__(
        self,
        frequencies: tuple[float, ...] = (450.0,),
        *,
        on_seconds: float = 0.4,
        off_seconds: float = 4.0,
        level_dbfs: float = -18.0,
    ) -> None:
        if not frequencies or any(not 0 < f < SAMPLE_RATE / 2 for f in frequencies):
            raise ValueError("tone frequencies must lie between 0 and 4000 Hz")
        if on_seconds <= 0 or off_seconds < 0:
            raise ValueError("the tone must sound for some time in each cadence")
        self._frequencies = np.array(frequencies, dtype=np.float64)
        self._on = round(on_seconds * SAMPLE_RATE)
        self._period = self._on + round(off_seconds * SAMPLE_RATE)
        self._amplitude = 32767.0 * 10 ** (level_dbfs / 20) / len(frequencies)
        self._position = 0

    def next_frame(self) -> Samples:
        n = np.arange(self._position, self._position + FRAME_SAMPLES, dtype=np.float64)
        self._position += FRAME_SAMPLES
        phases = 2 * np.pi * np.outer(n, self._frequencies) / SAMPLE_RATE
        signal: NDArray[np.float64] = self._amplitude * np.sin(phases).sum(axis=1)
        signal[(n % self._period) >= self._on] = 0.0
        frame: Samples = np.round(signal).astype(np.int16)
        return frame


class LoopSource:
    """Plays recorded samples round and round (music on hold)."""

    def __init__(self, samples: Samples) -> None:
        if not len(samples):
            raise ValueError("cannot loop an empty recording")
        reps = -(-FRAME_SAMPLES // len(samples)) + 1
        # Appending one frame's worth of the start lets every frame be a single slice.
        self._samples = np.concatenate((samples,) * reps)[: len(samples) + FRAME_SAMPLES]
        self._length = len(samples)
        self._position = 0

    def next_frame(self) -> Samples:
        start = self._position
        self._position = (start + FRAME_SAMPLES) % self._length
        return self._samples[start : start + FRAME_SAMPLES]


def load_wav(source: str | Path | bytes) -> Samples:
    """Read an 8 kHz mono PCM WAV (a path or the file's bytes) into int16 samples."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    with handle:
        try:
            with wave.open(handle, "rb") as wav:
                channels = wav.getnchannels()
                rate = wav.getframerate()
                width = wav.getsampwidth()
                raw = wav.readframes(wav.getnframes())
        except (wave.Error, EOFError) as exc:
            raise ValueError(f"not a PCM WAV file: {exc}") from exc
    if rate != SAMPLE_RATE or channels != 1:
        raise ValueError(f"hold audio must be 8000 Hz mono, not {rate} Hz with {channels} channels")
    if width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.int16)
    elif width == 1:
        samples = ((np.frombuffer(raw, dtype=np.uint8).astype(np.int16) - 128) << 8).astype(
            np.int16
        )
    else:
        raise ValueError(f"hold audio must be 8- or 16-bit PCM, not {8 * width}-bit")
    if not len(samples):
        raise ValueError("hold audio file has no samples")
    return samples
