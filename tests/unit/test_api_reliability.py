"""The HTTP API under abuse, on a real loopback socket: no timing difference between wrong
tokens worth measuring, malformed requests answered 4xx (never 5xx), and 100 concurrent
triggers that never start overlapping passes of the real daemon loop."""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from updater.core.report import PassReport
from updater.core.settings import Settings
from updater.serve.api import ApiServer
from updater.serve.daemon import Daemon

TOKEN = "correct-horse-battery-staple-0123456789"


class Control:
    def __init__(self, trigger: Callable[[tuple[str, ...]], None] = lambda names: None) -> None:
        self._trigger = trigger

    def trigger(self, names: tuple[str, ...] = ()) -> None:
        self._trigger(names)

    def status(self) -> dict[str, Any]:
        return {"passes": 0}

    def history(self, name: str | None, limit: int) -> list[dict[str, Any]]:
        return []

    def metrics(self) -> bytes:
        return b""

    def pending(self) -> dict[str, Any]:
        return {"as_of": None, "items": []}

    def decide(self, name: str, digest: str | None, decision: str) -> str:
        return digest or ""

    def rollback(self, name: str) -> str:
        return name


@pytest.fixture
def server() -> Iterator[ApiServer]:
    api = ApiServer("127.0.0.1:0", TOKEN, Control()).start()
    yield api
    api.stop()


def test_wrong_tokens_take_as_long_as_each_other(server: ApiServer) -> None:
    """Median response times of missing, short, same-length-wrong and almost-right tokens,
    measured interleaved, differ by less than 1 ms (the loopback round trip itself is ~0.3 ms)."""
    kinds = {"missing": None, "short": "Bearer x", "wrong": "Bearer " + "z" * len(TOKEN),
             "almost": "Bearer " + TOKEN[:-1] + "X", "long": "Bearer " + TOKEN * 50}
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as client:
        for _ in range(200):
            for kind, header in kinds.items():
                headers = {"Authorization": header} if header else {}
                started = time.perf_counter()
                response = client.get("/v1/status", headers=headers)
                times[kind].append(time.perf_counter() - started)
                assert response.status_code == 401
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    print("\n401 median ms: " + ", ".join(f"{k} {v * 1000:.3f}" for k, v in medians.items()))
    assert max(medians.values()) - min(medians.values()) < 0.001, medians


MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET /v1/status HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"a" * 70000 + b"\r\n\r\n",
    b"GET /v1/status HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
    b"POST /v1/update HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    b"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/history?limit=%ff%fe HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    + TOKEN.encode() + b"\r\n\r\n",
    b"GET /v1/status HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
    b"DELETE /v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
    b"PUT /v1/update HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD /v1/health HTTP/1.1\r\nHost: x\r\n\r\n",
]


def _status_of(port: int, raw: bytes) -> int | None:
    """Send raw bytes; the status code answered, or None if the server just closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        # The server may answer (431) and stop reading before all is sent: read the answer.
        with contextlib.suppress(OSError):
            connection.sendall(raw)
            connection.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    if not answer:
        return None
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("raw", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_requests_get_4xx(server: ApiServer, raw: bytes) -> None:
    status = _status_of(server.port, raw)
    assert status is not None and 400 <= status < 500, status
    assert _status_of(server.port, b"GET /v1/health HTTP/1.1\r\n\r\n") == 200  # still serving


def test_unknown_http_version_is_505_as_http_says(server: ApiServer) -> None:
    assert _status_of(server.port, b"GET /v1/status HTTP/9.9\r\n\r\n") == 505


@settings(max_examples=300, deadline=None)
@given(path=st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=80),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]), with_token=st.booleans())
def test_any_path_gets_an_answer_below_500(path: str, method: str, with_token: bool) -> None:
    api = _shared_server()
    header = f"Authorization: Bearer {TOKEN}\r\n" if with_token else ""
    raw = f"{method} /{path} HTTP/1.1\r\nHost: x\r\n{header}Content-Length: 0\r\n\r\n"
    status = _status_of(api.port, raw.encode())
    assert status is not None and status < 500, (path, status)


_SHARED: list[ApiServer] = []


def _shared_server() -> ApiServer:
    """One server for all generated cases (hypothesis does not mix with function fixtures)."""
    if not _SHARED:
        _SHARED.append(ApiServer("127.0.0.1:0", TOKEN, Control()).start())
    return _SHARED[0]


def teardown_module() -> None:
    for api in _SHARED:
        api.stop()


def test_100_concurrent_triggers_never_overlap_passes() -> None:
    """The real daemon loop behind the real API: 100 simultaneous POST /v1/update during a
    pass queue exactly one more pass; never two at once."""
    in_flight, overlap, passes = [0], [0], [0]
    guard = threading.Lock()
    first_started = threading.Event()

    def one_pass(stop_requested: Callable[[], bool], names: tuple[str, ...]) -> PassReport:
        with guard:
            in_flight[0] += 1
            overlap[0] = max(overlap[0], in_flight[0])
            passes[0] += 1
        first_started.set()
        time.sleep(0.5)
        with guard:
            in_flight[0] -= 1
        return PassReport()

    daemon = Daemon(Settings(interval=3600, update_on_start=True), one_pass)
    api = ApiServer("127.0.0.1:0", TOKEN, Control(daemon.trigger)).start()
    runner = threading.Thread(target=daemon.run, daemon=True)
    runner.start()
    try:
        assert first_started.wait(10)

        def post(_: int) -> int:
            return httpx.post(f"http://127.0.0.1:{api.port}/v1/update",
                              headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).status_code

        sent = time.monotonic()
        with ThreadPoolExecutor(100) as pool:
            codes = list(pool.map(post, range(100)))
        sending = time.monotonic() - sent
        time.sleep(1.5)  # the queued pass runs and ends
    finally:
        daemon.request_stop()
        runner.join(10)
        api.stop()
    print(f"\n100 triggers in {sending:.2f}s: {codes.count(202)} accepted, "
          f"{passes[0]} passes, at most {overlap[0]} at once")
    assert codes == [202] * 100
    assert overlap[0] == 1
    # Triggers coalesce: at most one more pass for every pass they arrived during.
    assert passes[0] <= 2 + sending / 0.5, (passes, sending)
