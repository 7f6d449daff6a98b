"""The server's counters in Prometheus' text exposition format (`GET /metrics`), kept by hand: three metric kinds.

    unified_requests_total{endpoint, task, status}        counter   every request, by how it ended (HTTP status)
    unified_request_seconds{endpoint, task}              histogram from arrival to the last byte of the answer
    unified_batch_size{task, adapter}                    histogram rows per batched model call
    unified_batch_seconds{task, adapter}                 histogram one batched model call
    unified_queue_depth{task, adapter}                   gauge     requests waiting for a batch
    unified_tokens_total{task, kind}                     counter   prompt / completion tokens (`usage`)

    >>> metrics = Metrics()
    >>> metrics.requests.inc(endpoint="chat", task="vqa", status="200")
    >>> print(metrics.render())
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Sequence

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    escaped = (str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') for v in values)
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, escaped)) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str]):
        self.name, self.help, self.labels = name, help_text, tuple(labels)
        self._lock = threading.Lock()
        self._values: dict[tuple[str, ...], object] = {}

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {sorted(labels)}")
        return tuple(str(labels[n]) for n in self.labels)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return float(self._values.get(self._key(labels), 0.0))

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [*self.header(), *(f"{self.name}{_labels(self.labels, k)} {_number(v)}" for k, v in items)]


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[self._key(labels)] = float(value)


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, labels: Sequence[str], buckets: Sequence[float]):
        super().__init__(name, help_text, labels)
        self.buckets = tuple(sorted(buckets))

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            counts, total = self._values.get(key, ([0] * (len(self.buckets) + 1), 0.0))
            counts[bisect.bisect_left(self.buckets, value)] += 1  # bucket i holds le buckets[i]
            self._values[key] = (counts, total + value)

    def count(self, **labels: str) -> int:
        counts, _ = self._values.get(self._key(labels), ([0], 0.0))
        return sum(counts)

    def render(self) -> list[str]:
        lines = self.header()
        with self._lock:
            items = sorted((k, (list(c), s)) for k, (c, s) in self._values.items())
        for key, (counts, total) in items:
            running = 0
            for bound, count in zip((*self.buckets, math.inf), counts):
                running += count
                lines.append(f"{self.name}_bucket{_labels((*self.labels, 'le'), (*key, _number(bound)))} {running}")
            lines.append(f"{self.name}_sum{_labels(self.labels, key)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(self.labels, key)} {running}")
        return lines


class Metrics:
    """The server's metrics (see the module docstring); thread-safe, rendered by `render()`."""

    def __init__(self):
        self.requests = Counter("unified_requests_total", "Requests by endpoint, task and HTTP status.",
                                ("endpoint", "task", "status"))
        self.latency = Histogram("unified_request_seconds", "Seconds from a request's arrival to its answer.",
                                 ("endpoint", "task"), LATENCY_BUCKETS)
        self.batch_size = Histogram("unified_batch_size", "Rows per batched model call.", ("task", "adapter"),
                                    BATCH_BUCKETS)
        self.batch_seconds = Histogram("unified_batch_seconds", "Seconds one batched model call takes.",
                                       ("task", "adapter"), LATENCY_BUCKETS)
        self.queue_depth = Gauge("unified_queue_depth", "Requests waiting for a batch.", ("task", "adapter"))
        self.tokens = Counter("unified_tokens_total", "Prompt and completion tokens answered.", ("task", "kind"))

    def render(self) -> str:
        metrics = (self.requests, self.latency, self.batch_size, self.batch_seconds, self.queue_depth, self.tokens)
        return "\n".join(line for m in metrics for line in m.render()) + "\n"
