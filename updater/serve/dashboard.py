"""The dashboard on the API's listener (`GET /`): the watched items, an item's history, and
Update now, Approve, Skip and Undo, each confirmed. A login with the API token gives a session
cookie (HttpOnly, SameSite=Strict; Secure behind TLS); every POST carries the session's CSRF
token. Pages come from Jinja templates shipped in the package, with its CSS and script; the
page asks `/ui/state` for changes, so progress and outcomes show without a reload."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qs, urlencode

from updater import __version__
from updater.errors import EngineError, NotWatched, UpdaterError
from updater.serve.sessions import COOKIE, Session, Sessions, cookie_value

log = logging.getLogger("updater.serve.dashboard")
PATHS = frozenset({"/", "/login", "/logout", "/item", "/ui/state", "/ui/act"})
STATIC = {"dashboard.css": "text/css; charset=utf-8",
          "dashboard.js": "text/javascript; charset=utf-8"}
ACTIONS = {"update": "Update {name} now", "approve": "Approve {name}'s update to {digest}",
           "skip": "Skip {digest} for {name} for good", "undo": "Undo {name}'s last update"}
MAX_FORM = 4096
# A container's or service's name as the engine allows it (nothing else reaches the log).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
HISTORY_ROWS = 50
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; connect-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


class Desk(Protocol):
    """What the dashboard reads of the daemon and asks of it."""

    def rows(self) -> list[dict[str, Any]]:
        """Every item the page lists: this node's, and on the leader the fleet's."""

    def version(self) -> str:
        """Changes whenever `rows` may have changed."""

    def item(self, kind: str, name: str) -> dict[str, Any] | None: ...

    def history(self, name: str, limit: int) -> list[dict[str, Any]]: ...

    def status(self) -> dict[str, Any]:
        """running, passes, last_pass (started, finished, summary), next_due, last_error."""

    def act(self, action: str, name: str | None, kind: str, digest: str | None) -> str:
        """Carry out (queue) `action`; what to tell the operator. UpdaterError when refused."""


@dataclass(slots=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


class Dashboard:
    def __init__(self, desk: Desk, token_matches: Callable[[str], bool], lifetime: float,
                 sessions: Sessions | None = None) -> None:
        self._desk = desk
        self._token_matches = token_matches
        self.sessions = sessions if sessions is not None else Sessions(lifetime)
        self._templates: Any = None  # the Jinja environment, made at the first page

    def serves(self, path: str) -> bool:
        return path in PATHS or path.startswith("/static/")

    def answer(self, method: str, path: str, query: dict[str, list[str]],
               header: Callable[[str], str | None], read: Callable[[int], bytes]) -> Answer:
        """The answer to a request for one of the dashboard's paths."""
        if path.startswith("/static/"):
            return _static(path.removeprefix("/static/")) if method == "GET" else _refuse(405)
        secure = (header("X-Forwarded-Proto") or "").lower() == "https"
        session_id = cookie_value(header("Cookie"))
        session = self.sessions.find(session_id)
        if method == "POST":
            return self._post(path, session_id, session, secure, header, read)
        if method != "GET" or path == "/logout":  # logging out is a POST with the CSRF token
            return _refuse(405)
        if path == "/login":
            return _redirect("/") if session else self._page("login.html", 200)
        if session is None:
            return _refuse(401, "log in first") if path == "/ui/state" else _redirect("/login")
        pages = {"/ui/state": self._state, "/item": self._item, "/ui/act": self._confirm}
        return pages.get(path, self._index)(query, session)

    def _post(self, path: str, session_id: str | None, session: Session | None, secure: bool,
              header: Callable[[str], str | None], read: Callable[[int], bytes]) -> Answer:
        form = _form(header("Content-Length"), read)
        if form is None:
            return _refuse(400, "the form is missing or too long")
        if path == "/login":
            self.sessions.end(session_id)  # a new login ends the session it replaces
            return self._login(form, secure, header("X-Forwarded-For"))
        if session is None or not session.csrf_matches(_one(form, "csrf")):
            return _not_logged_in(header) if session is None else _refuse(
                403, "the form is stale or forged (no valid CSRF token); reload the page")
        if path == "/logout":
            self.sessions.end(session_id)
            return _redirect("/login", {"Set-Cookie": _cookie("", 0, secure)})
        if path == "/ui/act":
            return self._act(form, session, json_wanted=_wants_json(header))
        return _refuse(405)

    def _login(self, form: dict[str, list[str]], secure: bool,
               forwarded: str | None) -> Answer:
        if not self._token_matches(_one(form, "token") or ""):
            log.warning("dashboard: a login with a wrong token%s",
                        f" (forwarded for {forwarded[:64]})" if forwarded else "")
            return self._page("login.html", 401, error="That is not the API token.")
        session_id, _ = self.sessions.start()
        log.info("dashboard: logged in (%d sessions open)", len(self.sessions))
        cookie = _cookie(session_id, int(self.sessions.lifetime), secure)
        return _redirect("/", {"Set-Cookie": cookie})

    def _index(self, query: dict[str, list[str]], session: Session) -> Answer:
        rows = self._desk.rows()
        chosen = {key: _one(query, key) or "" for key in ("state", "node", "q")}
        shown = [row for row in rows if _matches(row, chosen)]
        return self._page("index.html", 200, session=session, rows=shown, total=len(rows),
                          states=sorted({r["state"] for r in rows if r["state"]}),
                          nodes=sorted({r["node"] for r in rows if r["node"]}),
                          chosen=chosen, status=self._desk.status(),
                          version=self._desk.version())

    def _item(self, query: dict[str, list[str]], session: Session) -> Answer:
        kind, name = _one(query, "kind") or "container", _one(query, "name") or ""
        found = self._desk.item(kind, name)
        if found is None:
            return self._page("missing.html", 404, session=session, name=name)
        return self._page("item.html", 200, session=session, row=found,
                          history=self._desk.history(name, HISTORY_ROWS),
                          status=self._desk.status(), sign=_sign(found))

    def _state(self, query: dict[str, list[str]], session: Session) -> Answer:
        """What changed since the page's `v`: the status, and the rows when they changed."""
        version = self._desk.version()
        body: dict[str, Any] = {"version": version, "status": self._desk.status()}
        kind, _, name = (_one(query, "item") or "").partition("|")
        if name:  # an item's page: only its own changes matter
            body["item"] = _sign(self._desk.item(kind, name))
        elif _one(query, "v") != str(version):
            macros = self._env().get_template("rows.html").module
            body["rows"] = {_key(row): str(macros.row(row))
                            for row in self._desk.rows()}
        return Answer(200, json.dumps(body).encode(), "application/json")

    def _confirm(self, query: dict[str, list[str]], session: Session) -> Answer:
        """The question before an action (a link's target; changes nothing)."""
        return self._act(query, session, json_wanted=False, confirmed=False)

    def _act(self, form: dict[str, list[str]], session: Session, json_wanted: bool,
             confirmed: bool = True) -> Answer:
        action, name = _one(form, "action") or "", _one(form, "name") or None
        kind, digest = _one(form, "kind") or "container", _one(form, "digest") or None
        if any(len(values) > 1 for values in form.values()):  # never read as "every item"
            return _refuse(400, "a field is given more than once")
        if name is not None and not NAME.fullmatch(name):
            return _refuse(400, "that is not a container or service name")
        if action not in ACTIONS or (action != "update" and not name) or (
                action in ("approve", "skip") and not digest):
            return _refuse(400, f"unknown or incomplete action {action[:40]!r}")
        what = ACTIONS[action].format(name=name or "every item", digest=(digest or "")[:19])
        if not confirmed or _one(form, "confirmed") != "yes":
            return self._page("confirm.html", 200, session=session, what=what, form={
                "action": action, "name": name or "", "kind": kind, "digest": digest or ""})
        try:
            said, status = self._desk.act(action, name, kind, digest), 200
        except NotWatched as exc:
            said, status = str(exc), 404
        except EngineError as exc:
            said, status = str(exc), 503
        except UpdaterError as exc:
            said, status = str(exc), 409
        log.info("dashboard: %s: %s", what, said)
        if json_wanted:
            return Answer(status, json.dumps({"ok": status == 200, "message": said}).encode(),
                          "application/json")
        return self._page("done.html", status, session=session, what=what, said=said,
                          ok=status == 200, back="/item?" + urlencode(
                              {"kind": kind, "name": name}) if name else "/")

    def _page(self, template: str, code: int, **values: Any) -> Answer:
        text = self._env().get_template(template).render(release=__version__, **values)
        return Answer(code, text.encode())

    def _env(self) -> Any:
        if self._templates is None:
            import jinja2

            self._templates = jinja2.Environment(
                loader=jinja2.PackageLoader("updater.serve", "templates"),
                autoescape=True, trim_blocks=True, lstrip_blocks=True)
            self._templates.filters["when"] = _when
            self._templates.filters["short"] = lambda d: (d or "")[:19]
            self._templates.filters["link"] = _link
            self._templates.globals["key"] = _key
        return self._templates


def security_headers(answer: Answer) -> dict[str, str]:
    """The headers of every dashboard answer, then its own."""
    return {**_HEADERS, **answer.headers}


def _sign(item: Mapping[str, Any] | None) -> str:
    """What an item's page shows of it, in short: its page reloads when this changes."""
    return hashlib.sha256(json.dumps(item, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _key(row: Mapping[str, Any]) -> str:
    return f"{row.get('node', '')}|{row.get('kind', '')}|{row.get('name', '')}"


def _matches(row: Mapping[str, Any], chosen: Mapping[str, str]) -> bool:
    text = chosen["q"].lower()
    return (not chosen["state"] or row["state"] == chosen["state"]) and (
        not chosen["node"] or row["node"] == chosen["node"]) and (
        not text or any(text in str(row[k]).lower() for k in ("name", "image", "why")))


def _one(values: Mapping[str, list[str]], key: str) -> str | None:
    found = values.get(key) or []
    return found[0] if len(found) == 1 else None


def _form(length_header: str | None, read: Callable[[int], bytes]) -> dict[str, list[str]] | None:
    text = (length_header or "").strip()
    if length_header is None or not (text.isascii() and text.isdigit()):  # not '²' nor '٣'
        return {} if length_header is None else None
    length = int(text)
    if length > MAX_FORM:
        return None
    body = read(length)
    if len(body) < length:
        return None
    try:
        return parse_qs(body.decode(), keep_blank_values=True, max_num_fields=16)
    except (UnicodeDecodeError, ValueError):
        return None


def _wants_json(header: Callable[[str], str | None]) -> bool:
    return "application/json" in (header("Accept") or "")


def _cookie(value: str, max_age: int, secure: bool) -> str:
    return (f"{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict"
            + ("; Secure" if secure else ""))


def _redirect(to: str, headers: dict[str, str] | None = None) -> Answer:
    return Answer(303, b"", "text/plain", {"Location": to, **(headers or {})})


def _not_logged_in(header: Callable[[str], str | None]) -> Answer:
    """A browser's form after its session ended goes to the login page; a script hears 401."""
    if "text/html" in (header("Accept") or ""):
        return _redirect("/login")
    return _refuse(401, "log in first")


def _refuse(status: int, why: str = "not allowed here") -> Answer:
    return Answer(status, json.dumps({"error": why}).encode(), "application/json")


def _static(name: str) -> Answer:
    if name not in STATIC:
        return _refuse(404, "no such file")
    data = resources.files("updater.serve").joinpath("static", name).read_bytes()
    return Answer(200, data, STATIC[name], {"Cache-Control": "max-age=300"})


def _when(seconds: float | None) -> str:
    if not seconds:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _link(url: str | None) -> str | None:
    """A source URL the page may link to (http or https only), else None."""
    return url if isinstance(url, str) and url.startswith(("https://", "http://")) else None
