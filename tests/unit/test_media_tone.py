"""Hold audio: the tone sounds in cadence at its frequency; WAV files load or are refused."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest

from bridge.media.mixer import FRAME_SAMPLES
from bridge.media.tone import LoopSource, ToneSource, load_wav


def wav_bytes(samples: np.ndarray, *, rate: int = 8000, channels: int = 1, width: int = 2) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(channels)
        wav.setframerate(rate)
        wav.setsampwidth(width)
        wav.writeframes(samples.tobytes())
    return out.getvalue()


def test_tone_has_its_frequency_and_cadence() -> None:
    source = ToneSource((450.0,), on_seconds=0.4, off_seconds=0.6, level_dbfs=-12)
    frames = [source.next_frame() for _ in range(100)]  # 2 s = two cadences
    assert all(f.shape == (FRAME_SAMPLES,) and f.dtype == np.int16 for f in frames)
    on = np.concatenate(frames[:20])
    spectrum = np.abs(np.fft.rfft(on.astype(np.float64)))
    assert np.fft.rfftfreq(len(on), 1 / 8000)[np.argmax(spectrum)] == pytest.approx(450.0, abs=3)
    peak = np.abs(on).max()
    assert peak == pytest.approx(32767 * 10 ** (-12 / 20), rel=0.01)
    assert not np.concatenate(frames[20:50]).any()
    assert np.concatenate(frames[50:70]).any()


def test_tone_phase_is_continuous_across_frames() -> None:
    source = ToneSource((400.0,), on_seconds=10, off_seconds=0)
    audio = np.concatenate([source.next_frame() for _ in range(10)]).astype(np.float64)
    # A click would show as a sample-to-sample step far larger than the sine's own slope.
    max_slope = 2 * np.pi * 400 / 8000 * np.abs(audio).max()
    assert np.abs(np.diff(audio)).max() <= max_slope + 2


@pytest.mark.parametrize(
    "kwargs",
    [{"frequencies": ()}, {"frequencies": (5000.0,)}, {"on_seconds": 0}],
)
def test_bad_tone_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="tone"):
        ToneSource(**kwargs)  # type: ignore[arg-type]


def test_wav_loads_and_loops(tmp_path: Path) -> None:
    samples = np.arange(-200, 200, dtype=np.int16)  # 400 samples: 2.5 frames
    path = tmp_path / "moh.wav"
    path.write_bytes(wav_bytes(samples))
    loaded = load_wav(path)
    assert np.array_equal(loaded, samples)
    source = LoopSource(loaded)
    played = np.concatenate([source.next_frame() for _ in range(5)])  # 800 samples
    assert np.array_equal(played, np.concatenate((samples, samples)))


def test_recording_shorter_than_a_frame_still_loops() -> None:
    source = LoopSource(np.array([1, 2, 3], dtype=np.int16))
    assert source.next_frame()[:7].tolist() == [1, 2, 3, 1, 2, 3, 1]
    assert source.next_frame()[0] == 160 % 3 + 1


def test_eight_bit_wav_is_widened() -> None:
    raw = np.array([128, 255, 0], dtype=np.uint8)
    assert load_wav(wav_bytes(raw, width=1)).tolist() == [0, 127 << 8, -128 << 8]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (wav_bytes(np.zeros(10, dtype=np.int16), rate=16000), "8000 Hz mono"),
        (wav_bytes(np.zeros(10, dtype=np.int16), channels=2), "8000 Hz mono"),
        (wav_bytes(np.zeros(10, dtype=np.int32), width=4), "8- or 16-bit"),
        (wav_bytes(np.zeros(0, dtype=np.int16)), "no samples"),
        (b"RIFF\x00\x00\x00\x00WAVEjunk", "not a PCM WAV"),
    ],
)
def test_unplayable_wav_is_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_wav(data)
