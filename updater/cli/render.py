"""What the command line prints: aligned tables of checks, pass reports, plans, task places
and history."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from updater.core.report import short_digest as short

if TYPE_CHECKING:
    from updater.actions.locate import TaskPlace
    from updater.core.detect import CheckResult
    from updater.core.rebalance import ServicePlan
    from updater.core.report import PassReport


def check_table(results: list[CheckResult]) -> str:
    rows = [("NAME", "IMAGE", "LOCAL", "REMOTE", "STATE", "")]
    rows += [(r.name, r.image, short(r.local_digest), short(r.remote_digest), r.state.value,
              r.error or r.note or "") for r in results]
    text = columns(rows)
    if len(rows) == 1:
        text += "\n(no watched containers: label them updater.enable=true)"
    return text


def pending_table(results: list[CheckResult]) -> str:
    if not results:
        return "nothing waits"
    rows = [("NAME", "KIND", "TARGET", "DIGEST", "WAITING")]
    rows += [(r.name, r.kind, r.target or r.image, short(r.remote_digest), r.waiting or "")
             for r in results]
    return columns(rows)


def report_table(report: PassReport) -> str:
    rows = [("NAME", "IMAGE", "OUTCOME", "FROM", "TO", "")]
    rows += [(i.name, i.image, i.outcome.value, short(i.old_digest), short(i.new_digest),
              i.reason or "") for i in sorted(report.items, key=lambda i: i.name)]
    return columns(rows) + f"\npass: {report.summary()}"


def plans_table(found: list[ServicePlan]) -> str:
    rows = [("SERVICE", "NODE", "NOW", "AFTER")]
    for plan in found:
        rows += [(plan.service, node, str(count), str(plan.after.get(node, 0)))
                 for node, count in sorted(plan.before.items())]
    return columns(rows)


def places_table(places: list[TaskPlace]) -> str:
    rows = [("NODE", "AVAILABILITY", "ADDRESS", "CONTAINER", "SHELL")]
    rows += [(p.node, p.availability, p.address, p.container[:12], p.command) for p in places]
    return columns(rows)


def history_table(entries: list[dict[str, Any]]) -> str:
    rows = [("TIME", "NAME", "OUTCOME", "FROM", "TO", "")]
    for entry in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["time"]))
        rows.append((when, entry["name"], entry["outcome"],
                     entry["old_version"] or short(entry["old_digest"]),
                     entry["new_version"] or short(entry["new_digest"]), entry["reason"] or ""))
    return columns(rows)


def columns(rows: Sequence[tuple[str, ...]]) -> str:
    """Aligned columns; the last one (a free-text reason) is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
             + "  " + row[-1] for row in rows]
    return "\n".join(line.rstrip() for line in lines)
