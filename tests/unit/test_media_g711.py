"""G.711 tables: known code points, round trips, error bounds and A-law↔μ-law transcoding."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.media import g711

ALL_CODES = bytes(range(256))
ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)


@pytest.mark.parametrize(
    ("code", "linear"),
    # 0x80 ^ 0x55 = 0xD5: positive, segment 5, mantissa 5 -> ((5 << 4) + 0x108) << 4.
    [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0x80, 5504)],
)
def test_known_alaw_values(code: int, linear: int) -> None:
    assert int(g711.decode_alaw(bytes((code,)))[0]) == linear


@pytest.mark.parametrize(
    ("code", "linear"),
    [(0xFF, 0), (0x7F, 0), (0x00, -32124), (0x80, 32124), (0xF0, 120)],
)
def test_known_ulaw_values(code: int, linear: int) -> None:
    assert int(g711.decode_ulaw(bytes((code,)))[0]) == linear


def test_silence_encodes_to_the_customary_codes() -> None:
    zero = np.zeros(3, dtype=np.int16)
    assert g711.encode_alaw(zero) == b"\xd5\xd5\xd5"
    assert g711.encode_ulaw(zero) == b"\xff\xff\xff"
    assert g711.silence(g711.PCMA, 2) == b"\xd5\xd5"
    assert g711.silence(g711.PCMU, 2) == b"\xff\xff"


def test_every_code_survives_decode_then_encode() -> None:
    assert g711.encode_alaw(g711.decode_alaw(ALL_CODES)) == ALL_CODES
    ulaw = g711.encode_ulaw(g711.decode_ulaw(ALL_CODES))
    # μ-law has two zeros (0x7F is "negative zero"); both come back as 0xFF.
    assert [i for i in range(256) if ulaw[i] != ALL_CODES[i]] == [0x7F]
    assert ulaw[0x7F] == 0xFF


def test_quantisation_error_stays_within_half_a_step() -> None:
    x = ALL_SAMPLES.astype(np.int64)
    # Steps double per segment: the error bound grows with the magnitude (log companding).
    bound = np.maximum(8, np.abs(x) // 32 + 8)
    alaw_error = np.abs(g711.decode_alaw(g711.encode_alaw(ALL_SAMPLES)).astype(np.int64) - x)
    ulaw_error = np.abs(g711.decode_ulaw(g711.encode_ulaw(ALL_SAMPLES)).astype(np.int64) - x)
    assert (alaw_error <= bound).all()
    assert (ulaw_error <= bound).all()
    # Near zero μ-law steps are 8 (error below one step), A-law's 16 (error half a step).
    small = np.abs(x) < 64
    assert ulaw_error[small].max() <= 7
    assert alaw_error[small].max() <= 8
    assert ulaw_error[small].mean() < alaw_error[small].mean()


def test_encoding_is_monotonic() -> None:
    decoded = g711.decode_alaw(g711.encode_alaw(ALL_SAMPLES)).astype(np.int64)
    assert (np.diff(decoded) >= 0).all()
    decoded = g711.decode_ulaw(g711.encode_ulaw(ALL_SAMPLES)).astype(np.int64)
    assert (np.diff(decoded) >= 0).all()


def _snr_db(reference: np.ndarray, degraded: np.ndarray) -> float:
    noise = reference.astype(np.float64) - degraded.astype(np.float64)
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / np.sum(noise**2)))


def test_speech_level_tone_keeps_toll_quality() -> None:
    t = np.arange(8000) / 8000
    tone = (8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    assert _snr_db(tone, g711.decode_alaw(g711.encode_alaw(tone))) > 35
    assert _snr_db(tone, g711.decode_ulaw(g711.encode_ulaw(tone))) > 35


def test_transcoding_tables_equal_decode_then_encode() -> None:
    assert g711.alaw_to_ulaw(ALL_CODES) == g711.encode_ulaw(g711.decode_alaw(ALL_CODES))
    assert g711.ulaw_to_alaw(ALL_CODES) == g711.encode_alaw(g711.decode_ulaw(ALL_CODES))
    # A-law has no zero code: its quietest +8 becomes the μ-law code for +8, not 0xFF.
    assert g711.alaw_to_ulaw(b"\xd5") == b"\xfe"
    assert int(g711.decode_ulaw(b"\xfe")[0]) == 8
    assert g711.ulaw_to_alaw(b"\xff") == b"\xd5"


def test_transcoded_audio_stays_close_to_the_original() -> None:
    t = np.arange(1600) / 8000
    tone = (6000 * np.sin(2 * np.pi * 700 * t)).astype(np.int16)
    alaw = g711.encode_alaw(tone)
    heard = g711.decode_ulaw(g711.alaw_to_ulaw(alaw))
    assert _snr_db(tone, heard) > 30
    back = g711.decode_alaw(g711.ulaw_to_alaw(g711.alaw_to_ulaw(alaw)))
    assert _snr_db(tone, back) > 30


def test_transcode_tables_cover_both_directions_only() -> None:
    assert g711.TRANSCODE_TABLES == {
        (g711.PCMA, g711.PCMU): g711.ALAW_TO_ULAW,
        (g711.PCMU, g711.PCMA): g711.ULAW_TO_ALAW,
    }
    with pytest.raises(ValueError, match=r"not G\.711"):
        g711.decode(18, b"")
