"""The effective settings shown: plain data, durations as text, every secret masked; as YAML
that reads back as a config file (`updater config`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from updater.config.accepted import MASK, mask_url
from updater.core.durations import format_duration
from updater.core.settings import Settings


def masked(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with every secret replaced by `***`, durations as text."""
    data = dataclasses.asdict(settings)
    for key in ("interval", "jitter", "health_timeout", "registry_timeout", "stop_timeout",
                "min_age"):
        if data[key] is not None:
            data[key] = format_duration(data[key])
    data["notify"] = [mask_url(url) for url in settings.notify]
    data["rebalance"]["interval"] = format_duration(settings.rebalance.interval)
    if settings.update_window is not None:
        data["update_window"]["duration"] = format_duration(settings.update_window.duration)
    if data["http_api"]["token"]:
        data["http_api"]["token"] = MASK
    for key in ("webhook_token", "fleet_token"):
        if data[key]:
            data[key] = MASK
    for entry in data["registries"].values():
        if entry["password"]:
            entry["password"] = MASK
    return data


def render(settings: Settings) -> str:
    """YAML text of the effective settings, secrets masked; it reads back as a config file."""
    return yaml.safe_dump(masked(settings), sort_keys=False, default_flow_style=False)
