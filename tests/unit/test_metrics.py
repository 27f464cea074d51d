"""The Prometheus series describe what happened: gauges the last full pass, failures counted."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from updater.core.report import ItemReport, Outcome, PassReport
from updater.serve.metrics import Metrics


def _series(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _metrics() -> Metrics:
    return Metrics(lambda: ({}, {}))


def _items(*names: str, kind: str = "container") -> list[ItemReport]:
    return [ItemReport(name, f"r/{name}:1", Outcome.UP_TO_DATE, kind=kind) for name in names]


def test_a_named_pass_never_overwrites_the_watched_gauges() -> None:
    metrics = _metrics()
    metrics.observe(PassReport(items=_items("a", "b", "c") + _items("s", kind="service")))
    metrics.observe(PassReport(items=_items("a")), full=False)
    series = _series(metrics)
    assert series[("updater_watched", (("kind", "container"),))] == 3
    assert series[("updater_watched", (("kind", "service"),))] == 1
    assert series[("updater_passes_total", ())] == 2


def test_a_kind_with_nothing_left_goes_to_zero() -> None:
    metrics = _metrics()
    metrics.observe(PassReport(items=_items("s", kind="service")))
    metrics.observe(PassReport(items=_items("a")))
    assert _series(metrics)[("updater_watched", (("kind", "service"),))] == 0


def test_failed_passes_are_passes_and_are_counted() -> None:
    metrics = _metrics()
    metrics.failed()
    metrics.observe(PassReport(items=_items("a"), error="engine lost"))
    series = _series(metrics)
    assert series[("updater_passes_total", ())] == 2
    assert series[("updater_pass_failures_total", ())] == 2
    # A pass cut short does not describe what is watched.
    assert ("updater_watched", (("kind", "container"),)) not in series
