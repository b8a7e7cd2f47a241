"""G.711 A-law (PCMA) and μ-law (PCMU) by lookup table.

The tables are computed once at import from the segment arithmetic of the ITU-T G.711 reference
(as in the widely used Sun ``g711.c``), vectorised with numpy. Encoding indexes a 65,536-entry
table with the 16-bit sample itself, decoding a 256-entry table with the code, and A-law↔μ-law
transcoding is a single ``bytes.translate`` through a 256-byte table, so the relay never goes
through linear samples when two legs only disagree on the law. ``audioop`` is not used: it is
deprecated and removed in Python 3.13.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

PCMU: Final = 0
PCMA: Final = 8
"""Static RTP payload types (RFC 3551 §6)."""
SAMPLE_RATE: Final = 8000

Samples = NDArray[np.int16]

_SEG_END_ALAW = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
_SEG_END_ULAW = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159


def _encode_alaw_reference(samples: NDArray[np.int32]) -> NDArray[np.uint8]:
    pcm = samples >> 3
    positive = pcm >= 0
    mask = np.where(positive, 0xD5, 0x55)
    magnitude = np.where(positive, pcm, -pcm - 1)
    segment = np.searchsorted(_SEG_END_ALAW, magnitude, side="left")
    shift = np.where(segment < 2, 1, segment)
    code = (np.minimum(segment, 7) << 4) | ((magnitude >> shift) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _decode_alaw_reference(codes: NDArray[np.int32]) -> NDArray[np.int16]:
    value = codes ^ 0x55
    mantissa = (value & 0x0F) << 4
    segment = (value & 0x70) >> 4
    magnitude = np.where(
        segment == 0,
        mantissa + 8,
        (mantissa + 0x108) << np.maximum(segment - 1, 0),
    )
    return np.where(value & 0x80, magnitude, -magnitude).astype(np.int16)


def _encode_ulaw_reference(samples: NDArray[np.int32]) -> NDArray[np.uint8]:
    pcm = samples >> 2
    negative = pcm < 0
    mask = np.where(negative, 0x7F, 0xFF)
    magnitude = np.minimum(np.where(negative, -pcm, pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    segment = np.searchsorted(_SEG_END_ULAW, magnitude, side="left")
    code = (np.minimum(segment, 7) << 4) | ((magnitude >> (np.minimum(segment, 7) + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _decode_ulaw_reference(codes: NDArray[np.int32]) -> NDArray[np.int16]:
    value = ~codes & 0xFF
    magnitude = (((value & 0x0F) << 3) + _ULAW_BIAS) << ((value & 0x70) >> 4)
    return np.where(value & 0x80, _ULAW_BIAS - magnitude, magnitude - _ULAW_BIAS).astype(np.int16)


_ALL_CODES = np.arange(256, dtype=np.int32)
# Index i of an encode table is the sample whose int16 bit pattern is i (a uint16 view).
_ALL_SAMPLES = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)

ALAW_DECODE: Final[Samples] = _decode_alaw_reference(_ALL_CODES)
ULAW_DECODE: Final[Samples] = _decode_ulaw_reference(_ALL_CODES)
ALAW_ENCODE: Final[NDArray[np.uint8]] = _encode_alaw_reference(_ALL_SAMPLES)
ULAW_ENCODE: Final[NDArray[np.uint8]] = _encode_ulaw_reference(_ALL_SAMPLES)
for _table in (ALAW_DECODE, ULAW_DECODE, ALAW_ENCODE, ULAW_ENCODE):
    _table.setflags(write=False)

ALAW_TO_ULAW: Final[bytes] = ULAW_ENCODE[ALAW_DECODE.view(np.uint16)].tobytes()
ULAW_TO_ALAW: Final[bytes] = ALAW_ENCODE[ULAW_DECODE.view(np.uint16)].tobytes()

ALAW_SILENCE: Final = 0xD5
ULAW_SILENCE: Final = 0xFF


def decode_alaw(payload: bytes) -> Samples:
    return ALAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


def decode_ulaw(payload: bytes) -> Samples:
    return ULAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


def encode_alaw(samples: Samples) -> bytes:
    return ALAW_ENCODE[np.asarray(samples, dtype=np.int16).view(np.uint16)].tobytes()


def encode_ulaw(samples: Samples) -> bytes:
    return ULAW_ENCODE[np.asarray(samples, dtype=np.int16).view(np.uint16)].tobytes()


def alaw_to_ulaw(payload: bytes) -> bytes:
    return payload.translate(ALAW_TO_ULAW)


def ulaw_to_alaw(payload: bytes) -> bytes:
    return payload.translate(ULAW_TO_ALAW)


def is_g711(payload_type: int) -> bool:
    return payload_type in (PCMU, PCMA)


def decode(payload_type: int, payload: bytes) -> Samples:
    """Decode by static payload type; raise ``ValueError`` for anything but PCMA/PCMU."""
    if payload_type == PCMA:
        return decode_alaw(payload)
    if payload_type == PCMU:
        return decode_ulaw(payload)
    raise ValueError(f"payload type {payload_type} is not G.711")


def encode(payload_type: int, samples: Samples) -> bytes:
    if payload_type == PCMA:
        return encode_alaw(samples)
    if payload_type == PCMU:
        return encode_ulaw(samples)
    raise ValueError(f"payload type {payload_type} is not G.711")


TRANSCODE_TABLES: dict[tuple[int, int], bytes] = {
    (PCMA, PCMU): ALAW_TO_ULAW,
    (PCMU, PCMA): ULAW_TO_ALAW,
}
"""``bytes.translate`` tables by (from, to) payload type; pairs missing here cannot be bridged."""


def silence(payload_type: int, samples: int) -> bytes:
    code = ALAW_SILENCE if payload_type == PCMA else ULAW_SILENCE
    return bytes((code,)) * samples
