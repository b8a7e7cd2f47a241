"""Prometheus text exposition written by hand: format, escaping, registry rules."""

from __future__ import annotations

import math
import re

import pytest

from bridge.sidecar.metrics import MetricsRegistry

# One sample line of the text format 0.0.4: name, optional labels, value.
SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? '
    r"(-?[0-9.e+-]+|NaN|[+-]Inf)$"
)


def test_counter_and_gauge_render_help_type_and_samples() -> None:
    registry = MetricsRegistry()
    calls = registry.counter("bridge_calls_total", "Calls handled", ("direction",))
    calls.inc(direction="in")
    calls.inc(2, direction="out")
    active = registry.gauge("bridge_active_calls", "Calls in progress")
    active.inc()
    active.inc()
    active.dec()
    assert registry.render() == (
        "# HELP bridge_active_calls Calls in progress\n"
        "# TYPE bridge_active_calls gauge\n"
        "bridge_active_calls 1\n"
        "# HELP bridge_calls_total Calls handled\n"
        "# TYPE bridge_calls_total counter\n"
        'bridge_calls_total{direction="in"} 1\n'
        'bridge_calls_total{direction="out"} 2\n'
    )


def test_every_line_is_valid_exposition_text() -> None:
    registry = MetricsRegistry()
    registry.counter("a_total", "with \\ and\nnewline", ("v",)).inc(v='quote " back \\ nl \n')
    registry.gauge("b", "fractional").set(0.25)
    registry.gauge("c", "special").set(math.inf)
    registry.histogram("d_seconds", "latency", buckets=(0.01, 0.1)).observe(0.05)
    for line in registry.render().splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) \S+ ", line), line
        else:
            assert SAMPLE.match(line), line
    text = registry.render()
    assert "# HELP a_total with \\\\ and\\nnewline\n" in text
    assert 'a_total{v="quote \\" back \\\\ nl \\n"} 1\n' in text
    assert "b 0.25\n" in text
    assert "c +Inf\n" in text


def test_histogram_buckets_are_cumulative() -> None:
    registry = MetricsRegistry()
    latency = registry.histogram("transfer_seconds", "Transfer latency", buckets=(0.01, 0.1))
    for value in (0.005, 0.01, 0.05, 3.0):
        latency.observe(value)
    text = registry.render()
    assert 'transfer_seconds_bucket{le="0.01"} 2\n' in text
    assert 'transfer_seconds_bucket{le="0.1"} 3\n' in text
    assert 'transfer_seconds_bucket{le="+Inf"} 4\n' in text
    assert "transfer_seconds_sum 3.065\n" in text
    assert "transfer_seconds_count 4\n" in text
    assert latency.count() == 4


def test_gauge_read_from_a_function_at_scrape_time() -> None:
    registry = MetricsRegistry()
    legs = [1, 2, 3]
    registry.gauge("bridge_legs", "Legs").set_function(lambda: len(legs))
    assert "bridge_legs 3\n" in registry.render()
    legs.append(4)
    assert "bridge_legs 4\n" in registry.render()


def test_registry_is_get_or_create_and_refuses_conflicts() -> None:
    registry = MetricsRegistry()
    first = registry.counter("x_total", "X", ("a",))
    assert registry.counter("x_total", "X again", ("a",)) is first
    with pytest.raises(ValueError, match="already a counter"):
        registry.gauge("x_total", "X")
    with pytest.raises(ValueError, match="labels"):
        registry.counter("x_total", "X", ("b",))


@pytest.mark.parametrize("name", ["1abc", "has space", "dash-ed", ""])
def test_invalid_metric_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid metric name"):
        MetricsRegistry().counter(name, "bad")


def test_label_misuse_fails_at_the_call_site() -> None:
    registry = MetricsRegistry()
    counter = registry.counter("y_total", "Y", ("route",))
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc(rout="typo")
    with pytest.raises(ValueError, match="cannot go down"):
        counter.inc(-1, route="/")
    with pytest.raises(ValueError, match="reserved"):
        registry.histogram("z", "Z", ("le",))
    with pytest.raises(ValueError, match="invalid label"):
        registry.counter("w_total", "W", ("__internal",))


def test_counter_read_from_a_function_at_scrape_time() -> None:
    registry = MetricsRegistry()
    dropped = [3]
    counter = registry.counter("drops_total", "Drops")
    counter.set_function(lambda: dropped[0])
    assert (
        registry.render() == "# HELP drops_total Drops\n# TYPE drops_total counter\ndrops_total 3\n"
    )
    dropped[0] = 5
    assert "drops_total 5\n" in registry.render()
    assert counter.value() == 5
    with pytest.raises(ValueError, match="read from a function"):
        counter.inc()


def test_labelled_series_read_from_a_function_at_scrape_time() -> None:
    registry = MetricsRegistry()
    reasons = {"malformed": 2.0}
    counter = registry.counter("drops_total", "Drops", ("reason",))
    counter.set_series_function(lambda: {(reason,): n for reason, n in reasons.items()})
    per_worker = registry.gauge("legs", "Legs", ("worker",))
    per_worker.set_series_function(lambda: {("1",): 4.0, ("0",): 3.0})
    assert 'drops_total{reason="malformed"} 2\n' in registry.render()
    reasons["send_failed"] = 1.0
    text = registry.render()
    assert 'drops_total{reason="malformed"} 2\ndrops_total{reason="send_failed"} 1\n' in text
    assert 'legs{worker="0"} 3\nlegs{worker="1"} 4\n' in text
    assert counter.value(reason="send_failed") == 1
    with pytest.raises(ValueError, match="read from a function"):
        per_worker.set(1, worker="0")


def test_functions_must_fit_the_labels() -> None:
    registry = MetricsRegistry()
    with pytest.raises(ValueError, match="unlabelled"):
        registry.counter("a_total", "A", ("reason",)).set_function(lambda: 1)
    with pytest.raises(ValueError, match="no labels"):
        registry.gauge("b", "B").set_series_function(lambda: {})
    registry.gauge("c", "C", ("x", "y")).set_series_function(lambda: {("only x",): 1.0})
    with pytest.raises(ValueError, match="takes labels"):
        registry.render()
