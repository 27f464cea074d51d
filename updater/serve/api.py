"""The HTTP API of `updater run` (`http_api.listen`): health without a token; status, trigger,
history, decisions and Prometheus metrics with `Authorization: Bearer <token>`, compared in
constant time; push notifications with their own token (`hooks`). Every handler only reads
state or queues work for the daemon's loop. The listener (`http`) is hardened: a client
cannot hold it."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from updater import __version__
from updater.errors import ConfigError, EngineError, NotWatched, UpdaterError
from updater.serve.dashboard import Answer, Dashboard, security_headers
from updater.serve.fleet import FleetEndpoint
from updater.serve.hooks import PushHook
from updater.serve.http import (
    MAX_REQUEST_BYTES,
    REQUEST_DEADLINE,
    DeadlineReader,
    RequestTooLarge,
    Server,
    linger,
)

log = logging.getLogger(__name__)
MAX_NAMES = 100
HOOK_PATH = "/v1/hooks/registry"
DIGESTS_PATH, REPORT_PATH, PUSHED_PATH = "/v1/digests", "/v1/fleet/report", "/v1/fleet/pushed"


class Control(Protocol):
    """What the API may ask of the daemon."""

    def trigger(self, names: tuple[str, ...] = ()) -> None:
        """Queue a pass (for `names`); NotWatched when a name matches nothing watched."""

    def status(self) -> dict[str, Any]: ...

    def history(self, name: str | None, limit: int) -> list[dict[str, Any]]: ...

    def metrics(self) -> bytes: ...

    def pending(self) -> dict[str, Any]:
        """What the last pass left waiting, and why."""

    def decide(self, name: str, digest: str | None, decision: str) -> str:
        """Approve or skip `digest` (else the one `name` waits for) of `name`; the digest.
        NotWatched for an unknown name, UpdaterError for a bad digest."""

    def rollback(self, name: str) -> str:
        """Queue a rollback of `name`; the image it goes back to. NotWatched for an unknown
        name, UpdaterError when there is nothing to go back to."""


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (all interfaces); ConfigError when malformed."""
    host, separator, port = listen.rpartition(":")
    if not separator or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"http_api.listen {listen!r} is not host:port (e.g. 127.0.0.1:8080)")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - ':port' asks for all


class ApiServer:
    def __init__(self, listen: str, token: str, control: Control,
                 hook: PushHook | None = None, fleet: FleetEndpoint | None = None,
                 dashboard: Dashboard | None = None) -> None:
        self._token = hashlib.sha256(token.encode()).digest()
        self.dashboard = dashboard  # `GET /` and its pages, with their own logins
        self._control = control
        self._hook = hook  # push notifications, with their own token
        self._fleet = fleet  # the swarm leader's side of digest sharing and the fleet's view
        address = parse_listen(listen)
        try:
            self._server = Server(address, self._handler())
        except OSError as exc:
            raise ConfigError(f"cannot listen on {listen} for the HTTP API ({exc.strerror}); "
                              "choose another http_api.listen") from None
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        name="api", daemon=True)

    def start(self) -> ApiServer:
        self._thread.start()
        log.info("HTTP API listening on %s:%d", *self._server.server_address[:2])
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def authorized(self, header: str | None) -> bool:
        """Constant time whatever is given: both sides are hashed to the same length first."""
        scheme, _, given = (header or "").partition(" ")
        return self.token_matches(given.strip()) and scheme.lower() == "bearer"

    def token_matches(self, given: str) -> bool:
        given_hash = hashlib.sha256(given.encode("utf-8", "replace")).digest()
        return hmac.compare_digest(given_hash, self._token)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            server_version = f"updater/{__version__}"
            # Even to a request line that cannot be parsed, answer with a status line.
            default_request_version = "HTTP/1.0"
            timeout = REQUEST_DEADLINE  # for writing the answer; reading has its deadline

            def setup(self) -> None:
                super().setup()
                self.reader = DeadlineReader(self.connection,
                                              time.monotonic() + REQUEST_DEADLINE,
                                              MAX_REQUEST_BYTES)
                self.rfile = io.BufferedReader(self.reader)

            def body(self, length: int) -> bytes:
                self.reader.allow(length)
                try:
                    return self.rfile.read(length)
                except (TimeoutError, OSError):
                    return b""

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except RequestTooLarge:
                    self.close_connection = True
                    body = json.dumps({"error": f"request line and headers over "
                                                f"{MAX_REQUEST_BYTES} bytes"}).encode()
                    self.wfile.write(b"HTTP/1.0 431 Request Header Fields Too Large\r\n"
                                     b"Content-Type: application/json\r\nContent-Length: "
                                     + str(len(body)).encode() + b"\r\n\r\n" + body)
                    self.wfile.flush()
                    linger(self.connection)

            def parse_request(self) -> bool:
                parsed = super().parse_request()  # reads the headers
                api._server.request_read(self.connection)
                self.connection.settimeout(REQUEST_DEADLINE)
                return parsed

            def do_GET(self) -> None:
                api._route(self, "GET")

            def do_POST(self) -> None:
                api._route(self, "POST")

            def _not_allowed(self) -> None:
                if self.command == "HEAD":
                    self.send_response(405)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                _send(self, 405, {"error": f"{self.command} is not allowed here"})

            do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _not_allowed  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("api: %s", format % args)

        return Handler

    def _route(self, request: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(request.path)
        query = parse_qs(url.query, keep_blank_values=True)
        routes: dict[tuple[str, str], Callable[[], tuple[int, Any]]] = {
            ("GET", "/v1/status"): lambda: (200, self._control.status()),
            ("POST", "/v1/update"): lambda: self._trigger(query),
            ("GET", "/v1/history"): lambda: self._history(query),
            ("GET", "/v1/pending"): lambda: (200, self._control.pending()),
            ("POST", "/v1/approve"): lambda: self._decide(query, "approved"),
            ("POST", "/v1/skip"): lambda: self._decide(query, "skipped"),
            ("POST", "/v1/rollback"): lambda: self._rollback(query),
        }
        # Without the API token: health, and push notifications (with their own).
        unguarded = {("GET", "/v1/health"): lambda: _send(request, 200, {"status": "ok"})}
        if (hook := self._hook) is not None:
            unguarded[("POST", HOOK_PATH)] = lambda: self._push(request, query, hook)
        if (fleet := self._fleet) is not None:  # with the fleet's token
            unguarded[("GET", DIGESTS_PATH)] = lambda: _send(request, *_guarded(
                lambda: fleet.digests(request.headers.get("Authorization"), query)))
            unguarded[("POST", REPORT_PATH)] = lambda: self._fleet_post(request, fleet.report)
            unguarded[("POST", PUSHED_PATH)] = lambda: self._fleet_post(request, fleet.pushed)
            routes[("GET", "/v1/fleet")] = fleet.view
        handle = unguarded.get((method, url.path))
        if handle is None and (page := self.dashboard) is not None and page.serves(url.path):
            handle = lambda: self._page(request, method, url.path, query, page)  # noqa: E731
        if handle is not None:  # the dashboard's pages have their own logins
            return handle()
        known = {path for _, path in routes} | {"/metrics"}
        if url.path not in known:
            return _send(request, 404, {"error": f"no such endpoint {url.path}"})
        if not self.authorized(request.headers.get("Authorization")):
            return _send(request, 401, {"error": "missing or wrong token"},
                         {"WWW-Authenticate": 'Bearer realm="updater"'})
        if (method, url.path) == ("GET", "/metrics"):
            return _send_raw(request, 200, self._control.metrics(),
                             "text/plain; version=0.0.4; charset=utf-8")
        route = routes.get((method, url.path))
        if route is None:
            return _send(request, 405, {"error": f"{method} not allowed on {url.path}"})
        try:
            status, body = route()
        except Exception:  # a bug must not look like a dropped connection to the caller
            log.exception("api: %s %s failed", method, url.path)
            status, body = 500, {"error": "internal error; see the updater's log"}
        return _send(request, status, body)

    def _page(self, request: BaseHTTPRequestHandler, method: str, path: str,
              query: dict[str, list[str]], dashboard: Dashboard) -> None:
        read: Callable[[int], bytes] = getattr(request, "body")  # noqa: B009 - the Handler's
        try:
            answer = dashboard.answer(method, path, query, request.headers.get, read)
        except Exception:  # a bug must not look like a dropped connection to the browser
            log.exception("dashboard: %s %s failed", method, path)
            answer = Answer(500, b"internal error; see the updater's log", "text/plain")
        headers, body = security_headers(answer), answer.body
        if len(body) > 1400 and "gzip" in (request.headers.get("Accept-Encoding") or ""):
            body = gzip.compress(body, 5)  # a page of 1,000 items: 600 KiB, 10 times less
            headers.update({"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
        _send_raw(request, answer.status, body, answer.content_type, headers)

    def _push(self, request: BaseHTTPRequestHandler, query: dict[str, list[str]],
              hook: PushHook) -> None:
        read: Callable[[int], bytes] = getattr(request, "body")  # noqa: B009 - the Handler's
        _send(request, *_answer(lambda: hook.answer(request.headers.get, query, read),
                                refused=400))

    def _fleet_post(self, request: BaseHTTPRequestHandler,
                    handle: Callable[[str | None, bytes], tuple[int, Any]]) -> None:
        from updater.serve.hooks import body_length

        assert self._fleet is not None
        read: Callable[[int], bytes] = getattr(request, "body")  # noqa: B009 - the Handler's
        header = request.headers.get("Authorization")
        if not self._fleet.authorized(header):
            return _send(request, 401, {"error": "missing or wrong fleet token"})
        length = body_length(request.headers.get("Content-Length"))
        if isinstance(length, str):
            return _send(request, 413 if "over" in length else 411, {"error": length})
        body = read(length)
        if len(body) < length:
            return _send(request, 400, {"error": "the body ended before its Content-Length"})
        return _send(request, *_guarded(lambda: _answer(lambda: handle(header, body),
                                                        refused=400)))

    def _trigger(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        names = tuple(query.get("name", ()))
        if len(names) > MAX_NAMES or any(not n or len(n) > 255 for n in names):
            return 400, {"error": f"give at most {MAX_NAMES} non-empty ?name= values"}
        try:
            self._control.trigger(names)
        except NotWatched as exc:
            return 404, {"error": str(exc)}
        except EngineError as exc:  # the names cannot be checked now
            return 503, {"error": str(exc)}
        return 202, {"queued": True, "names": list(names)}

    def _decide(self, query: dict[str, list[str]], decision: str) -> tuple[int, Any]:
        names, digests = query.get("name") or [], query.get("digest") or []
        if len(names) != 1 or not names[0] or len(names[0]) > 255 or len(digests) > 1:
            return 400, {"error": "give one ?name= and at most one ?digest="}
        if decision == "skipped" and not digests:
            return 400, {"error": "a skip names the image it rejects: give ?digest="}
        return _answer(lambda: (200, {"name": names[0], "decision": decision,
                                      "digest": self._control.decide(
                                          names[0], digests[0] if digests else None, decision)}),
                       refused=400)

    def _rollback(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        names = query.get("name") or []
        if len(names) != 1 or not names[0] or len(names[0]) > 255:
            return 400, {"error": "give one ?name="}
        return _answer(lambda: (202, {"queued": True, "name": names[0],
                                      "to": self._control.rollback(names[0])}), refused=409)

    def _history(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        from updater.store.history import DEFAULT_LIMIT, parse_limit

        try:
            limit = parse_limit((query.get("limit") or [str(DEFAULT_LIMIT)])[0])
        except ValueError as exc:
            return 400, {"error": str(exc)}
        names = query.get("name") or []
        return 200, self._control.history(names[0] if names else None, limit)


def _guarded(act: Callable[[], tuple[int, Any]]) -> tuple[int, Any]:
    try:
        return act()
    except Exception:  # a bug must not look like a dropped connection to the caller
        log.exception("api: answering failed")
        return 500, {"error": "internal error; see the updater's log"}


def _answer(act: Callable[[], tuple[int, Any]], refused: int) -> tuple[int, Any]:
    """What `act` answers, or its refusal: 404 for a name not watched, 503 when the engine
    cannot be asked, `refused` for anything else the updater turns down."""
    try:
        return act()
    except NotWatched as exc:
        return 404, {"error": str(exc)}
    except EngineError as exc:
        return 503, {"error": str(exc)}
    except UpdaterError as exc:
        return refused, {"error": str(exc)}


def _send(request: BaseHTTPRequestHandler, status: int, body: Any,
          headers: dict[str, str] | None = None) -> None:
    _send_raw(request, status, json.dumps(body).encode(), "application/json", headers)


def _send_raw(request: BaseHTTPRequestHandler, status: int, data: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
    request.send_response(status)
    request.send_header("Content-Type", content_type)
    request.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        request.send_header(key, value)
    request.end_headers()
    request.wfile.write(data)
