"""Settings: read once from defaults, a YAML file, `UPDATER_*` environment and flags (in that
order, later wins), validated here into frozen dataclasses and passed explicitly from then on.

Every message names the bad value, where it came from, and what to write instead.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from updater.config import accepted
from updater.config.display import masked, render
from updater.core.durations import parse_duration
from updater.core.reference import registry_host, registry_key_path
from updater.core.settings import (
    LOG_FORMATS,
    LOG_LEVELS,
    HttpApiSettings,
    RebalanceSettings,
    RegistrySettings,
    Settings,
)
from updater.errors import ConfigError

log = logging.getLogger(__name__)
__all__ = ["ENV_PREFIX", "FLAG_KEYS", "KNOWN_KEYS", "load", "masked", "render"]


_SCALARS: dict[str, Callable[[Any], Any]] = {
    "docker_host": accepted.single_text,
    "interval": parse_duration,
    "schedule": accepted.schedule,
    "jitter": parse_duration,
    "update_on_start": accepted.boolean,
    "run_once": accepted.boolean,
    "label_enable": accepted.boolean,
    "scope": accepted.optional_text,
    "monitor_only": accepted.boolean,
    "cleanup": accepted.boolean,
    "keep_images": accepted.count(0, 100),
    "stop_timeout": accepted.optional_duration,
    "health_timeout": parse_duration,
    "rollback": accepted.boolean,
    "rolling_restart": accepted.boolean,
    "tags": accepted.choice(("digest", "semver")),
    "min_age": parse_duration,
    "update_window": accepted.update_window,
    "approve": accepted.boolean,
    "notify": accepted.apprise_urls,
    "notify_level": accepted.choice(LOG_LEVELS),
    "notify_template": accepted.template,
    "webhook_token": accepted.optional_text,
    "fleet_token": accepted.optional_text,
    "registry_timeout": parse_duration,
    "state_dir": accepted.single_text,
    "log_level": accepted.choice(LOG_LEVELS),
    "log_format": accepted.choice(LOG_FORMATS),
}
# Every scalar setting is also a flag of the commands that use it, but a secret that `ps`
# would show to every user of the host.
FLAG_KEYS = {key: parser is accepted.boolean for key, parser in _SCALARS.items()
             if key not in ("webhook_token", "fleet_token")}
KNOWN_KEYS = tuple(sorted([*_SCALARS, "http_api", "registries", "rebalance"]))
_SECTION_KEYS = ("http_api", "rebalance", "registries")
ENV_PREFIX = "UPDATER_"
ENV_ONLY = frozenset({"UPDATER_CONFIG"})


# --- sources --------------------------------------------------------------------------------


def load(
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge file, environment and flags over the defaults, and validate once."""
    environ = os.environ if environ is None else environ
    config_file = config_file or environ.get("UPDATER_CONFIG") or None
    layers = [_from_file(config_file) if config_file else {}, _from_environment(environ),
              {key: (value, f"--{key.replace('_', '-')}") for key, value in (flags or {}).items()
               if value is not None}]
    raw: dict[str, tuple[Any, str]] = {}
    for layer in layers:
        for key, (value, source) in layer.items():
            if key in _SECTION_KEYS:
                merged = raw[key][0] if key in raw else {}
                raw[key] = (_merge_section(key, merged, value, source), source)
            else:
                raw[key] = (value, source)
    return _build(raw)


# A section's fields, each with the source it came from: later sources win field by field.
Fields = dict[str, tuple[Any, str]]
_SECTIONS: dict[str, tuple[str, ...]] = {
    "http_api": ("listen", "token", "token_file", "dashboard", "session_lifetime"),
    "rebalance": ("enabled", "threshold", "interval"),
}
_REGISTRY_KEYS = ("insecure", "username", "password", "password_file", "ca_file")
_EITHER = {"token": "token_file", "token_file": "token", "password": "password_file",
           "password_file": "password"}


def _merge_section(key: str, merged: Any, value: Any, source: str) -> Any:
    """`merged` (from earlier sources) with this source's fields of section `key` over it; a
    secret given as a value replaces the same secret given as a file, and the other way round."""
    if key == "registries":
        if value in (None, ""):
            return merged
        if not isinstance(value, dict):
            raise ConfigError(
                f"bad value for {source}: expected a mapping of registry host to settings")
        hosts = dict(merged)
        for host, entry in value.items():
            name = _registry_key(str(host), source)
            where = f"{source} {str(host)!r}"
            hosts[name] = _merge_fields(hosts.get(name, {}),
                                        _section(entry or {}, where, _REGISTRY_KEYS), where)
        return hosts
    return _merge_fields(merged, _section(value, source, _SECTIONS[key]), source)


def _registry_key(key: str, source: str) -> str:
    """A `registries` key as the registry host it names (`https://host:5000/` is `host:5000`,
    `index.docker.io` is `docker.io`), as Docker reads its own config keys; a key with a path
    is refused: what is set here applies to the whole registry."""
    host = registry_host(key)
    if not host or registry_key_path(key) not in ("", "/", "/v1", "/v1/", "/v2", "/v2/"):
        raise ConfigError(f"bad registry key {key!r} in {source}: name the registry host only, "
                          f"as in {host or 'registry.example.com:5000'!r}; settings apply to "
                          "the whole registry")
    return host


def _merge_fields(merged: Fields, section: dict[str, Any], source: str) -> Fields:
    fields = dict(merged)
    for name, value in section.items():
        if _EITHER.get(name) in section:
            raise ConfigError(f"{source} sets both {name} and {_EITHER[name]}; keep one")
        fields.pop(_EITHER.get(name, ""), None)
        fields[name] = (value, source)
    return fields


def _from_file(path: str) -> dict[str, tuple[Any, str]]:
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text; save it as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"config file {path} must be a mapping of setting: value")
    raw: dict[str, tuple[Any, str]] = {}
    for key, value in document.items():
        _check_known(str(key), f"config file {path}")
        raw.update([_resolve_file_key(str(key), value, f"{path}: {key}")])
    return raw


def _from_environment(environ: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    raw: dict[str, tuple[Any, str]] = {}
    if "DOCKER_HOST" in environ:
        raw["docker_host"] = (environ["DOCKER_HOST"], "DOCKER_HOST")
    api: dict[str, Any] = {}
    balance: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_ONLY:
            continue
        key = name[len(ENV_PREFIX):].lower()
        if key.startswith("http_api_"):
            api[key[len("http_api_"):]] = value
            continue
        if key.startswith("rebalance_"):
            balance[key[len("rebalance_"):]] = value
            continue
        if key == "registries":
            raw[key] = (_yaml_value(value, name), name)
            continue
        if not _known(key):
            # Not an error: links (`--link updater`) and orchestrators (a service named
            # updater) put UPDATER_* variables into environments on their own.
            log.warning("ignoring %s: not a setting%s", name, _suggestion(key))
            continue
        raw.update([_resolve_file_key(key, value, name)])
    if api:
        raw["http_api"] = (api, "UPDATER_HTTP_API_*")
    if balance:
        raw["rebalance"] = (balance, "UPDATER_REBALANCE_*")
    return raw


def _yaml_value(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"{source} is not valid YAML/JSON") from None


def _known(key: str) -> bool:
    return key in _SCALARS or key in _SECTION_KEYS or key in (
        "notify_file", "webhook_token_file", "fleet_token_file")


def _suggestion(key: str) -> str:
    hint = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
    return f"; did you mean {hint[0]!r}?" if hint else f"; known settings: {', '.join(KNOWN_KEYS)}"


def _check_known(key: str, where: str) -> None:
    if not _known(key):
        raise ConfigError(f"unknown setting {key!r} in {where}{_suggestion(key)}")


def _resolve_file_key(key: str, value: Any, source: str) -> tuple[str, tuple[Any, str]]:
    """`notify_file: PATH` becomes `notify` with the file's URLs, `webhook_token_file` the
    token (Docker secrets convention)."""
    if key == "notify_file":
        return "notify", (_read_secret_file(value, source).split(), source)
    if key in ("webhook_token_file", "fleet_token_file"):
        return key.removesuffix("_file"), (_read_secret_file(value, source), source)
    return key, (value, source)


def _read_secret_file(path: Any, source: str) -> str:
    try:
        return Path(str(path)).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {source} file {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source} file {str(path)!r} is not UTF-8 text; write the secret as "
                          "UTF-8 text") from None
    except ValueError:  # a NUL in the path
        raise ConfigError(f"{source} {str(path)[:200]!r} is not a file path") from None


# --- validation -----------------------------------------------------------------------------


def _build(raw: Mapping[str, tuple[Any, str]]) -> Settings:
    values: dict[str, Any] = {}
    for key, (value, source) in raw.items():
        if key == "http_api":
            values[key] = _http_api(value)
        elif key == "rebalance":
            values[key] = _rebalance(value)
        elif key == "registries":
            values[key] = _registries(value)
        else:
            values[key] = _parse(_SCALARS[key], value, source)
    settings = Settings(**values)
    if settings.webhook_token and not settings.http_api.listen:
        raise ConfigError(f"{raw['webhook_token'][1]} is set but http_api.listen is not; push "
                          "notifications come to the HTTP API: set http_api.listen (and its "
                          "token)")
    if settings.fleet_token and not settings.http_api.listen:
        raise ConfigError(f"{raw['fleet_token'][1]} is set but http_api.listen is not; nodes "
                          "share digests over the HTTP API, on the same port on every node: "
                          "set http_api.listen (and its token)")
    if settings.http_api.listen and not settings.http_api.token:
        raise ConfigError("http_api.listen is set but http_api.token is empty; set a token "
                          "(or http_api.token_file) so the API is not open to anyone")
    return settings


def _parse(parser: Callable[[Any], Any], value: Any, source: str) -> Any:
    try:
        return parser(value)
    except ValueError as exc:
        raise ConfigError(f"bad value for {source}: {exc}") from None


def _field(fields: Fields, name: str, parser: Callable[[Any], Any], default: Any = None) -> Any:
    if name not in fields:
        return default
    value, source = fields[name]
    return _parse(parser, value, f"{source} {name}")


def _secret(fields: Fields, name: str) -> str | None:
    """A secret given as `name` or as `name_file` (the file's text)."""
    if f"{name}_file" in fields:
        path, source = fields[f"{name}_file"]
        if path not in (None, ""):
            return _read_secret_file(path, f"{source} {name}_file")
    return _field(fields, name, accepted.optional_text)  # type: ignore[no-any-return]


def _http_api(fields: Fields) -> HttpApiSettings:
    defaults = HttpApiSettings()
    return HttpApiSettings(
        listen=_field(fields, "listen", accepted.optional_text), token=_secret(fields, "token"),
        dashboard=_field(fields, "dashboard", accepted.boolean, defaults.dashboard),
        session_lifetime=_field(fields, "session_lifetime", accepted.session_lifetime,
                                defaults.session_lifetime))


def _rebalance(fields: Fields) -> RebalanceSettings:
    defaults = RebalanceSettings()
    return RebalanceSettings(
        enabled=_field(fields, "enabled", accepted.boolean, defaults.enabled),
        threshold=_field(fields, "threshold", accepted.threshold, defaults.threshold),
        interval=_field(fields, "interval", parse_duration, defaults.interval),
    )


def _registries(hosts: dict[str, Fields]) -> dict[str, RegistrySettings]:
    return {host: RegistrySettings(
        insecure=_field(fields, "insecure", accepted.optional_bool),
        username=_field(fields, "username", accepted.optional_text),
        password=_secret(fields, "password"),
        ca_file=_field(fields, "ca_file", accepted.optional_text),
    ) for host, fields in hosts.items()}


def _section(value: Any, source: str, known: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(
            f"bad value for {source}: expected a mapping with keys {', '.join(known)}")
    for key in value:
        if key not in known:
            raise ConfigError(f"unknown key {key!r} in {source}; known keys: {', '.join(known)}")
    return value


