"""Property-based tests of everything that parses outside input: thousands of generated image
references, WWW-Authenticate headers, durations, cron expressions, labels and YAML configs.
Whatever comes in, the result is a value or the project's own clear error, never a crash."""

from __future__ import annotations

import datetime
import os
import string
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from updater import config
from updater.core import policy
from updater.core.durations import format_duration, parse_duration
from updater.core.reference import parse
from updater.core.settings import Settings
from updater.errors import ConfigError, InvalidReference
from updater.registry.auth import parse_challenges, preferred
from updater.serve.daemon import next_delay

# CI runs the same cases every time (a new find should come from a developer's run, not fail
# someone else's merge); elsewhere every run explores new ones.
FIXED = bool(os.environ.get("CI"))
MANY = settings(max_examples=2000, deadline=None, derandomize=FIXED,
                suppress_health_check=[HealthCheck.too_slow])
NOW = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)

# --- image references -----------------------------------------------------------------------

_alnum = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=6)
_component = st.builds(lambda parts, seps: "".join(
    part + (seps[i] if i < len(parts) - 1 else "") for i, part in enumerate(parts)),
    st.lists(_alnum, min_size=1, max_size=3), st.lists(st.sampled_from([".", "_", "__", "-", "--"]),
                                                       min_size=2, max_size=2))
_domain = st.builds(lambda labels, port: ".".join(labels) + (f":{port}" if port else ""),
                    st.lists(_alnum, min_size=2, max_size=3),
                    st.none() | st.integers(1, 65535)) | st.just("localhost:5000")
_tag = st.builds(lambda first, rest: first + rest,
                 st.sampled_from(string.ascii_letters + string.digits + "_"),
                 st.text(string.ascii_letters + string.digits + "_.-", max_size=20))
_digest = st.binary(min_size=32, max_size=32).map(lambda raw: "sha256:" + raw.hex())
REFERENCES = settings(max_examples=1000, deadline=None, derandomize=FIXED,
                      suppress_health_check=[HealthCheck.too_slow])


@st.composite
def references(draw: st.DrawFn) -> tuple[str, str | None, str, str | None, str | None]:
    domain = draw(st.none() | _domain)
    components = draw(st.lists(_component, min_size=1, max_size=3))
    if domain is None and len(components) > 1 and (
            "." in components[0] or components[0] == "localhost"):
        domain = components.pop(0)  # Docker reads such a first component as the registry
    tag = draw(st.none() | _tag)
    digest = draw(st.none() | _digest)
    path = "/".join(components)
    text = (f"{domain}/" if domain else "") + path
    text += f":{tag}" if tag else ""
    text += f"@{digest}" if digest else ""
    return text, domain, path, tag, digest


@REFERENCES
@given(references())
def test_valid_references_parse_to_their_parts(case: tuple[Any, ...]) -> None:
    text, domain, path, tag, digest = case
    ref = parse(text)
    assert ref.domain == (domain or "docker.io")
    expected_path = path if domain or "/" in path else f"library/{path}"
    assert ref.path == expected_path
    assert ref.digest == digest
    assert ref.tag == (tag if tag or digest else "latest")
    assert parse(str(ref)) == ref  # the normalised form is stable


@MANY
@given(st.text(max_size=300))
def test_any_text_is_a_reference_or_a_clear_error(text: str) -> None:
    try:
        ref = parse(text)
    except InvalidReference as exc:
        assert str(exc).startswith("invalid image reference") and "\n" not in str(exc).strip()
        return
    assert ref.path and ref.domain


@REFERENCES
@given(references(), st.sampled_from(string.punctuation + " \t\n\x00é"), st.integers(0, 200))
def test_one_bad_character_anywhere_is_rejected_or_harmless(
        case: tuple[Any, ...], bad: str, where: int) -> None:
    text = case[0]
    broken = text[:where % (len(text) + 1)] + bad + text[where % (len(text) + 1):]
    try:
        ref = parse(broken)
    except InvalidReference as exc:
        assert str(exc).startswith("invalid image reference")
        return
    assert parse(str(ref)) == ref  # what was accepted is a well-formed reference


# --- WWW-Authenticate -------------------------------------------------------------------------

_token = st.text(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~", min_size=1,
                 max_size=12)
_quoted = st.text(st.characters(exclude_categories=["Cs"], exclude_characters='"\\'),
                  max_size=40)


@MANY
@given(st.text(max_size=400))
def test_any_header_parses_without_crashing(header: str) -> None:
    challenges = parse_challenges(header)
    for challenge in challenges:
        assert challenge.scheme == challenge.scheme.lower()
    preferred(challenges)


@MANY
@given(st.lists(st.tuples(st.sampled_from(["Bearer", "Basic", "Digest", "Negotiate"]),
                          st.dictionaries(_token, _quoted, max_size=4)), min_size=1, max_size=3))
def test_well_formed_headers_round_trip(challenges: list[tuple[str, dict[str, str]]]) -> None:
    parts = []
    for scheme, params in challenges:
        rendered = ", ".join(f'{key}="{value}"' for key, value in params.items())
        parts.append(f"{scheme} {rendered}".rstrip())
    parsed = parse_challenges(", ".join(parts))
    assert [c.scheme for c in parsed] == [s.lower() for s, _ in challenges]
    for challenge, (_, params) in zip(parsed, challenges, strict=True):
        assert challenge.params == {k.lower(): v for k, v in params.items()}


# --- durations and schedules ------------------------------------------------------------------

@MANY
@given(st.integers(0, 10 ** 7))
def test_durations_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@MANY
@given(st.lists(st.tuples(st.integers(0, 999), st.sampled_from("hms")), min_size=1, max_size=3))
def test_unit_sums_parse(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in parts)
    expected = sum(n * {"h": 3600, "m": 60, "s": 1}[unit] for n, unit in parts)
    try:
        assert parse_duration(text) == expected
    except ValueError as exc:
        assert text in str(exc)  # e.g. a repeated unit: refused, and named


@MANY
@given(st.one_of(st.text(max_size=40), st.integers(-10 ** 9, 10 ** 9),
                 st.floats(allow_nan=True, allow_infinity=True)))
def test_any_duration_is_seconds_or_a_clear_error(value: str | int | float) -> None:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        assert "duration" in str(exc) or "at most 365d" in str(exc)
        assert repr(value) in str(exc)
        return
    assert 0 <= seconds <= 365 * 86400


_cron_field = st.one_of(st.just("*"), st.integers(0, 70).map(str),
                        st.tuples(st.integers(0, 60), st.integers(0, 60)).map(
                            lambda r: f"{r[0]}-{r[1]}"),
                        st.integers(1, 30).map(lambda n: f"*/{n}"),
                        st.text("0123456789*/-,LW#?abcMONJAN", min_size=1, max_size=6))


@MANY
@given(st.lists(_cron_field, min_size=1, max_size=7).map(" ".join))
def test_any_schedule_is_accepted_with_a_next_time_or_refused_clearly(expression: str) -> None:
    try:
        loaded = config.load(environ={"UPDATER_SCHEDULE": expression})
    except ConfigError as exc:
        assert "UPDATER_SCHEDULE" in str(exc) and "\n" not in str(exc)
        return
    # Valid can be rare (Debian cron ANDs a "*/7" day with a weekday): years away, never negative.
    assert 0 <= next_delay(loaded, NOW) <= 30 * 366 * 86400


# --- labels -----------------------------------------------------------------------------------

_label_names = st.sampled_from([
    "updater.enable", "updater.monitor-only", "updater.stop-signal", "updater.stop-timeout",
    "updater.health-timeout", "updater.rollback", "updater.scope", "updater.depends-on",
    "updater.hook.pre-update", "updater.hook.timeout", "com.centurylinklabs.watchtower.enable",
    "com.centurylinklabs.watchtower.stop-signal", "other.label"])


# Odd values a user may write: huge, negative, exponent and non-finite numbers, units.
_odd = st.one_of(st.text(max_size=20),
                 st.sampled_from(["1e12", "-1", "1e309", "nan", "inf", "99999999999d", "0",
                                  "1e-9", "365d", "366d", "8760h", "0x10", "1_000", "  5s "]),
                 st.integers(-10 ** 20, 10 ** 20).map(str),
                 st.floats(allow_nan=True, allow_infinity=True).map(str),
                 st.tuples(st.integers(0, 10 ** 9), st.sampled_from(["ms", "s", "m", "h", "d"]))
                 .map(lambda p: f"{p[0]}{p[1]}"))


@MANY
@given(st.dictionaries(_label_names, _odd, max_size=8), st.booleans())
def test_any_labels_give_options_or_a_clear_error(labels: dict[str, str],
                                                  label_enable: bool) -> None:
    settings_ = Settings(label_enable=label_enable)
    try:
        policy.is_watched(labels, settings_)
        found = policy.options(labels, settings_, None)
    except ConfigError as exc:
        assert "label" in str(exc) and "\n" not in str(exc)
        return
    for seconds in (found.stop_timeout, found.health_timeout, found.hook_timeout):
        assert 0 <= seconds <= 365 * 86400


@MANY
@given(st.sampled_from(sorted(config.FLAG_KEYS)), _odd)
def test_any_setting_value_gives_a_value_or_a_clear_error(key: str, value: str) -> None:
    """Every setting, from the environment, with odd values: a bounded value or one line that
    names the variable."""
    name = "UPDATER_" + key.upper()
    try:
        loaded = config.load(environ={name: value})
    except ConfigError as exc:
        assert name in str(exc) and "\n" not in str(exc)
        return
    for seconds in (loaded.interval, loaded.jitter, loaded.health_timeout,
                    loaded.registry_timeout, loaded.stop_timeout or 0.0):
        assert 0 <= seconds <= 365 * 86400


# --- YAML configuration -----------------------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 6, 10 ** 6),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=10), inner, max_size=3), max_leaves=8)
_keys = st.sampled_from([*config.KNOWN_KEYS, "notify_file", "intervall", "unknown"])


@MANY
@given(st.dictionaries(_keys, _values, max_size=6))
def test_any_yaml_config_loads_or_is_refused_clearly(document: dict[str, Any]) -> None:
    _load(yaml.safe_dump(document))


@MANY
@given(st.text(max_size=200))
def test_any_text_as_a_config_file_loads_or_is_refused_clearly(text: str) -> None:
    _load(text)


def _load(text: str) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yml", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        try:
            loaded = config.load(handle.name, environ={})
        except ConfigError as exc:
            message = str(exc)
            assert message and "\n" not in message and "Traceback" not in message
            return
        assert isinstance(loaded, Settings)
        config.render(loaded)  # what `updater config` prints works for anything accepted
