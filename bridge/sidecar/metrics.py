"""Counters, gauges and histograms rendered in the Prometheus text format (version 0.0.4).

Written by hand to keep the dependency list short. The engine creates its metrics once from the
shared :class:`MetricsRegistry` (``registry.counter(...)`` is get-or-create, so two modules may
ask for the same name) and updates them from the event loop; ``render`` is what ``GET /metrics``
serves. Label values are escaped per the exposition format; label names are fixed at creation
so a typo fails at the call site instead of producing a second time series.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import ClassVar, TypeVar

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

LabelValues = tuple[str, ...]
M = TypeVar("M", bound="_Metric")

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


class _Metric:
    kind: ClassVar[str] = "untyped"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str]) -> None:
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in label_names:
            if not _LABEL.match(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r}")
        if len(set(label_names)) != len(label_names):
            raise ValueError(f"duplicate label names in {name}")
        self.name = name
        self.help_text = help_text
        self.label_names = tuple(label_names)

    def _key(self, labels: Mapping[str, str]) -> LabelValues:
        names = self.label_names
        if len(labels) == len(names) and all(name in labels for name in names):
            return tuple(str(labels[name]) for name in names)  # every call event comes here
        if set(labels) != set(names):
            raise ValueError(
                f"{self.name} takes labels {sorted(self.label_names)}, got {sorted(labels)}"
            )
        return tuple(str(labels[name]) for name in self.label_names)

    def samples(self) -> Iterator[str]:
        raise NotImplementedError

    def render(self) -> str:
        head = (
            f"# HELP {self.name} {_escape_help(self.help_text)}\n# TYPE {self.name} {self.kind}\n"
        )
        return head + "".join(f"{line}\n" for line in self.samples())


SeriesFunction = Callable[[], Mapping[LabelValues, float]]
"""Every series of a labelled metric, read at scrape time: label values (in the order of the
metric's label names) to value."""


class _Sampled(_Metric):
    """A counter or a gauge: one value per label set, updated in place or read at scrape time
    (``set_function`` for an unlabelled metric, ``set_series_function`` for a labelled one)."""

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, label_names)
        self._values: dict[LabelValues, float] = {}
        self._function: Callable[[], float] | None = None
        self._series_function: SeriesFunction | None = None
        if not self.label_names:
            self._values[()] = 0.0

    def set_function(self, function: Callable[[], float]) -> None:
        if self.label_names:
            raise ValueError(f"only an unlabelled {self.kind} can be read from a function")
        self._function = function

    def set_series_function(self, function: SeriesFunction) -> None:
        if not self.label_names:
            raise ValueError(f"{self.name} has no labels: use set_function")
        self._series_function = function

    def _updated_in_place(self) -> dict[LabelValues, float]:
        if self._function is not None or self._series_function is not None:
            raise ValueError(f"{self.name} is read from a function at scrape time")
        return self._values

    def _current(self) -> Mapping[LabelValues, float]:
        if self._function is not None:
            return {(): float(self._function())}
        if self._series_function is not None:
            series = self._series_function()
            for key in series:
                if len(key) != len(self.label_names):
                    raise ValueError(f"{self.name} takes labels {list(self.label_names)}: {key}")
            return series
        return self._values

    def value(self, **labels: str) -> float:
        return float(self._current().get(self._key(labels), 0.0))

    def samples(self) -> Iterator[str]:
        current = self._current()
        for key in sorted(current):
            labels = _format_labels(self.label_names, key)
            yield f"{self.name}{labels} {_format_value(float(current[key]))}"


class Counter(_Sampled):
    """A value that only goes up (requests served, messages dropped).

    One read from a function (counts kept elsewhere, such as in the media workers) must be
    kept monotonic by whoever keeps it: a scrape seeing it go down reads a counter reset."""

    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter cannot go down")
        values = self._updated_in_place()
        key = self._key(labels)
        values[key] = values.get(key, 0.0) + amount


class Gauge(_Sampled):
    """A value that goes up and down; or, with ``set_function``, one read at scrape time."""

    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        self._updated_in_place()[self._key(labels)] = float(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        values = self._updated_in_place()
        key = self._key(labels)
        values[key] = values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)


class Histogram(_Metric):
    """Cumulative buckets, sum and count (latencies in seconds)."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        label_names: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        if "le" in label_names:
            raise ValueError("'le' is reserved for histogram buckets")
        super().__init__(name, help_text, label_names)
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError("histogram buckets must be distinct and not empty")
        self.bounds = tuple(bounds)
        self._series: dict[LabelValues, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        counts, total = self._series.setdefault(key, ([0] * (len(self.bounds) + 1), [0.0]))
        counts[bisect_left(self.bounds, value)] += 1
        total[0] += value

    def count(self, **labels: str) -> int:
        series = self._series.get(self._key(labels))
        return sum(series[0]) if series else 0

    def samples(self) -> Iterator[str]:
        for key in sorted(self._series):
            counts, total = self._series[key]
            running = 0
            for bound, n in zip((*self.bounds, math.inf), counts, strict=True):
                running += n
                names = (*self.label_names, "le")
                labels = _format_labels(names, (*key, _format_value(bound)))
                yield f"{self.name}_bucket{labels} {running}"
            labels = _format_labels(self.label_names, key)
            yield f"{self.name}_sum{labels} {_format_value(total[0])}"
            yield f"{self.name}_count{labels} {running}"


class MetricsRegistry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def _get_or_create(
        self, cls: type[M], name: str, labels: Sequence[str], create: Callable[[], M]
    ) -> M:
        existing = self._metrics.get(name)
        if existing is None:
            created = create()
            self._metrics[name] = created
            return created
        if not isinstance(existing, cls):
            raise ValueError(f"metric {name} is already a {existing.kind}")
        if tuple(labels) != existing.label_names:
            raise ValueError(f"metric {name} has labels {list(existing.label_names)}")
        return existing

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        return self._get_or_create(Counter, name, labels, lambda: Counter(name, help_text, labels))

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Gauge:
        return self._get_or_create(Gauge, name, labels, lambda: Gauge(name, help_text, labels))

    def histogram(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        return self._get_or_create(
            Histogram, name, labels, lambda: Histogram(name, help_text, labels, buckets)
        )

    def render(self) -> str:
        return "".join(self._metrics[name].render() for name in sorted(self._metrics))
