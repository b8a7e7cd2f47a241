"""Media state pickled across processes (a leg moving between media workers, a digit reported)
comes back whole, compiled (bridge/native.py) or not."""

from __future__ import annotations

import pickle
from typing import TypeVar

from bridge.media.continuity import StreamContinuity
from bridge.media.dtmf import DtmfDigit
from bridge.media.stats import StreamStats

T = TypeVar("T")


def moved(obj: T) -> T:
    copy: T = pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
    return copy


def test_reception_figures_move_with_their_leg_and_keep_counting() -> None:
    stats = StreamStats(clock_rate=8000)
    for index in (0, 1, 3, 4):  # one packet lost
        stats.on_packet(77, 100 + index, 160 * index, 172, index * 0.02, True)
    copy = moved(stats)
    assert copy.snapshot() == stats.snapshot()
    for figures in (stats, copy):
        figures.on_packet(77, 105, 800, 172, 0.1, True)
    assert copy.snapshot() == stats.snapshot()
    assert copy.snapshot().packets_lost == 1


def test_an_outgoing_stream_moves_with_its_ssrc_and_sequence() -> None:
    stream = StreamContinuity(ssrc=0x1234, sequence=500, timestamp=8000)
    for index in range(3):
        stream.rewrite("agent", 10 + index, 160 * index, index * 0.02)
    copy = moved(stream)
    assert copy.ssrc == 0x1234
    assert copy.rewrite("agent", 13, 480, 0.06) == stream.rewrite("agent", 13, 480, 0.06)
    assert copy.rewrite("desk", 900, 12345, 0.5) == stream.rewrite("desk", 900, 12345, 0.5)


def test_a_digit_reported_by_a_worker_arrives_as_detected() -> None:
    digit = DtmfDigit(digit="5", ssrc=3, rtp_timestamp=8000, detected_at=12.5)
    assert moved(digit) == digit
