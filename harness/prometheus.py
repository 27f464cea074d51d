"""A real Prometheus server (Debian's package) on loopback that scrapes the updater's /metrics
with its bearer token; the tests read the scraped series back through its query API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import yaml

from harness.procs import Process, free_port, port_open, wait_for


class Prometheus:
    def __init__(self, root: Path, target: str, token: str) -> None:
        self.root = root
        self.target = target
        self.token = token
        self.port = free_port()
        self._process: Process | None = None

    def start(self) -> Prometheus:
        self.root.mkdir(parents=True, exist_ok=True)
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                  "scrape_configs": [{"job_name": "updater",
                                      "authorization": {"type": "Bearer",
                                                        "credentials": self.token},
                                      "static_configs": [{"targets": [self.target]}]}]}
        (self.root / "prometheus.yml").write_text(yaml.safe_dump(config))
        argv = ["prometheus", f"--config.file={self.root / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}"]
        self._process = Process(argv, self.root / "prometheus.log", self.root / "prometheus.pid")
        wait_for(lambda: port_open(self.port), 30, "prometheus")
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    def query(self, expression: str) -> list[dict[str, Any]]:
        response = httpx.get(f"http://127.0.0.1:{self.port}/api/v1/query",
                             params={"query": expression}, timeout=5)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result
