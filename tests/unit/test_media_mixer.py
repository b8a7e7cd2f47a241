"""Conference mixing checked by ear, i.e. by FFT: who hears which tone."""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import pytest

from bridge.media.mixer import FRAME_SAMPLES, Mixer, MixMode, mix_batch

RATE = 8000
# 50 Hz bins for a 160-sample frame: these tones fall exactly on bins.
TONES = {"caller": 500.0, "agent": 1000.0, "officer": 1500.0, "supervisor": 2500.0}


def tone(freq: float, frame: int, amplitude: float = 6000.0) -> np.ndarray:
    n = np.arange(frame * FRAME_SAMPLES, (frame + 1) * FRAME_SAMPLES)
    return np.round(amplitude * np.sin(2 * np.pi * freq * n / RATE)).astype(np.int16)


def heard(frame: np.ndarray) -> set[float]:
    """Frequencies present in a frame, at least -40 dB below a full-level tone."""
    spectrum = np.abs(np.fft.rfft(frame.astype(np.float64))) / (FRAME_SAMPLES / 2)
    freqs = np.fft.rfftfreq(FRAME_SAMPLES, 1 / RATE)
    return {float(f) for f, a in zip(freqs, spectrum, strict=True) if a > 60.0}


def run(mixer: Mixer, ticks: int = 4) -> dict[Hashable, np.ndarray]:
    out: dict[Hashable, np.ndarray] = {}
    for frame in range(ticks):
        for key in mixer.keys:
            mixer.push(key, tone(TONES[str(key)], frame))
        out = mixer.mix()
    return out


def conference(**modes: MixMode) -> Mixer:
    mixer = Mixer()
    for key, mode in modes.items():
        mixer.add(key, mode)
    return mixer


def test_everyone_hears_everyone_but_themselves() -> None:
    out = run(conference(caller=MixMode.FULL, agent=MixMode.FULL, officer=MixMode.FULL))
    assert heard(out["caller"]) == {1000.0, 1500.0}
    assert heard(out["agent"]) == {500.0, 1500.0}
    assert heard(out["officer"]) == {500.0, 1000.0}


def test_listen_hears_all_and_is_heard_by_none() -> None:
    out = run(conference(caller=MixMode.FULL, agent=MixMode.FULL, supervisor=MixMode.LISTEN))
    assert heard(out["supervisor"]) == {500.0, 1000.0}
    assert heard(out["caller"]) == {1000.0}
    assert heard(out["agent"]) == {500.0}


def test_whisper_reaches_only_its_target() -> None:
    mixer = conference(caller=MixMode.FULL, agent=MixMode.FULL)
    mixer.add("supervisor", MixMode.WHISPER, whisper_to="agent")
    out = run(mixer)
    assert heard(out["agent"]) == {500.0, 2500.0}
    assert heard(out["caller"]) == {1000.0}
    assert heard(out["supervisor"]) == {500.0, 1000.0}


def test_mute_silences_the_microphone_only() -> None:
    out = run(conference(caller=MixMode.FULL, agent=MixMode.MUTE, officer=MixMode.FULL))
    assert heard(out["caller"]) == {1500.0}
    assert heard(out["officer"]) == {500.0}
    assert heard(out["agent"]) == {500.0, 1500.0}


def test_barge_is_a_mode_change_mid_call() -> None:
    mixer = conference(caller=MixMode.FULL, agent=MixMode.FULL, supervisor=MixMode.LISTEN)
    assert heard(run(mixer)["caller"]) == {1000.0}
    mixer.set_mode("supervisor", MixMode.FULL)
    assert heard(run(mixer)["caller"]) == {1000.0, 2500.0}


def test_whisper_to_someone_who_left_is_heard_by_none() -> None:
    mixer = conference(caller=MixMode.FULL, agent=MixMode.FULL)
    mixer.add("supervisor", MixMode.WHISPER, whisper_to="agent")
    mixer.remove("agent")
    out = run(mixer)
    assert heard(out["caller"]) == set()
    assert heard(out["supervisor"]) == {500.0}


def test_mode_arguments_are_checked() -> None:
    mixer = conference(caller=MixMode.FULL)
    with pytest.raises(ValueError, match="whisper_to"):
        mixer.add("agent", MixMode.WHISPER)
    with pytest.raises(ValueError, match="whisper_to"):
        mixer.set_mode("caller", MixMode.FULL, whisper_to="agent")
    with pytest.raises(ValueError, match="themselves"):
        mixer.set_mode("caller", MixMode.WHISPER, whisper_to="caller")
    with pytest.raises(ValueError, match="already"):
        mixer.add("caller")


def test_loud_speakers_saturate_instead_of_wrapping() -> None:
    loud = np.full(FRAME_SAMPLES, 30000, dtype=np.int16)
    for sign, limit in ((1, 32767), (-1, -32768)):
        mixer = conference(caller=MixMode.FULL, agent=MixMode.FULL, officer=MixMode.FULL)
        for _ in range(2):
            mixer.push("agent", sign * loud)
            mixer.push("officer", sign * loud)
        assert (mixer.mix()["caller"] == limit).all()


def test_a_lost_stream_is_silence_and_does_not_stall_the_others() -> None:
    mixer = conference(caller=MixMode.FULL, agent=MixMode.FULL, officer=MixMode.FULL)
    run(mixer)
    # The officer's packets stop arriving: each tick still produces audio for everyone.
    for frame in range(4, 10):
        mixer.push("caller", tone(500.0, frame))
        mixer.push("agent", tone(1000.0, frame))
        out = mixer.mix()
        assert set(out) == {"caller", "agent", "officer"}
    assert heard(out["caller"]) == {1000.0}
    assert heard(out["officer"]) == {500.0, 1000.0}


def test_nobody_sending_is_silence_for_everyone() -> None:
    mixer = conference(caller=MixMode.FULL, agent=MixMode.FULL)
    out = mixer.mix()
    assert all(not frame.any() for frame in out.values())
    assert all(frame.shape == (FRAME_SAMPLES,) for frame in out.values())


def test_thirty_ms_packets_play_without_gaps() -> None:
    # A-law trunks often send 30 ms: two packets per three ticks, never a silent tick.
    mixer = conference(caller=MixMode.FULL, agent=MixMode.FULL)
    phase = 2 * np.pi * 500 * np.arange(240 * 40) / RATE + 0.3
    source = np.round(6000 * np.sin(phase)).astype(np.int16)
    packets = [source[i : i + 240] for i in range(0, len(source), 240)]
    received = []
    sent = 0
    for tick in range(50):
        while sent < len(packets) and sent * 30 <= tick * 20:
            mixer.push("caller", packets[sent])
            sent += 1
        received.append(mixer.mix()["agent"])
    audio = np.concatenate(received)
    start = int(np.argmax(audio != 0))
    played = audio[start : start + 160 * 40]
    assert (np.abs(played[:-1]) + np.abs(played[1:]) > 0).all()
    assert np.array_equal(played, source[: len(played)])


def test_a_relayed_speaker_joining_plays_its_lead_in_instead_of_silence() -> None:
    # The agent was relayed straight to the caller; the caller heard frame 9 last.
    mixer = Mixer()
    mixer.add("caller", lead_in=tone(500.0, 9))
    mixer.add("agent", lead_in=tone(1000.0, 9))
    mixer.add("officer")
    first = mixer.mix()
    assert heard(first["caller"]) == {1000.0}, "frame 9 again, not silence"
    assert heard(first["officer"]) == {500.0, 1000.0}
    mixer.push("caller", tone(500.0, 10))
    mixer.push("agent", tone(1000.0, 10))
    second = mixer.mix()
    assert np.array_equal(second["caller"], tone(1000.0, 10)), "then straight on"


def test_a_new_speaker_without_lead_in_primes_its_buffer_first() -> None:
    mixer = conference(caller=MixMode.FULL, agent=MixMode.FULL)
    mixer.push("agent", tone(1000.0, 0))
    assert not mixer.mix()["caller"].any(), "one frame is under the priming level"


def test_overfull_buffer_drops_old_audio_to_bound_delay() -> None:
    mixer = Mixer(prime_samples=320, max_samples=800)
    mixer.add("caller")
    mixer.add("agent")
    for frame in range(20):
        mixer.push("caller", np.full(FRAME_SAMPLES, frame + 1, dtype=np.int16))
    # Only the newest audio is left: the first frame played is recent, not frame 1.
    assert int(mixer.mix()["agent"][0]) > 20 - 800 // FRAME_SAMPLES


def test_batch_mix_equals_mixing_one_by_one() -> None:
    def build(n: int, seed: int) -> Mixer:
        rng = np.random.default_rng(seed)
        mixer = Mixer(prime_samples=FRAME_SAMPLES)
        for k in range(n):
            mixer.add(k, MixMode.LISTEN if k == n - 1 and n > 2 else MixMode.FULL)
            mixer.push(k, rng.integers(-20000, 20000, FRAME_SAMPLES).astype(np.int16))
        return mixer

    sizes = [3, 2, 3, 4, 3]
    batch = mix_batch([build(n, seed) for seed, n in enumerate(sizes)])
    for seed, n in enumerate(sizes):
        alone = build(n, seed).mix()
        assert alone.keys() == batch[seed].keys()
        for key in alone:
            assert np.array_equal(alone[key], batch[seed][key])


def test_empty_conference_mixes_to_nothing() -> None:
    assert mix_batch([Mixer()]) == [{}]
