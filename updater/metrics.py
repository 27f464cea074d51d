"""Prometheus metrics, in a registry of our own (no process-global state), exposed by the API."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from updater.report import PassReport

RegistryStats = Callable[[], tuple[Mapping[tuple[str, str, int], int], Mapping[str, float]]]


class _RegistryCollector(Collector):
    """Registry requests by registry, method and status, and the rate-limit remaining."""

    def __init__(self, stats: RegistryStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        requests, remaining = self._stats()
        counter = CounterMetricFamily("updater_registry_requests", "Registry requests sent",
                                      labels=["registry", "method", "status"])
        for (registry, method, status), count in sorted(requests.items()):
            counter.add_metric([registry, method, str(status)], count)
        yield counter
        gauge = GaugeMetricFamily("updater_registry_ratelimit_remaining",
                                  "Pulls left in the registry's rate-limit window, as it reports",
                                  labels=["registry"])
        for registry, value in sorted(remaining.items()):
            gauge.add_metric([registry], value)
        yield gauge


class Metrics:
    def __init__(self, registry_stats: RegistryStats) -> None:
        self.registry = CollectorRegistry()
        self.passes = Counter("updater_passes", "Passes run", registry=self.registry)
        self.items = Counter("updater_items", "Outcomes of checked items",
                             ["kind", "outcome"], registry=self.registry)
        self.watched = Gauge("updater_watched", "Items watched in the last pass", ["kind"],
                             registry=self.registry)
        self.duration = Histogram("updater_pass_duration_seconds", "Duration of passes",
                                  buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
                                  registry=self.registry)
        self.last_pass = Gauge("updater_last_pass_timestamp_seconds",
                               "When the last pass finished", registry=self.registry)
        self.registry.register(_RegistryCollector(registry_stats))

    def observe(self, report: PassReport) -> None:
        self.passes.inc()
        kinds: dict[str, int] = {}
        for item in report.items:
            self.items.labels(item.kind, item.outcome.value).inc()
            kinds[item.kind] = kinds.get(item.kind, 0) + 1
        for kind, count in kinds.items():
            self.watched.labels(kind).set(count)
        finished = report.finished or report.started
        self.duration.observe(max(0.0, finished - report.started))
        self.last_pass.set(finished)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
