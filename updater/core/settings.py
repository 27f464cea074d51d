"""The validated settings: frozen values, passed explicitly to every part. Pure: reading them
from files and the environment (YAML and all) is `config`'s work, so the parts that only read
settings do not load it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from updater.core.windows import UpdateWindow

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    """Per-registry settings, keyed by the registry's host[:port]."""

    insecure: bool | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None


@dataclass(frozen=True, slots=True)
class HttpApiSettings:
    """The HTTP API: off unless `listen` is set; then a token is required. The dashboard
    (`GET /`) is served with it unless turned off; a login lasts `session_lifetime` seconds."""

    listen: str | None = None
    token: str | None = field(default=None, repr=False)
    dashboard: bool = True
    session_lifetime: float = 12 * 3600.0


@dataclass(frozen=True, slots=True)
class RebalanceSettings:
    """Swarm: spread the tasks of replicated services every `interval` (leader only)."""

    enabled: bool = False
    threshold: float = 1.0
    interval: float = 3600.0


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole validated configuration."""

    docker_host: str = "unix:///var/run/docker.sock"
    interval: float = 3600.0
    schedule: str | None = None
    jitter: float = 0.0
    update_on_start: bool = False
    run_once: bool = False
    label_enable: bool = True
    scope: str | None = None
    monitor_only: bool = False
    cleanup: bool = False
    keep_images: int = 1  # images an item ran before, kept for `updater rollback`
    stop_timeout: float | None = None
    health_timeout: float = 60.0
    rollback: bool = True
    rolling_restart: bool = False
    tags: str = "digest"  # or "semver": move to newer version tags (labels may say otherwise)
    min_age: float = 0.0  # a new digest is applied once this updater has known it this long
    update_window: UpdateWindow | None = None  # when updates may be applied (None: any time)
    approve: bool = False  # each new digest waits for `updater approve`
    notify: tuple[str, ...] = field(default=(), repr=False)
    notify_level: str = "info"
    notify_template: str | None = None
    http_api: HttpApiSettings = HttpApiSettings()
    # `POST /v1/hooks/registry` takes push notifications carrying this token (off when unset).
    webhook_token: str | None = field(default=None, repr=False)
    # On a swarm, nodes' updaters take digests from the leader's (`GET /v1/digests`) with it.
    fleet_token: str | None = field(default=None, repr=False)
    rebalance: RebalanceSettings = RebalanceSettings()
    registries: Mapping[str, RegistrySettings] = field(default_factory=dict)
    registry_timeout: float = 10.0
    state_dir: str = "/var/lib/updater"
    log_level: str = "info"
    log_format: str = "text"

    def secrets(self) -> tuple[str, ...]:
        """Every secret value in these settings, for log redaction."""
        values = [*self.notify, self.http_api.token or "", self.webhook_token or "",
                  self.fleet_token or ""]
        values += [r.password or "" for r in self.registries.values()]
        return tuple(v for v in values if v)
