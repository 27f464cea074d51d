"""The dashboard's cost: in a real headless Chromium, the page of 1,000 items (a synthetic pass
report through the real board, templates and API server) loading and filtering; and the RSS of
a real `updater run` (20 containers, a pass every 2 s) with the dashboard off and on (logged
in, the page and its state polled 200 times).

    .venv/bin/python -m bench.dashboard [ITEMS]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from bench.pass_time import workload
from bench.soak import rss_kib
from harness.dockerd import Dockerd
from harness.procs import free_port
from harness.registry import Registry
from updater.core.report import ItemReport, Outcome, PassReport
from updater.serve.api import ApiServer
from updater.serve.board import Board
from updater.serve.dashboard import Dashboard

TOKEN = "bench-dashboard-token-0123456789"
OUTCOMES = (Outcome.UP_TO_DATE, Outcome.UP_TO_DATE, Outcome.UP_TO_DATE, Outcome.AVAILABLE,
            Outcome.WAITING, Outcome.UPDATED, Outcome.HELD_BACK, Outcome.ERROR)


class Synthetic:
    """A desk of `count` items on the real board."""

    def __init__(self, count: int) -> None:
        self.board = Board()
        self.board.after_pass(PassReport(items=[ItemReport(
            f"app-{i}", f"registry.example:5000/team{i % 20}/app-{i}:1.{i % 7}",
            OUTCOMES[i % len(OUTCOMES)], new_digest="sha256:" + f"{i:064x}",
            reason="waiting for approval" if OUTCOMES[i % len(OUTCOMES)] is Outcome.WAITING
            else None) for i in range(count)]), full=True)

    def rows(self) -> list[dict[str, Any]]:
        return self.board.rows("node-1")

    def version(self) -> str:
        return str(self.board.version)

    def item(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.board.item(kind, name)

    def history(self, name: str, limit: int) -> list[dict[str, Any]]:
        return []

    def status(self) -> dict[str, Any]:
        return {"running": False, "passes": 1, "last_pass": None, "next_due": None,
                "last_error": None}

    def act(self, action: str, name: str | None, kind: str, digest: str | None) -> str:
        return "not in a benchmark"


class NoControl:
    def status(self) -> dict[str, Any]:
        return {}


def browser() -> webdriver.Chrome:
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update",
                     "--window-size=1400,900", "--proxy-server=http://127.0.0.1:9",
                     "--proxy-bypass-list=127.0.0.1"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


FILTER = """
const [id, value] = arguments;
const field = document.getElementById(id);
const started = performance.now();
field.value = value;
field.dispatchEvent(new Event(id === 'f-q' ? 'input' : 'change', {bubbles: true}));
document.body.offsetHeight;  // the layout it causes, too
const took = performance.now() - started;
return [took, document.querySelectorAll('#items tbody tr:not([hidden])').length];
"""


def page_in_browser(count: int) -> None:
    desk = Synthetic(count)
    server = ApiServer("127.0.0.1:0", TOKEN, NoControl())  # type: ignore[arg-type]
    server.dashboard = Dashboard(desk, server.token_matches, 3600)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    driver = browser()
    try:
        driver.get(base + "/login")
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.XPATH, "//button[normalize-space()='Log in']").click()
        loads: list[list[float]] = []
        filters: dict[str, list[float]] = {"text": [], "text cleared": [], "state": [],
                                           "state cleared": []}
        shown = {}
        for _ in range(5):
            driver.get(base + "/")
            timing = driver.execute_script(
                "const n = performance.getEntriesByType('navigation')[0];"
                "return [n.responseEnd - n.requestStart, n.domContentLoadedEventEnd,"
                " n.loadEventEnd, n.transferSize];")
            loads.append(timing)
            for what, (field, value) in {"text": ("f-q", "app-12"),
                                         "text cleared": ("f-q", ""),
                                         "state": ("f-state", "waiting"),
                                         "state cleared": ("f-state", "")}.items():
                took, shown[what] = driver.execute_script(FILTER, field, value)
                filters[what].append(took)
        cookie = driver.get_cookie("updater_session")
        assert cookie is not None
        with httpx.Client(base_url=base, cookies={"updater_session": cookie["value"]}) as c:
            renders = []
            for _ in range(5):
                started = time.perf_counter()
                answer = c.get("/ui/state?v=none")
                renders.append(time.perf_counter() - started)
            state_kib = len(answer.content) / 1024
    finally:
        driver.quit()
        server.stop()
    median = [statistics.median(t[i] for t in loads) for i in range(4)]
    print(f"page of {count} items: {median[3] / 1024:.0f} KiB, answered in {median[0]:.0f} ms, "
          f"DOMContentLoaded at {median[1]:.0f} ms, load at {median[2]:.0f} ms (median of 5)")
    for what, times in filters.items():
        print(f"filter {what}: {statistics.median(times):.1f} ms median, "
              f"{max(times):.1f} ms max, {shown[what]} rows shown")
    print(f"/ui/state with every row changed: {statistics.median(renders) * 1000:.0f} ms, "
          f"{state_kib:.0f} KiB")


def daemon_rss(engine: Dockerd, root: Path, dashboard: bool) -> tuple[int, int]:
    """RSS of `updater run` after 20 passes, then after 200 page views (or status calls)."""
    port = free_port()
    home = root / ("on" if dashboard else "off")
    home.mkdir()
    config = home / "run.yml"
    config.write_text(yaml.safe_dump({
        "interval": "2s", "state_dir": str(home / "state"), "log_level": "warning",
        "http_api": {"listen": f"127.0.0.1:{port}", "token": TOKEN, "dashboard": dashboard}}))
    env = {**os.environ, "DOCKER_HOST": engine.host, "UPDATER_CONFIG": str(config),
           "HOME": str(home)}
    daemon = subprocess.Popen([sys.executable, "-m", "updater", "run"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        deadline = time.monotonic() + 300
        with httpx.Client(base_url=base, timeout=10) as client:
            while time.monotonic() < deadline:
                try:
                    if client.get("/v1/status", headers=auth).json()["passes"] >= 20:
                        break
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                time.sleep(1)
            before = rss_kib(daemon.pid)
            if dashboard:
                client.post("/login", data={"token": TOKEN})
            for index in range(200):
                if dashboard:
                    client.get("/" if index % 2 else "/ui/state?v=x").raise_for_status()
                else:
                    client.get("/v1/status", headers=auth).raise_for_status()
            time.sleep(5)
            return before, rss_kib(daemon.pid)
    finally:
        daemon.terminate()
        daemon.wait(60)


def memory() -> None:
    root = Path(tempfile.mkdtemp(prefix="updater-bench-dash.", dir="/var/tmp"))
    engine = Dockerd(root / "engine").start()
    registry = Registry(root / "registry").start()
    try:
        workload(engine, registry.host, 20, 4)
        for dashboard in (False, True):
            before, after = daemon_rss(engine, root, dashboard)
            print(f"updater run, dashboard {'on' if dashboard else 'off'}: "
                  f"{before / 1024:.1f} MiB after 20 passes, {after / 1024:.1f} MiB after 200 "
                  f"{'page and state requests' if dashboard else 'status requests'}")
    finally:
        registry.stop()
        engine.stop()


def main(argv: list[str]) -> int:
    page_in_browser(int(argv[0]) if argv else 1000)
    memory()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
