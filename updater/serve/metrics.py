"""Prometheus metrics, in a registry of our own (no process-global state), exposed by the API."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from updater.core.report import Outcome, PassReport

KINDS = ("container", "service")
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
        self.passes = Counter("updater_passes", "Passes run, failed ones included",
                              registry=self.registry)
        self.failures = Counter("updater_pass_failures", "Passes that could not run (the "
                                "engine unreachable) or were cut short", registry=self.registry)
        self.items = Counter("updater_items", "Outcomes of checked items",
                             ["kind", "outcome"], registry=self.registry)
        self.watched = Gauge("updater_watched", "Items watched in the last full pass",
                             ["kind"], registry=self.registry)
        self.duration = Histogram("updater_pass_duration_seconds", "Duration of passes",
                                  buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
                                  registry=self.registry)
        self.last_pass = Gauge("updater_last_pass_timestamp_seconds",
                               "When the last pass finished", registry=self.registry)
        self.fleet = Counter("updater_fleet_digests", "Digests a node's passes took from the "
                             "swarm leader's updater (leader), asked of the registries itself "
                             "(registry), and passes whose leader did not answer (fallback)",
                             ["source"], registry=self.registry)
        self.registry.register(_RegistryCollector(registry_stats))

    def observe(self, report: PassReport, full: bool = True) -> None:
        """A pass that ran; `full` when it looked at everything (not a pass for some names):
        only such a pass sets the watched gauges, every kind of them."""
        self.passes.inc()
        if report.error:
            self.failures.inc()
        names: dict[str, set[str]] = {kind: set() for kind in KINDS}
        for item in report.items:
            self.items.labels(item.kind, item.outcome.value).inc()
            if item.outcome not in (Outcome.RECOVERED, Outcome.REBALANCED):
                names.setdefault(item.kind, set()).add(item.name)
        if full and not report.error:
            for kind, found in names.items():
                self.watched.labels(kind).set(len(found))
        finished = report.finished or report.started
        self.duration.observe(max(0.0, finished - report.started))
        self.last_pass.set(finished)

    def failed(self) -> None:
        """A pass that could not run at all."""
        self.passes.inc()
        self.failures.inc()

    def fleet_counted(self, source: str, count: int) -> None:
        self.fleet.labels(source).inc(count)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
