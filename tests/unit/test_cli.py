"""The command line's own surface: per-command help with only the flags that apply, each with
a line of help, and usage errors as one line with one prefix and the command's own hint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from updater import cli, config
from updater.cli.parser import build, flags, parse


@pytest.mark.parametrize("command", sorted(cli.COMMAND_SETTINGS))
def test_help_lists_only_the_settings_the_command_uses(command: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    shown = set(re.findall(r"--([a-z][a-z-]+)", text))
    for key in config.FLAG_KEYS:
        flag = key.replace("_", "-")
        assert (flag in shown) == (key in cli.COMMAND_SETTINGS[command]), (command, flag)
    # Every option shown has its line of help (argparse prints an option alone only without).
    for line in text.splitlines():
        if line.lstrip().startswith("--") and line.startswith("  "):
            flag = line.split()[0]
            assert len(line.split()) > 2 or text.split(line, 1)[1].startswith("\n    "), flag


def test_every_setting_has_help_and_a_command() -> None:
    assert set(cli.SETTING_HELP) == set(config.FLAG_KEYS)
    assert all(text.strip() for text in cli.SETTING_HELP.values())
    used = {key for keys in cli.COMMAND_SETTINGS.values() for key in keys}
    assert used == set(config.FLAG_KEYS)


@pytest.mark.parametrize(("argv", "expected"), [
    (["history", "--bogus"], "updater history: unrecognized arguments: --bogus "
                             "(see updater history --help)"),
    (["check", "--cleanup"], "updater check: unrecognized arguments: --cleanup "
                             "(see updater check --help)"),
    (["history", "--limit", "-1"], "updater history: argument --limit: limit '-1' must be a "
                                   "whole number from 1 to 10000 (see updater history --help)"),
    (["nosuch"], "updater: argument COMMAND: invalid choice: 'nosuch'"),
    ([], "updater: the following arguments are required: COMMAND (see updater --help)"),
])
def test_usage_errors_are_one_line_with_one_prefix(argv: list[str], expected: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == cli.EXIT_USAGE
    error = capsys.readouterr().err
    assert error.startswith(expected), error
    assert len(error.strip().splitlines()) == 1
    assert "updater: updater" not in error


def test_history_of_an_unknown_name_is_an_error(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """As for `check` and `update`, a name nothing is known of exits 2; a known one prints."""
    from updater.core.report import ItemReport, Outcome
    from updater.store.history import History

    history = History(str(tmp_path))
    history.record(1.0, [ItemReport("web", "r/web:1", Outcome.UPDATED)])
    history.close()
    assert cli.main(["history", "--state-dir", str(tmp_path), "NOSUCH"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.startswith("updater: no history for NOSUCH")
    assert cli.main(["history", "--state-dir", str(tmp_path), "web"]) == cli.EXIT_OK
    assert "web" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["check", "pending"])
def test_check_and_pending_take_what_decides_waiting(command: str) -> None:
    """`check` and `pending` read first sightings and decisions from `state_dir` and apply
    min_age, update_window and approve as `update` does: they take the same flags, so
    `update --state-dir D --approve` and `pending --state-dir D --approve` agree."""
    argv = [command, "--state-dir", "/srv/u", "--approve", "--min-age", "1h",
            "--update-window", "0 2 * * 6, 3h"]
    given = flags(parse(build(cli._HANDLERS), argv))
    assert (given["state_dir"], given["approve"], given["min_age"]) == ("/srv/u", True, "1h")
    assert given["update_window"] == "0 2 * * 6, 3h"
