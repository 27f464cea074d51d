"""Real CNCF distribution registries on loopback: anonymous, htpasswd Basic, or Bearer token.

The registry's access log is the witness for request economy: `requests()` reads it back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from harness.procs import Process, free_port, port_open, wait_for
from harness.tokenserver import TokenServer

_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<uri>\S+) HTTP/[\d.]+" (?P<status>\d{3}) \S+ '
                     r'"[^"]*" "(?P<agent>[^"]*)"')


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    uri: str
    status: int
    agent: str


class Registry:
    """`docker-registry serve` on 127.0.0.1:<free port>, with optional auth."""

    def __init__(self, root: Path, *, users: dict[str, str] | None = None,
                 token_server: TokenServer | None = None, port: int | None = None,
                 tls: tuple[Path, Path] | None = None, address: str = "127.0.0.1",
                 notify: str | None = None) -> None:
        self.root = root
        self.notify = notify  # a URL the registry posts its event envelopes to
        self.users = users or {}
        self.token_server = token_server
        self.tls = tls
        self.port = port or free_port()
        self.address = address  # loopback, or an engine's bridge (Dockerd.gateway)
        self.host = f"{address}:{self.port}"
        self._process: Process | None = None

    @property
    def log(self) -> Path:
        return self.root / "registry.log"

    def start(self) -> Registry:
        self.root.mkdir(parents=True, exist_ok=True)
        settings: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(self.root / "data")},
                        "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": "harness-fixed-secret"},
        }
        if self.notify is not None:
            settings["notifications"] = {"endpoints": [{
                "name": "updater", "url": self.notify, "timeout": "1s", "threshold": 3,
                "backoff": "1s"}]}
        if self.tls is not None:
            settings["http"]["tls"] = {"certificate": str(self.tls[0]), "key": str(self.tls[1])}
        if self.token_server is not None:
            settings["auth"] = {"token": self.token_server.registry_settings()}
        elif self.users:
            htpasswd = self.root / "htpasswd"
            htpasswd.write_text("".join(
                f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()}\n"
                for user, password in self.users.items()))
            settings["auth"] = {"htpasswd": {"realm": "harness", "path": str(htpasswd)}}
        config = self.root / "config.yml"
        config.write_text(yaml.safe_dump(settings))
        self._process = Process(["docker-registry", "serve", str(config)], self.log,
                                self.root / "registry.pid")
        wait_for(lambda: port_open(self.port, self.address), 20, f"registry on {self.host}")
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    def mark(self) -> int:
        """A position in the access log; `requests(since=mark)` reads what came after it."""
        return self.log.stat().st_size if self.log.exists() else 0

    def requests(self, since: int = 0, agent: str | None = None) -> list[Request]:
        """Requests the registry served since `since`, optionally only from one user agent."""
        with self.log.open("rb") as handle:
            handle.seek(since)
            text = handle.read().decode("utf-8", "replace")
        found = []
        for match in _ACCESS.finditer(text):
            if agent is None or match["agent"].startswith(agent):
                found.append(Request(match["method"], match["uri"], int(match["status"]),
                                     match["agent"]))
        return found

    def manifest_requests(self, since: int = 0, agent: str = "updater/") -> list[Request]:
        """The manifest requests (HEAD and GET) a client sent since `since`."""
        return [r for r in self.requests(since, agent) if "/manifests/" in r.uri]
