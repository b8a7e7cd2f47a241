"""The phone sees one stream: continuous sequence and timestamps across a switch of source."""

from __future__ import annotations

from bridge.media.continuity import StreamContinuity


def stream(
    out: StreamContinuity, source: str, seq: int, ts: int, t: float, count: int
) -> list[tuple[int, int, bool]]:
    sent = []
    for n in range(count):
        sent.append(
            out.rewrite(
                source=source,
                sequence=(seq + n) % 65536,
                timestamp=(ts + 160 * n) % 2**32,
                now=t + 0.02 * n,
            )
        )
    return sent


def test_first_packet_uses_our_own_starting_point() -> None:
    out = StreamContinuity(ssrc=7, sequence=500, timestamp=10_000)
    assert out.rewrite(source="agent", sequence=31000, timestamp=999, now=0.0) == (
        500,
        10_000,
        True,
    )
    assert out.rewrite(source="agent", sequence=31001, timestamp=1159, now=0.02) == (
        501,
        10_160,
        False,
    )


def test_switching_source_continues_sequence_and_timestamp() -> None:
    out = StreamContinuity(ssrc=7, sequence=100, timestamp=0)
    before = stream(out, "agent", 40000, 123456, 0.0, 10)
    # The officer's stream starts 20 ms after the agent's last packet, in its own spaces.
    after = stream(out, "officer", 7, 3_000_000_000, 0.2, 10)
    seqs = [p[0] for p in before + after]
    stamps = [p[1] for p in before + after]
    assert seqs == list(range(100, 120))
    assert stamps == [160 * n for n in range(20)]
    assert [p[2] for p in before + after] == [True] + [False] * 9 + [True] + [False] * 9
    assert out.switches == 2


def test_a_pause_before_the_new_source_advances_the_timestamp_by_the_pause() -> None:
    out = StreamContinuity(ssrc=7, sequence=0, timestamp=0)
    stream(out, "agent", 0, 0, 0.0, 5)  # last sent at t = 0.08, timestamp 640
    seq, ts, switched = out.rewrite(source="hold", sequence=9, timestamp=9, now=0.58)
    assert (seq, ts, switched) == (5, 640 + 4000, True)


def test_reordering_and_loss_within_a_source_are_kept() -> None:
    out = StreamContinuity(ssrc=7, sequence=0, timestamp=0)
    got = [
        out.rewrite(source="a", sequence=s, timestamp=160 * s, now=0.02 * s)[0]
        for s in (10, 11, 13, 12, 14)
    ]
    assert got == [0, 1, 3, 2, 4]
    # The late packet did not rewind the point a switch continues from.
    assert out.rewrite(source="b", sequence=0, timestamp=0, now=0.3)[0] == 5


def test_sequence_and_timestamp_wrap() -> None:
    out = StreamContinuity(ssrc=7, sequence=65534, timestamp=2**32 - 160)
    sent = stream(out, "a", 0, 0, 0.0, 4)
    assert [p[0] for p in sent] == [65534, 65535, 0, 1]
    assert [p[1] for p in sent] == [2**32 - 160, 0, 160, 320]
    after = out.rewrite(source="b", sequence=100, timestamp=100, now=0.08)
    assert after[:2] == (2, 480)


def test_same_source_restarting_its_sequence_is_a_switch() -> None:
    out = StreamContinuity(ssrc=7, sequence=0, timestamp=0)
    stream(out, "far", 1000, 0, 0.0, 3)
    seq, ts, switched = out.rewrite(source="far", sequence=50000, timestamp=7, now=0.06)
    assert (seq, ts, switched) == (3, 480, True)


def test_explicit_switch_back_to_an_earlier_source() -> None:
    out = StreamContinuity(ssrc=7, sequence=0, timestamp=0)
    stream(out, "agent", 0, 0, 0.0, 3)
    stream(out, "hold", 0, 0, 0.06, 3)
    out.switch()
    # The agent's stream went on meanwhile; its offsets are recomputed, not reused.
    seq, ts, switched = out.rewrite(source="agent", sequence=6, timestamp=960, now=0.12)
    assert (seq, ts, switched) == (6, 960, True)
