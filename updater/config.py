"""Settings: read once from defaults, a YAML file, `UPDATER_*` environment and flags (in that
order, later wins), validated here into frozen dataclasses and passed explicitly from then on.

Every message names the bad value, where it came from, and what to write instead.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import logging
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from updater.core.durations import format_duration, parse_duration
from updater.core.messages import check_template
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
MASK = "***"


# --- parsers for one value; each raises ValueError with a message naming the value ----------


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not true or false")


def _text(value: Any) -> str:
    if isinstance(value, dict | list) or value is None:
        raise ValueError(f"{value!r} is not a single text value")
    return str(value)


def _optional_text(value: Any) -> str | None:
    return None if value in (None, "") else _text(value)


def _optional_duration(value: Any) -> float | None:
    return None if value in (None, "") else parse_duration(value)


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _text(value).lower()
        if text not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return text

    return parse


def _schedule(value: Any) -> str | None:
    text = _optional_text(value)
    if text is None:
        return None
    import cronsim  # only loaded when a schedule is configured

    try:
        cronsim.CronSim(text, _EPOCH)
    except cronsim.CronSimError as exc:
        raise ValueError(f"{text!r} is not a 5-field cron expression ({exc})") from None
    if len(text.split()) != 5:
        raise ValueError(
            f"{text!r} is not a 5-field cron expression (minute hour day month weekday)")
    return text


def _notify(value: Any) -> tuple[str, ...]:
    if value in (None, ""):
        return ()
    items = value.split() if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError("expected a list of Apprise URLs")
    for url in items:
        if "://" not in url:
            raise ValueError(f"{_mask_url(url)!r} is not an Apprise URL (scheme://...)")
    if items:
        import apprise  # heavy: only loaded when notifications are configured

        for url in items:
            if not apprise.Apprise().add(url):
                raise ValueError(f"{_mask_url(url)!r} is not a URL Apprise can send to; check "
                                 "it against Apprise's list of services")
    return tuple(items)


def _template(value: Any) -> str | None:
    text = _optional_text(value)
    if text is None:
        return None
    return check_template(text)


_EPOCH = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)

_SCALARS: dict[str, Callable[[Any], Any]] = {
    "docker_host": _text,
    "interval": parse_duration,
    "schedule": _schedule,
    "jitter": parse_duration,
    "update_on_start": _bool,
    "run_once": _bool,
    "label_enable": _bool,
    "scope": _optional_text,
    "monitor_only": _bool,
    "cleanup": _bool,
    "stop_timeout": _optional_duration,
    "health_timeout": parse_duration,
    "rollback": _bool,
    "rolling_restart": _bool,
    "notify": _notify,
    "notify_level": _choice(LOG_LEVELS),
    "notify_template": _template,
    "registry_timeout": parse_duration,
    "state_dir": _text,
    "log_level": _choice(LOG_LEVELS),
    "log_format": _choice(LOG_FORMATS),
}
FLAG_KEYS = {key: parser is _bool for key, parser in _SCALARS.items()}
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
    "http_api": ("listen", "token", "token_file"),
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
    return key in _SCALARS or key in _SECTION_KEYS or key == "notify_file"


def _suggestion(key: str) -> str:
    hint = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
    return f"; did you mean {hint[0]!r}?" if hint else f"; known settings: {', '.join(KNOWN_KEYS)}"


def _check_known(key: str, where: str) -> None:
    if not _known(key):
        raise ConfigError(f"unknown setting {key!r} in {where}{_suggestion(key)}")


def _resolve_file_key(key: str, value: Any, source: str) -> tuple[str, tuple[Any, str]]:
    """`notify_file: PATH` becomes `notify` with the file's URLs (Docker secrets convention)."""
    if key == "notify_file":
        return "notify", (_read_secret_file(value, source).split(), source)
    return key, (value, source)


def _read_secret_file(path: Any, source: str) -> str:
    try:
        return Path(str(path)).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {source} file {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source} file {str(path)!r} is not UTF-8 text; write the secret as "
                          "UTF-8 text") from None


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
    return _field(fields, name, _optional_text)  # type: ignore[no-any-return]


def _http_api(fields: Fields) -> HttpApiSettings:
    return HttpApiSettings(listen=_field(fields, "listen", _optional_text),
                           token=_secret(fields, "token"))


def _threshold(value: Any) -> float:
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number (a standard deviation of tasks per node, "
                         "e.g. 1.0)") from None
    if not math.isfinite(threshold) or threshold < 0:
        raise ValueError(f"{value!r} must be 0 or more")
    return threshold


def _rebalance(fields: Fields) -> RebalanceSettings:
    defaults = RebalanceSettings()
    return RebalanceSettings(
        enabled=_field(fields, "enabled", _bool, defaults.enabled),
        threshold=_field(fields, "threshold", _threshold, defaults.threshold),
        interval=_field(fields, "interval", parse_duration, defaults.interval),
    )


def _registries(hosts: dict[str, Fields]) -> dict[str, RegistrySettings]:
    return {host: RegistrySettings(
        insecure=_field(fields, "insecure", _optional_bool),
        username=_field(fields, "username", _optional_text),
        password=_secret(fields, "password"),
        ca_file=_field(fields, "ca_file", _optional_text),
    ) for host, fields in hosts.items()}


def _optional_bool(value: Any) -> bool | None:
    return None if value is None else _bool(value)


def _section(value: Any, source: str, known: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(
            f"bad value for {source}: expected a mapping with keys {', '.join(known)}")
    for key in value:
        if key not in known:
            raise ConfigError(f"unknown key {key!r} in {source}; known keys: {', '.join(known)}")
    return value


# --- display --------------------------------------------------------------------------------


def _mask_url(url: str) -> str:
    scheme, separator, _ = url.partition("://")
    return f"{scheme}://{MASK}" if separator else MASK


def masked(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with every secret replaced by `***`, durations as text."""
    data = dataclasses.asdict(settings)
    for key in ("interval", "jitter", "health_timeout", "registry_timeout", "stop_timeout"):
        if data[key] is not None:
            data[key] = format_duration(data[key])
    data["notify"] = [_mask_url(url) for url in settings.notify]
    data["rebalance"]["interval"] = format_duration(settings.rebalance.interval)
    if data["http_api"]["token"]:
        data["http_api"]["token"] = MASK
    for entry in data["registries"].values():
        if entry["password"]:
            entry["password"] = MASK
    return data


def render(settings: Settings) -> str:
    """YAML text of the effective settings, secrets masked; it reads back as a config file."""
    return yaml.safe_dump(masked(settings), sort_keys=False, default_flow_style=False)
