"""The media's figures on /metrics: every relay counter exported once, read at scrape time."""

from __future__ import annotations

from dataclasses import fields

from bridge.media.endpoint import RelayCounters
from bridge.media_figures import (
    DROP_REASONS,
    WORK_COUNTERS,
    MediaFigures,
    export_media_metrics,
)
from bridge.sidecar.metrics import MetricsRegistry


def test_every_relay_counter_is_exported_exactly_once() -> None:
    names = [f.name for f in fields(RelayCounters)]
    assert sorted([*DROP_REASONS, *WORK_COUNTERS]) == sorted(names)


def test_in_process_media_exports_legs_and_counters_read_at_scrape_time() -> None:
    registry = MetricsRegistry()
    now = [MediaFigures(legs=2, counters={"malformed": 1, "digits": 4})]
    export_media_metrics(registry, lambda: now[0], workers=False)
    text = registry.render()
    assert "bridge_media_legs 2\n" in text
    assert 'bridge_media_packets_dropped_total{reason="malformed"} 1\n' in text
    assert 'bridge_media_packets_dropped_total{reason="send_failed"} 0\n' in text
    assert "bridge_media_dtmf_digits_total 4\n" in text
    assert "bridge_media_ticks_skipped_total 0\n" in text
    assert "# TYPE bridge_media_packets_dropped_total counter\n" in text
    assert "worker" not in text, "no worker metrics without workers"
    now[0] = MediaFigures(legs=0, counters={"malformed": 3, "digits": 4})
    text = registry.render()
    assert "bridge_media_legs 0\n" in text
    assert 'bridge_media_packets_dropped_total{reason="malformed"} 3\n' in text


def test_worker_media_exports_its_workers() -> None:
    registry = MetricsRegistry()
    figures = MediaFigures(
        legs=5,
        counters={"foreign_source": 2},
        workers_alive=2,
        legs_per_worker=(3, 2),
        ports_ready=120,
        worker_restarts=1,
        moves=4,
    )
    export_media_metrics(registry, lambda: figures, workers=True)
    text = registry.render()
    for line in (
        "bridge_media_legs 5",
        'bridge_media_packets_dropped_total{reason="foreign_source"} 2',
        "bridge_media_workers_alive 2",
        'bridge_media_worker_legs{worker="0"} 3',
        'bridge_media_worker_legs{worker="1"} 2',
        "bridge_media_ports_ready 120",
        "bridge_media_worker_restarts_total 1",
        "bridge_media_leg_moves_total 4",
    ):
        assert f"{line}\n" in text, line
