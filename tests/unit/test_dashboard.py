"""The dashboard through the real API server and its real sessions, templates and forms; only
the daemon behind it (the Desk) is a stand-in. Logins, cookies, CSRF, expiry, confirmation,
escaping and the live state the page polls."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.unit.test_api_trigger import Control
from updater.core.report import ItemReport, Outcome, PassReport
from updater.errors import UpdaterError
from updater.serve.api import ApiServer
from updater.serve.board import Board
from updater.serve.dashboard import Dashboard
from updater.serve.sessions import COOKIE, MAX_SESSIONS, Sessions, cookie_value

TOKEN = "dashboard-token-0123456789abcdef"
WAITING = "sha256:" + "b" * 64


class Desk:
    def __init__(self) -> None:
        self.board = Board()
        self.board.after_pass(PassReport(started=1.0, finished=2.0, items=[
            ItemReport("web", "reg/web:1", Outcome.WAITING, new_digest=WAITING,
                       reason="waits for approval"),
            ItemReport("db", "reg/db:16", Outcome.UP_TO_DATE),
            ItemReport("<script>x</script>", "reg/x:1", Outcome.AVAILABLE)]), full=True)
        self.acted: list[tuple[str, str | None, str, str | None]] = []
        self.refuse = False

    def rows(self) -> list[dict[str, Any]]:
        return self.board.rows("node-1")

    def version(self) -> str:
        return str(self.board.version)

    def item(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.board.item(kind, name)

    def history(self, name: str, limit: int) -> list[dict[str, Any]]:
        return [{"time": 5.0, "name": name, "kind": "container", "image": "reg/web:1",
                 "outcome": "updated", "old_digest": "sha256:" + "a" * 64,
                 "new_digest": WAITING, "old_version": "1.0", "new_version": "1.1",
                 "reason": None, "seconds": 3.5}]

    def status(self) -> dict[str, Any]:
        return {"running": False, "passes": 1, "last_pass": None, "next_due": None,
                "last_error": None}

    def act(self, action: str, name: str | None, kind: str, digest: str | None) -> str:
        if self.refuse:
            raise UpdaterError(f"{name} has nothing to go back to")
        self.acted.append((action, name, kind, digest))
        self.board.queue((name,) if name else (), action)
        return f"{action} queued"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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


def login(client: httpx.Client) -> str:
    answer = client.post("/login", data={"token": TOKEN})
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    client.cookies.clear()  # each test says which cookie it sends
    return str(answer.cookies[COOKIE])


def get(client: httpx.Client, path: str, cookie: str) -> httpx.Response:
    client.cookies.set(COOKIE, cookie)
    return client.get(path)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def test_nothing_without_a_login(setup: tuple[httpx.Client, Desk, Clock]) -> None:
    client, desk, _ = setup
    for path in ("/", "/item?name=web", "/?state=waiting"):
        answer = client.get(path)
        assert (answer.status_code, answer.headers["location"]) == (303, "/login")
    assert client.get("/ui/state").status_code == 401
    answer = client.post("/ui/act", data={"action": "update", "name": "web", "confirmed": "yes"})
    assert answer.status_code == 401 and desk.acted == []
    assert client.get("/login").status_code == 200  # the login page and its assets are open
    assert client.get("/static/dashboard.css").status_code == 200
    assert client.get("/static/../api.py").status_code == 404
    # The JSON API still wants its bearer token, whatever cookie comes along.
    client.cookies.set(COOKIE, login(client))
    assert client.get("/v1/status").status_code == 401


def test_a_wrong_token_is_refused_and_never_shown(
        setup: tuple[httpx.Client, Desk, Clock], caplog: pytest.LogCaptureFixture) -> None:
    client, _, _ = setup
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-token-but-a-secret-guess"
    answer = client.post("/login", data={"token": wrong})
    assert answer.status_code == 401 and COOKIE not in answer.cookies
    assert "not the API token" in answer.text and wrong not in answer.text
    page = get(client, "/", login(client))
    assert page.status_code == 200
    assert TOKEN not in page.text and wrong not in caplog.text and TOKEN not in caplog.text
    assert "wrong token" in caplog.text


def test_the_cookie_is_http_only_strict_and_secure_behind_tls(
        setup: tuple[httpx.Client, Desk, Clock]) -> None:
    client, _, _ = setup
    plain = client.post("/login", data={"token": TOKEN}).headers["set-cookie"]
    assert "HttpOnly" in plain and "SameSite=Strict" in plain and "Secure" not in plain
    assert "Max-Age=3600" in plain
    tls = client.post("/login", data={"token": TOKEN},
                      headers={"X-Forwarded-Proto": "https"}).headers["set-cookie"]
    assert "Secure" in tls


def test_the_page_lists_items_escaped_with_strict_headers(
        setup: tuple[httpx.Client, Desk, Clock]) -> None:
    client, _, _ = setup
    client.cookies.set(COOKIE, login(client))
    page = client.get("/")
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert "<script>x</script>" not in page.text and "&lt;script&gt;x&lt;/script&gt;" in page.text
    assert page.text.count("<tr data-key=") == 3
    assert "Approve" in page.text  # web waits for approval
    waiting = client.get("/?state=waiting")
    assert waiting.text.count("<tr data-key=") == 1 and "1 of 3 shown" in waiting.text
    found = client.get("/?q=REG/DB")
    assert found.text.count("<tr data-key=") == 1
    detail = client.get("/item?kind=container&name=web")
    assert detail.status_code == 200 and "3.5 s" in detail.text and "1.0 → 1.1" in detail.text
    assert client.get("/item?kind=container&name=nope").status_code == 404


def test_an_action_needs_the_csrf_token_and_a_confirmation(
        setup: tuple[httpx.Client, Desk, Clock]) -> None:
    client, desk, _ = setup
    client.cookies.set(COOKIE, login(client))
    csrf = csrf_of(client.get("/").text)
    form = {"action": "approve", "name": "web", "kind": "container", "digest": WAITING}
    assert client.post("/ui/act", data={**form, "confirmed": "yes"}).status_code == 403
    assert client.post("/ui/act", data={**form, "confirmed": "yes",
                                        "csrf": csrf[:-1] + "x"}).status_code == 403
    assert desk.acted == []
    asked = client.post("/ui/act", data={**form, "csrf": csrf})
    assert asked.status_code == 200 and "Confirm" in asked.text and desk.acted == []
    linked = client.get("/ui/act", params={**form, "confirmed": "yes"})  # a link: only asks
    assert linked.status_code == 200 and 'value="yes"' in linked.text and desk.acted == []
    assert csrf in linked.text  # the confirmation's form carries the session's token
    done = client.post("/ui/act", data={**form, "csrf": csrf, "confirmed": "yes"},
                       headers={"Accept": "application/json"})
    assert done.json() == {"ok": True, "message": "approve queued"}
    assert desk.acted == [("approve", "web", "container", WAITING)]
    desk.refuse = True
    refused = client.post("/ui/act", data={"action": "undo", "name": "db", "csrf": csrf,
                                           "confirmed": "yes"})
    assert refused.status_code == 409 and "nothing to go back to" in refused.text
    bad = client.post("/ui/act", data={"action": "rm -rf", "name": "db", "csrf": csrf,
                                       "confirmed": "yes"})
    assert bad.status_code == 400
    forged = client.post("/ui/act", data={"action": "update", "name": "x\nERROR forged",
                                          "csrf": csrf, "confirmed": "yes"})
    assert forged.status_code == 400 and len(desk.acted) == 1  # never reaches the log
    assert client.get("/logout").status_code == 405  # only a POST with the token logs out


def test_state_tells_changes_and_progress(setup: tuple[httpx.Client, Desk, Clock]) -> None:
    client, desk, _ = setup
    client.cookies.set(COOKIE, login(client))
    version = desk.version()
    same = client.get(f"/ui/state?v={version}").json()
    assert "rows" not in same and same["status"]["passes"] == 1
    desk.act("update", "db", "container", None)
    changed = client.get(f"/ui/state?v={version}").json()
    assert changed["version"] != version
    assert "update in progress" in changed["rows"]["node-1|container|db"]
    desk.board.after_pass(PassReport(items=[ItemReport("db", "reg/db:16", Outcome.UPDATED)]),
                          full=False)
    rows = client.get(f"/ui/state?v={changed['version']}").json()["rows"]
    assert "in progress" not in rows["node-1|container|db"] and "updated" in rows[
        "node-1|container|db"]
    assert len(rows) == 3  # a pass for one item keeps the others
    # An item's page asks after its item alone: the same until that item changes.
    signed = client.get("/ui/state?item=container|web").json()
    assert "rows" not in signed
    desk.board.after_pass(PassReport(items=[ItemReport("db", "reg/db:16", Outcome.ERROR)]),
                          full=False)
    assert client.get("/ui/state?item=container|web").json()["item"] == signed["item"]
    desk.act("undo", "web", "container", None)
    assert client.get("/ui/state?item=container|web").json()["item"] != signed["item"]
    page = client.get("/item?kind=container&name=web").text
    assert "undo in progress" in page and 'data-sign="' in page


def test_logout_and_expiry_end_a_session(setup: tuple[httpx.Client, Desk, Clock]) -> None:
    client, _, clock = setup
    stolen = login(client)
    assert get(client, "/", stolen).status_code == 200
    clock.now += 3601
    assert get(client, "/", stolen).status_code == 303
    cookie = login(client)
    csrf = csrf_of(get(client, "/", cookie).text)
    out = client.post("/logout", data={"csrf": csrf})
    assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
    assert get(client, "/", cookie).status_code == 303  # a copy of the cookie is no use
    first = login(client)
    client.cookies.set(COOKIE, first)
    client.post("/login", data={"token": TOKEN})  # logging in again ends the first session
    assert get(client, "/", first).status_code == 303
    assert get(client, "/ui/state", cookie).status_code == 401


def test_sessions_are_bounded_and_cookies_parsed() -> None:
    sessions = Sessions(60)
    first, _ = sessions.start()
    for _ in range(MAX_SESSIONS):
        sessions.start()
    assert len(sessions) == MAX_SESSIONS and sessions.find(first) is None
    assert cookie_value(f"a=1; {COOKIE}=abc; b=2") == "abc"
    assert cookie_value("a=1") is None and cookie_value(None) is None
    assert sessions.find("") is None and sessions.find("made-up") is None


def test_board_merges_named_passes_and_drops_gone_items() -> None:
    board = Board()
    board.after_pass(PassReport(items=[ItemReport("a", "r/a:1", Outcome.UP_TO_DATE),
                                       ItemReport("b", "r/b:1", Outcome.WAITING,
                                                  new_digest=WAITING)]), full=True)
    board.queue(("a",), "update")
    assert [r["queued"] for r in board.rows("n")] == ["update", ""]
    assert [r["approvable"] for r in board.rows("n")] == [False, True]
    board.after_pass(PassReport(items=[ItemReport("a", "r/a:1", Outcome.UPDATED)]), full=False)
    assert [(r["name"], r["state"], r["queued"]) for r in board.rows("n")] == [
        ("a", "updated", ""), ("b", "waiting", "")]
    board.queue(("b",), "undo")
    board.done("b")
    assert board.rows("n")[1]["queued"] == ""
    board.after_pass(PassReport(items=[ItemReport("b", "r/b:1", Outcome.UP_TO_DATE)]),
                     full=True)
    assert [r["name"] for r in board.rows("n")] == ["b"]
    assert board.rows("n")[0]["current"] == "1"


def test_a_row_names_what_an_item_moves_to() -> None:
    from updater.serve.board import row

    same_tag = row("n", {"name": "a", "image": "reg:5000/a:latest", "outcome": "waiting",
                         "target": "reg:5000/a:latest", "new_digest": WAITING})
    assert (same_tag["current"], same_tag["target"]) == ("latest", WAITING[:19])
    moved = row("n", {"name": "a", "image": "reg:5000/a:1.2.3", "outcome": "update-available",
                      "target": "reg:5000/a:1.10.0", "new_digest": WAITING})
    assert (moved["current"], moved["target"]) == ("1.2.3", "1.10.0")
    labelled = row("n", {"name": "a", "image": "a", "outcome": "updated", "old_version": "1.0",
                         "new_version": "1.1"})
    assert (labelled["current"], labelled["target"]) == ("1.0", "1.1")
    assert not labelled["approvable"] and not labelled["updatable"]  # another node's row


def test_containers_show_before_the_first_pass_looks_at_them() -> None:
    board = Board()
    board.seed([("a", "r/a:1"), ("b", "r/b:2")])
    assert [(r["name"], r["state"], r["current"]) for r in board.rows("n")] == [
        ("a", "", "1"), ("b", "", "2")]
    board.after_pass(PassReport(items=[ItemReport("a", "r/a:1", Outcome.UP_TO_DATE)]),
                     full=False)
    board.seed([("a", "r/a:1")])  # never overwrites what a pass said
    assert [(r["name"], r["state"]) for r in board.rows("n")] == [("a", "up-to-date"),
                                                                  ("b", "")]
