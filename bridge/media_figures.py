"""What operators see of the media on ``/metrics``, in both media modes.

Both media implementations (:class:`~bridge.media_adapter.RelayMedia` in-process,
:class:`~bridge.media_workers.WorkerMedia` with ``[media] workers``) answer ``media_figures()``
with a :class:`MediaFigures`; :func:`export_media_metrics` registers metrics that read it at
every scrape, so nothing is counted twice and nothing is updated on the media's hot path.

The relay's :class:`~bridge.media.endpoint.RelayCounters` are split as a Prometheus user
expects: the packets (and frames) the relay refused or could not deliver form one family,
``bridge_media_packets_dropped_total{reason=...}``, the reason being the counter's field name,
so ``sum(rate(...))`` is the drop rate and each reason can be graphed or alerted on; the work the
relay did (digits detected, RTCP received, relatches, mixing ticks) is not a drop, and each is a
counter of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bridge.sidecar.metrics import LabelValues, MetricsRegistry

PREFIX = "bridge_media_"

DROP_REASONS = (
    "malformed",
    "unknown_payload_type",
    "foreign_source",
    "no_remote",
    "untranscodable",
    "events_dropped",
    "rtcp_malformed",
    "late_after_release",
    "send_failed",
)
"""RelayCounters fields counting packets or frames dropped: ``reason`` of the drop family."""

WORK_COUNTERS: Mapping[str, tuple[str, str]] = {
    "relatched": ("relatched_total", "Times a leg followed its phone to a new address"),
    "rtcp_received": ("rtcp_packets_received_total", "RTCP packets received from phones"),
    "digits": ("dtmf_digits_total", "DTMF digits detected (RFC 4733)"),
    "ticks": ("ticks_total", "20 ms mixing and hold ticks run"),
    "ticks_skipped": (
        "ticks_skipped_total",
        "20 ms ticks skipped because the relay's event loop was held up",
    ),
}
"""The other RelayCounters fields: metric name (after the prefix) and help text."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaFigures:
    """The media's figures at one moment; the worker fields stay empty without workers."""

    legs: int
    """Anchored media legs in use (given to calls and not released)."""
    counters: Mapping[str, int]
    """The relay's RelayCounters by field name, summed over every worker that ever ran."""
    workers_alive: int = 0
    legs_per_worker: tuple[int, ...] = ()
    ports_ready: int = 0
    """Port pairs the workers hold bound in stock, ready for new legs."""
    worker_restarts: int = 0
    moves: int = 0
    """Legs moved between workers (joins of legs of two calls)."""


def _counter(read: Callable[[], MediaFigures], name: str) -> Callable[[], float]:
    return lambda: read().counters.get(name, 0)


def export_media_metrics(
    registry: MetricsRegistry, read: Callable[[], MediaFigures], *, workers: bool
) -> None:
    """Register the ``bridge_media_`` metrics, each read from ``read()`` at scrape time;
    ``workers``: the media runs in worker processes, which get metrics of their own."""

    def dropped() -> dict[LabelValues, float]:
        counters = read().counters
        return {(reason,): float(counters.get(reason, 0)) for reason in DROP_REASONS}

    registry.gauge(PREFIX + "legs", "Anchored media legs in use").set_function(lambda: read().legs)
    registry.counter(
        PREFIX + "packets_dropped_total",
        "RTP/RTCP packets (or mixed frames) the relay dropped, by reason",
        ("reason",),
    ).set_series_function(dropped)
    for name, (metric, help_text) in WORK_COUNTERS.items():
        registry.counter(PREFIX + metric, help_text).set_function(_counter(read, name))
    if not workers:
        return
    registry.gauge(PREFIX + "workers_alive", "Media worker processes running").set_function(
        lambda: read().workers_alive
    )
    registry.gauge(
        PREFIX + "worker_legs", "Anchored media legs per worker process", ("worker",)
    ).set_series_function(
        lambda: {(str(index),): float(n) for index, n in enumerate(read().legs_per_worker)}
    )
    registry.gauge(
        PREFIX + "ports_ready", "RTP port pairs bound in the workers' stock, ready for new legs"
    ).set_function(lambda: read().ports_ready)
    registry.counter(
        PREFIX + "worker_restarts_total", "Media worker processes started again after dying"
    ).set_function(lambda: read().worker_restarts)
    registry.counter(
        PREFIX + "leg_moves_total", "Legs moved between media workers to be joined"
    ).set_function(lambda: read().moves)
