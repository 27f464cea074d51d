"""Settings: sources, precedence, validation messages, masking."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from updater import config
from updater.core.settings import RegistrySettings
from updater.errors import ConfigError


def _file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "updater.yml"
    path.write_text(text)
    return str(path)


def test_defaults_match_the_spec() -> None:
    """With nothing given, the defaults are SPEC.md's."""
    settings = config.load(environ={})
    assert settings.docker_host == "unix:///var/run/docker.sock"
    assert (settings.interval, settings.health_timeout, settings.jitter) == (3600, 60, 0)
    assert settings.label_enable and settings.rollback and not settings.monitor_only
    assert settings.state_dir == "/var/lib/updater" and settings.stop_timeout is None


def test_precedence_flags_over_environment_over_file(tmp_path: Path) -> None:
    """Command line beats environment beats file beats defaults."""
    path = _file(tmp_path, "interval: 5m\nscope: file\ncleanup: true\n")
    settings = config.load(path, {"UPDATER_SCOPE": "env", "UPDATER_INTERVAL": "10m"},
                           {"interval": "15m"})
    assert (settings.interval, settings.scope, settings.cleanup) == (900, "env", True)


def test_config_file_from_environment(tmp_path: Path) -> None:
    """UPDATER_CONFIG names the file when --config is not given."""
    path = _file(tmp_path, "monitor_only: yes\n")
    assert config.load(environ={"UPDATER_CONFIG": path}).monitor_only is True


def test_docker_host_from_docker_variable() -> None:
    """DOCKER_HOST is read as Docker's own clients read it."""
    assert config.load(environ={"DOCKER_HOST": "tcp://127.0.0.1:2375"}).docker_host == \
        "tcp://127.0.0.1:2375"


@pytest.mark.parametrize(("text", "message"), [
    ("intervall: 5m", "unknown setting 'intervall'.*did you mean 'interval'"),
    ("interval: soon", "interval.*'soon' is not a duration"),
    ("label_enable: maybe", "label_enable.*'maybe' is not true or false"),
    ("log_level: loud", "log_level.*'loud' is not one of debug, info, warning, error"),
    ("schedule: '61 * * * *'", "schedule.*not a 5-field cron expression"),
    ("schedule: '* * * * * *'", "schedule.*not a 5-field cron expression"),
    ("notify: [not-a-url]", "notify.*not an Apprise URL"),
    ("notify: ['bogus://x']", "notify.*'bogus://\\*\\*\\*' is not a URL Apprise can send to"),
    ("notify_template: '{entries} {secret}'", "uses {secret}; available fields are"),
    ("notify_template: '{entries'", "not a format string"),
    ("http_api: {listen: ':8080'}", "http_api.token is empty"),
    ("http_api: {port: 1}", "unknown key 'port'"),
    ("registries: {r.io: {user: a}}", "unknown key 'user' in .*r.io"),
    ("registries: [a]", "expected a mapping of registry host"),
    ("registries: {ghcr.io/team: {username: u}}",
     "bad registry key 'ghcr.io/team'.*name the registry host only, as in 'ghcr.io'"),
    ("registries: {'https://': {username: u}}", "bad registry key 'https://'"),
    ("- a\n- b", "must be a mapping"),
    ("a: [", "not valid YAML at line"),
])
def test_bad_file_values(tmp_path: Path, text: str, message: str) -> None:
    """Each bad value is one ConfigError naming the setting, the value and the fix."""
    with pytest.raises(ConfigError, match=message) as caught:
        config.load(_file(tmp_path, text), {})
    assert "\n" not in str(caught.value)


def test_missing_config_file(tmp_path: Path) -> None:
    """A config file that is not there is named."""
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope.yml"):
        config.load(str(tmp_path / "nope.yml"), {})


def test_secrets_from_files(tmp_path: Path) -> None:
    """`*_file` settings read secrets from files (Docker secrets convention)."""
    (tmp_path / "pw").write_text("hunter22\n")
    (tmp_path / "urls").write_text("json://127.0.0.1:1/a\njsons://u:p@127.0.0.1:2/b\n")
    (tmp_path / "tok").write_text("api-token-1")
    path = _file(tmp_path, f"registries: {{r.io: {{username: u, password_file: {tmp_path}/pw}}}}\n"
                           f"http_api: {{listen: '127.0.0.1:1', token_file: {tmp_path}/tok}}\n")
    settings = config.load(path, {"UPDATER_NOTIFY_FILE": str(tmp_path / "urls")})
    assert settings.registries["r.io"].password == "hunter22"
    assert settings.http_api.token == "api-token-1"
    assert settings.notify == ("json://127.0.0.1:1/a", "jsons://u:p@127.0.0.1:2/b")


def test_registries_from_environment_yaml() -> None:
    """UPDATER_REGISTRIES takes YAML (or JSON) text; host keys are lower-cased."""
    settings = config.load(environ={
        "UPDATER_REGISTRIES": '{"Reg.IO:5000": {"insecure": true, "username": "u"}}'})
    assert settings.registries["reg.io:5000"].insecure is True


@pytest.mark.parametrize("key", ["https://reg.io:5000/", "http://reg.io:5000", "REG.io:5000",
                                 "https://reg.io:5000/v2/"])
def test_registries_keys_in_url_form_name_their_host(tmp_path: Path, key: str) -> None:
    """A `registries` key written as Docker accepts its config keys is filed under the host
    the registry client and the credentials look up (before, such keys were never used)."""
    settings = config.load(_file(tmp_path, f"registries: {{'{key}': {{username: u}}}}\n"), {})
    assert dict(settings.registries) == {"reg.io:5000": RegistrySettings(username="u")}


def test_docker_hub_spellings_are_one_registry(tmp_path: Path) -> None:
    """`index.docker.io` and `https://index.docker.io/v1/` name docker.io, the domain of
    Docker Hub references; given twice, the later field wins as for any repeated host."""
    settings = config.load(_file(tmp_path, "registries:\n"
                                           "  https://index.docker.io/v1/: {username: a}\n"
                                           "  index.docker.io: {password: p}\n"), {})
    assert dict(settings.registries) == {
        "docker.io": RegistrySettings(username="a", password="p")}


def test_render_masks_every_secret(tmp_path: Path) -> None:
    """`updater config` output has no password, token or notification URL in it."""
    path = _file(tmp_path, "notify: ['tgram://123:bottoken/456']\n"
                           "http_api: {listen: '127.0.0.1:1', token: tok-abcdef}\n"
                           "registries: {r.io: {username: u, password: pw-secret}}\n")
    settings = config.load(path, {})
    text = config.render(settings)
    for secret in ("bottoken", "tok-abcdef", "pw-secret", "123:"):
        assert secret not in text
    data = yaml.safe_load(text)
    assert data["notify"] == ["tgram://***"] and data["http_api"]["token"] == "***"
    assert data["registries"]["r.io"] == {"insecure": None, "username": "u",
                                          "password": "***", "ca_file": None}
    assert set(settings.secrets()) == {"tgram://123:bottoken/456", "tok-abcdef", "pw-secret"}


def test_rendered_config_reads_back(tmp_path: Path) -> None:
    """The printed config (without secrets) is itself a valid config file."""
    settings = config.load(_file(tmp_path, "interval: 90m\nstop_timeout: 45s\n"), {})
    again = config.load(_file(tmp_path, config.render(settings)), {})
    assert again == settings


def test_sections_merge_field_by_field(tmp_path: Path) -> None:
    """`listen` from the file and the token file from the environment make one API section;
    a later source's secret replaces the earlier one whether given as value or as file."""
    (tmp_path / "tok").write_text("api-token-2\n")
    path = _file(tmp_path, "http_api: {listen: '127.0.0.1:8080', token: file-token}\n"
                           "registries: {r.io: {username: u, password: pw}}\n"
                           "rebalance: {enabled: true}\n")
    settings = config.load(path, {"UPDATER_HTTP_API_TOKEN_FILE": str(tmp_path / "tok"),
                                  "UPDATER_REBALANCE_THRESHOLD": "2.5",
                                  "UPDATER_REGISTRIES": "{r.io: {insecure: true}}"})
    assert settings.http_api.listen == "127.0.0.1:8080"
    assert settings.http_api.token == "api-token-2"
    assert settings.rebalance.enabled and settings.rebalance.threshold == 2.5
    assert settings.registries["r.io"].username == "u"
    assert settings.registries["r.io"].password == "pw"
    assert settings.registries["r.io"].insecure is True


def test_listen_from_environment_token_from_file(tmp_path: Path) -> None:
    """The reverse: no false "token is empty" when the token is in the file."""
    path = _file(tmp_path, "http_api: {token: file-token}\n")
    settings = config.load(path, {"UPDATER_HTTP_API_LISTEN": "127.0.0.1:9"})
    assert (settings.http_api.listen, settings.http_api.token) == ("127.0.0.1:9", "file-token")


def test_token_and_token_file_in_one_source(tmp_path: Path) -> None:
    path = _file(tmp_path, "http_api: {listen: ':1', token: a, token_file: /x}\n")
    with pytest.raises(ConfigError, match="sets both token and token_file; keep one"):
        config.load(path, {})


@pytest.mark.parametrize(("text", "match"), [
    ("interval: 120000d", "interval.*'120000d' is longer than a year; write at most 365d"),
    ("health_timeout: 1e12", "health_timeout.*longer than a year"),
    ("rebalance: {interval: 9999999d}", "rebalance interval.*longer than a year"),
])
def test_durations_are_bounded(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config.load(_file(tmp_path, text + "\n"), {})


def test_non_utf8_files_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_bytes(b"interval: \xff\xfe1h\n")
    with pytest.raises(ConfigError, match=r"config file .*bad.yml is not UTF-8 text"):
        config.load(str(tmp_path / "bad.yml"), {})
    (tmp_path / "tok").write_bytes(b"\xff\xfe\xfd")
    with pytest.raises(ConfigError, match=r"token_file file .*tok' is not UTF-8 text"):
        config.load(None, {"UPDATER_HTTP_API_LISTEN": ":1",
                           "UPDATER_HTTP_API_TOKEN_FILE": str(tmp_path / "tok")})


def test_unknown_environment_variables_are_ignored_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    """`--link updater` and a service named updater put UPDATER_* variables into environments
    (UPDATER_PORT, UPDATER_NAME...); the README's stack example sets UPDATER_IMAGE. They are not
    settings, and must not stop the CLI; a typo is still pointed out."""
    settings = config.load(None, {"UPDATER_IMAGE": "r/u:1", "UPDATER_PORT": "tcp://10.0.0.2:80",
                                  "UPDATER_INTERVL": "5m"})
    assert settings.interval == 3600
    warned = caplog.text
    assert "ignoring UPDATER_IMAGE: not a setting" in warned
    assert "ignoring UPDATER_INTERVL: not a setting; did you mean 'interval'?" in warned
