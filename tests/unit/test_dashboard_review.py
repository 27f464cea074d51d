"""Review of the dashboard: defects found by trying to break it (each test failed before its
fix, or still fails where noted)."""

from __future__ import annotations

import inspect
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.unit.test_api_trigger import Control
from tests.unit.test_dashboard import TOKEN, Clock, Desk, csrf_of, get, login
from updater import config
from updater.core.report import ItemReport, Outcome, PassReport
from updater.errors import ConfigError, UpdaterError
from updater.serve.api import ApiServer
from updater.serve.board import Board
from updater.serve.dashboard import Dashboard
from updater.serve.sessions import COOKIE, Sessions

Setup = tuple[httpx.Client, Desk, Clock]


@pytest.fixture
def setup() -> Iterator[tuple[httpx.Client, Desk, Clock]]:
    desk, clock = Desk(), Clock()
    server = ApiServer("127.0.0.1:0", TOKEN, Control())
    server.dashboard = Dashboard(desk, server.token_matches, 3600,
                                 Sessions(3600, clock=clock))
    server.start()
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=5,
                      follow_redirects=False) as client:
        yield client, desk, clock
    server.stop()


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    return data


def test_a_non_ascii_digit_content_length_is_a_400_not_a_500(setup: Setup) -> None:
    """`'²'.isdigit()` is True but `int('²')` raises: the form reader crashed (500, and a
    traceback in the log) on a Content-Length byte 0xB2."""
    client, _, _ = setup
    port = int(str(client.base_url).rsplit(":", 1)[1].strip("/"))
    for length in (b"\xb2", b"\xb9\xb2"):
        answer = _raw(port, b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: " + length
                      + b"\r\n\r\ntoken=x")
        assert answer.split(b"\r\n", 1)[0].split()[1] == b"400", answer[:200]


@pytest.mark.parametrize("value", ["0", "0s", "500ms"])
def test_a_session_lifetime_under_a_minute_is_a_clear_config_error(
        tmp_path: Path, value: str) -> None:
    """`session_lifetime: 0` (or under a second) was taken: every login then ends at once
    (a cookie with Max-Age=0, a session already over) and the browser loops back to the
    login page with no word of why."""
    path = tmp_path / "c.yml"
    path.write_text("http_api: {listen: '127.0.0.1:1', token: tok-abcdef, "
                    f"session_lifetime: '{value}'}}\n")
    with pytest.raises(ConfigError, match="session_lifetime") as caught:
        config.load(str(path), {})
    assert "\n" not in str(caught.value)


class _App:
    """What DaemonControl and Desk use of the Application, with an undo that fails."""

    class history:  # noqa: N801
        @staticmethod
        def note(*_: Any) -> None:
            pass

        @staticmethod
        def entries(*_: Any) -> list[Any]:
            return []

    def rollback_plan(self, name: str) -> Any:
        class Plan:
            image = "reg/web:0"
        return Plan()

    def rollback(self, name: str) -> PassReport:
        raise UpdaterError("the engine refused to start the old container")

    def unwatched(self, names: Any) -> list[str]:
        return []


class _Daemon:
    running, passes, last_report, next_due, last_error = False, 1, None, None, None


def _desk(board: Board, jobs: list[Any], triggered: list[Any]) -> Any:
    from updater.server import DaemonControl
    from updater.server import Desk as RealDesk

    app: Any = _App()

    def undone(report: PassReport) -> None:
        board.after_pass(report, full=False)

    make: Any = DaemonControl
    wiring: dict[str, Any] = {"undone": undone, "gave_up": board.done}
    if "gave_up" not in inspect.signature(DaemonControl).parameters:
        del wiring["gave_up"]  # before the fix: no way to tell the board
    control = make(app, lambda *a, **k: triggered.append((a, k)), dict, lambda: None,
                   lambda what, job: jobs.append(job), **wiring)
    desk = RealDesk(app, _Daemon(), board, control, None)  # type: ignore[arg-type]
    desk._host = "n"
    return desk


def test_a_failed_undo_does_not_stay_in_progress() -> None:
    """The undo's job failed in the daemon's loop (error in the log and status) but the item
    kept saying "undo in progress…" for 30 minutes: `Board.done` was never called."""
    from updater.serve.daemon import Daemon

    board = Board()
    board.after_pass(PassReport(items=[ItemReport("web", "reg/web:1", Outcome.UPDATED)]),
                     full=True)
    jobs: list[Any] = []
    desk = _desk(board, jobs, [])
    assert "goes back to" in desk.act("undo", "web", "container", None)
    assert board.rows("n")[0]["queued"] == "undo"
    daemon = Daemon.__new__(Daemon)  # run the job as the loop does
    daemon._lock, daemon._jobs, daemon._requested = __import__("threading").Lock(), [], None
    daemon._wake = __import__("threading").Event()
    daemon.deadline, daemon.last_error = 0.0, None
    for job in jobs:
        daemon.submit("rollback of web", job)
    daemon._run_jobs()
    assert daemon.last_error and "refused" in daemon.last_error
    assert board.rows("n")[0]["queued"] == ""


def test_a_pass_that_fails_outright_ends_what_it_carried() -> None:
    """Update now while the engine is down: the pass raises (EngineUnavailable), no report
    reaches the board, and the row said "update in progress…" for 30 minutes."""
    board = Board()
    board.after_pass(PassReport(items=[ItemReport("web", "reg/web:1", Outcome.AVAILABLE)]),
                     full=True)
    board.queue(("web",), "update")
    # What Server.run's one_pass hands the board when the pass itself failed.
    now = time.time() + 1
    board.after_pass(PassReport(started=now, finished=now, items=[],
                                error="cannot reach the engine"), full=False)
    assert board.rows("n")[0]["queued"] == ""
    board.queue(("web",), "update")
    failed = getattr(board, "failed", None)  # a pass that raised: no report at all
    assert failed is not None
    failed(time.time() + 1)
    assert board.rows("n")[0]["queued"] == ""


def test_update_now_on_a_service_does_not_force_a_same_named_container() -> None:
    """A monitor-only service and a monitor-only container both named `web`
    (Docker allows it: tasks are `web.1.<id>`). Update now on the service's row forces the
    name only (`Daemon._forced` is a set of names; passes.py and services.py both test
    `name in forced`), so the container is updated too, against its monitor-only label."""
    board = Board()
    board.after_pass(PassReport(items=[
        ItemReport("web", "reg/web:1", Outcome.AVAILABLE),
        ItemReport("web", "reg/web:1", Outcome.AVAILABLE, kind="service")]), full=True)
    triggered: list[Any] = []
    desk = _desk(board, [], triggered)
    desk.act("update", "web", "service", None)
    [(args, kwargs)] = triggered
    assert kwargs.get("force") and "service" in repr((args, kwargs)), (
        f"forced by name alone: {args} {kwargs}")


def test_an_expired_session_on_the_confirmation_goes_to_the_login(setup: Setup) -> None:
    """The no-script path: the session ended while the confirmation page was open; pressing
    Yes showed the raw JSON `{"error": "log in first"}` instead of the login page."""
    client, desk, clock = setup
    cookie = login(client)
    page = get(client, "/ui/act?action=update&name=db&kind=container", cookie)
    csrf = csrf_of(page.text)
    clock.now += 7200
    client.cookies.set(COOKIE, cookie)
    answer = client.post("/ui/act", data={"action": "update", "name": "db", "kind": "container",
                                          "csrf": csrf, "confirmed": "yes"},
                         headers={"Accept": "text/html"})
    assert answer.status_code in (303, 401) and desk.acted == []
    assert answer.headers.get("location") == "/login" or "text/html" in answer.headers[
        "content-type"], answer.text


def test_a_repeated_field_is_refused_not_widened_to_every_item(setup: Setup) -> None:
    """`name=web&name=db` made `name` None, which for Update now means every item: a
    malformed form silently asked for an update of everything."""
    client, desk, _ = setup
    client.cookies.set(COOKIE, login(client))
    csrf = csrf_of(client.get("/").text)
    answer = client.post("/ui/act", content=f"action=update&name=web&name=db&kind=container"
                                            f"&confirmed=yes&csrf={csrf}",
                         headers={"Content-Type": "application/x-www-form-urlencoded",
                                  "Accept": "application/json"})
    assert answer.status_code == 400 and desk.acted == [], answer.text
    page = client.get("/ui/act?action=update&name=web&name=db")
    assert page.status_code == 400 and "every item" not in page.text


def test_the_push_and_fleet_bodies_read_the_same_content_length() -> None:
    """The same `isdigit` slip in `hooks.body_length` (push notifications, fleet reports):
    a ValueError out of the handler, the connection dropped without an answer."""
    from updater.serve.hooks import body_length

    assert isinstance(body_length("²"), str) and isinstance(body_length("٣"), str)
    assert body_length(" 12 ") == 12
