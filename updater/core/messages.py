"""What notifications say: one line per item, a title and a body through the user's template,
and each outcome's level. Pure; `notify` delivers them."""

from __future__ import annotations

import logging
import string

from updater.core.report import ItemReport, Outcome, short_digest
from updater.core.settings import LOG_LEVELS

log = logging.getLogger(__name__)
TEMPLATE_FIELDS = ("host", "summary", "entries", "count")
DEFAULT_TEMPLATE = "{entries}"
_LEVEL_OF = {Outcome.UPDATED: "info", Outcome.AVAILABLE: "info", Outcome.WAITING: "info",
             Outcome.RECOVERED: "warning",
             Outcome.SKIPPED: "warning", Outcome.ERROR: "warning",
             Outcome.ROLLED_BACK: "error", Outcome.FAILED: "error",
             Outcome.REBALANCED: "info", Outcome.PAUSED: "warning", Outcome.UNDONE: "warning"}
# Outcomes that moved (or tried to move) a container to another image.
_CHANGES = frozenset({Outcome.UPDATED, Outcome.ROLLED_BACK, Outcome.FAILED, Outcome.UNDONE})


def check_template(template: str) -> str:
    """The template itself; ValueError naming an unknown or malformed field."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"notify_template is not a format string ({exc})") from None
    for name in fields:
        if name not in TEMPLATE_FIELDS:
            raise ValueError(f"notify_template uses {{{name}}}; available fields are "
                             + ", ".join(f"{{{f}}}" for f in TEMPLATE_FIELDS))
    try:  # a format spec that does not fit a field's type, e.g. {summary:d}
        template.format(host="host", summary="1 updated", entries="- entry", count=1)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise ValueError(f"notify_template cannot be filled in ({exc}); {{host}}, {{summary}} "
                         "and {entries} are text, {count} a number") from None
    return template


def render_entry(item: ItemReport) -> str:
    """One line per item: name, image, what happened, versions, digests, link, reason."""
    line = f"{item.name} ({item.image}): {item.outcome.value}"
    versions = item.versions
    if versions.new or (versions.old and item.outcome in _CHANGES):
        line += f" {versions.old or '?'} → {versions.new or '?'}"
    elif versions.old:
        line += f" (runs {versions.old})"
    if item.old_digest or item.new_digest:
        old, new = short_digest(item.old_digest, "?"), short_digest(item.new_digest, "?")
        line += f" [{old} → {new}]"
    if versions.source:
        revision = versions.revision
        line += f" {versions.source}" + (f" @ {revision[:12]}" if revision else "")
    if item.reason:
        line += f" — {item.reason}"
    return line


def render(host: str, items: list[ItemReport], template: str | None) -> tuple[str, str]:
    """Title and body of one message about `items`."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.outcome.value] = counts.get(item.outcome.value, 0) + 1
    summary = ", ".join(f"{n} {outcome}" for outcome, n in counts.items())
    title = f"updater on {host}: {summary}"
    entries = "\n".join(f"- {render_entry(item)}" for item in items)
    try:
        body = (template or DEFAULT_TEMPLATE).format(host=host, summary=summary,
                                                     entries=entries, count=len(items))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        # Checked when the settings were read; should a value still not fit, the message goes
        # out with the default body rather than not at all.
        log.error("notify_template could not be filled in (%s); sent the default body", exc)
        body = entries
    return title, body


def level_of(item: ItemReport) -> str | None:
    return _LEVEL_OF.get(item.outcome)


def passes_level(item: ItemReport, minimum: str) -> bool:
    level = level_of(item)
    return level is not None and LOG_LEVELS.index(level) >= LOG_LEVELS.index(minimum)
