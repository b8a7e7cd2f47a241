"""Reception statistics against figures worked out by hand from RFC 3550 A.1, A.3 and A.8."""

from __future__ import annotations

import pytest

from bridge.media.stats import StreamStats


def feed(stats: StreamStats, packets: list[tuple[int, int, float]], ssrc: int = 1) -> None:
    for sequence, timestamp, arrival in packets:
        stats.on_packet(ssrc=ssrc, sequence=sequence, timestamp=timestamp, size=172, now=arrival)


def test_jitter_matches_a_hand_computed_sequence() -> None:
    # 20 ms packets; the third arrives 5 ms late.
    # transit (timestamp units) = 8000 * arrival - timestamp: 0, 0, 40, 0
    # |D|: 0, 40, 40 -> J = 0, 0 + 40/16 = 2.5, 2.5 + (40 - 2.5)/16 = 4.84375
    stats = StreamStats()
    feed(stats, [(1, 0, 0.0), (2, 160, 0.020), (3, 320, 0.045), (4, 480, 0.060)])
    assert stats.jitter == pytest.approx(4.84375)
    snapshot = stats.snapshot()
    assert snapshot.jitter_ms == pytest.approx(4.84375 / 8)
    assert snapshot.packets_received == 4
    assert snapshot.bytes_received == 4 * 172
    assert snapshot.packets_lost == 0


def test_a_constant_offset_clock_has_no_jitter() -> None:
    stats = StreamStats()
    feed(stats, [(n, 1000 + 160 * n, 123.456 + 0.02 * n) for n in range(50)])
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


def test_loss_counts_gaps_not_reordering() -> None:
    stats = StreamStats()
    # 3 is lost, 5 arrives before 4.
    feed(stats, [(s, 160 * s, 0.02 * s) for s in (1, 2, 5, 4, 6, 7)])
    snapshot = stats.snapshot()
    assert snapshot.packets_expected == 7
    assert snapshot.packets_lost == 1
    assert snapshot.loss_fraction == pytest.approx(1 / 7)


def test_duplicates_count_as_received_and_loss_never_goes_negative() -> None:
    # A.3: "lost" is expected minus received, duplicates included; we show it floored at 0.
    stats = StreamStats()
    feed(stats, [(s, 160 * s, 0.02 * s) for s in (1, 2, 2, 2, 3)])
    assert stats.expected == 3
    assert stats.lost == 0


def test_sequence_wrap_is_not_loss() -> None:
    stats = StreamStats()
    feed(stats, [(s % 65536, 160 * s, 0.02 * s) for s in range(65530, 65545)])
    assert stats.expected == 15
    assert stats.lost == 0


def test_timestamp_wrap_does_not_disturb_jitter() -> None:
    stats = StreamStats()
    start = 2**32 - 320
    feed(stats, [(s, (start + 160 * s) % 2**32, 0.02 * s) for s in range(6)])
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


def test_a_stray_jump_is_ignored_and_a_confirmed_one_restarts() -> None:
    stats = StreamStats()
    feed(stats, [(100, 0, 0.0), (101, 160, 0.02)])
    assert not stats.on_packet(ssrc=1, sequence=40000, timestamp=0, size=10, now=0.03)
    feed(stats, [(102, 320, 0.04)])
    assert stats.expected == 3
    # Two in a row after the jump: the sender restarted its sequence.
    feed(stats, [(20000, 0, 0.06), (20001, 160, 0.08), (20002, 320, 0.10)])
    assert stats.lost == 0
    assert stats.expected == 3 + 2  # the packet that confirmed the jump starts the new count


def test_new_ssrc_keeps_totals_of_the_old_source() -> None:
    stats = StreamStats()
    feed(stats, [(1, 0, 0.0), (2, 160, 0.02), (4, 480, 0.06)], ssrc=1)
    feed(stats, [(9000, 0, 0.08), (9001, 160, 0.10)], ssrc=2)
    assert stats.expected == 4 + 2
    assert stats.lost == 1


def test_event_packets_stay_out_of_the_jitter() -> None:
    stats = StreamStats()
    feed(stats, [(1, 0, 0.0), (2, 160, 0.02)])
    # RFC 4733 packets repeat the start timestamp while time passes.
    for n, seq in enumerate(range(3, 8)):
        now = 0.04 + 0.02 * n
        stats.on_packet(ssrc=1, sequence=seq, timestamp=320, size=16, now=now, timed=False)
    feed(stats, [(8, 1120, 0.14)])
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)
    assert stats.lost == 0


def test_sent_counters() -> None:
    stats = StreamStats()
    stats.on_sent(172)
    stats.on_sent(172)
    assert (stats.snapshot().packets_sent, stats.snapshot().bytes_sent) == (2, 344)


def test_reception_report_covers_the_interval_since_the_last_one() -> None:
    stats = StreamStats()
    assert stats.reception_report() is None
    feed(stats, [(1, 0, 0.0), (2, 160, 0.02), (4, 480, 0.06)], ssrc=0xCAFE)
    first = stats.reception_report(last_sr=0x12345678, delay_since_last_sr=65536)
    assert first is not None
    # 1 of 4 lost: 64/256; the loss counts from the first packet of the source.
    assert (first.ssrc, first.fraction_lost, first.cumulative_lost) == (0xCAFE, 64, 1)
    assert first.highest_sequence == 4
    assert (first.last_sr, first.delay_since_last_sr) == (0x12345678, 65536)
    feed(stats, [(5, 640, 0.08), (6, 800, 0.10)], ssrc=0xCAFE)
    second = stats.reception_report()
    assert second is not None
    assert (second.fraction_lost, second.cumulative_lost, second.highest_sequence) == (0, 1, 6)


def test_reception_report_extends_the_sequence_over_wraps() -> None:
    stats = StreamStats()
    feed(stats, [(s % 65536, 160 * s, 0.02 * s) for s in range(65534, 65540)])
    report = stats.reception_report()
    assert report is not None
    assert report.highest_sequence == 65536 + 3
