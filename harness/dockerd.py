"""A real dockerd on its own socket and directories, started and stopped by the harness."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

from harness.procs import Process, wait_for

START_TIMEOUT = 60.0


class Dockerd:
    """One engine: `binary` (the system's dockerd 20.10 unless another is named) under `root`."""

    def __init__(self, root: Path, binary: str = "dockerd") -> None:
        self.root = root
        self.binary = binary
        self.socket = root / "docker.sock"
        self.host = f"unix://{self.socket}"
        self._process: Process | None = None
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.host, version="auto", timeout=120)
        return self._client

    def start(self) -> Dockerd:
        self.root.mkdir(parents=True, exist_ok=True)
        argv = [
            self.binary,
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "-H", self.host,
            "--pidfile", str(self.root / "docker.pid"),
            # Tests never touch the host's firewall; the registries are on loopback.
            "--iptables=false",
            "--log-level", "warn",
        ]
        self._process = Process(argv, self.root / "dockerd.log", self.root / "dockerd.harness.pid")
        wait_for(self._ready, START_TIMEOUT, f"dockerd ({self.binary}) at {self.host}")
        return self

    def _ready(self) -> bool:
        if self._process is not None and not self._process.alive():
            log = self.root / "dockerd.log"
            raise RuntimeError(f"dockerd exited; see {log}:\n{log.read_text()[-2000:]}")
        if not self.socket.exists():
            return False
        try:
            return bool(docker.DockerClient(base_url=self.host, version="auto", timeout=2).ping())
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return False

    def version(self) -> str:
        return str(self.client.version()["Version"])

    def stop(self) -> None:
        """Remove every container, then stop the engine (SIGTERM by PID), kill whatever of
        ours outlived it, and remove its files."""
        if self._client is not None:
            self._remove_containers()
            self._client.close()
            self._client = None
        if self._process is not None:
            self._process.stop(timeout=60)
            self._process = None
        _kill_leftovers(self.root)
        _unmount_below(self.root)
        shutil.rmtree(self.root / "data", ignore_errors=True)
        shutil.rmtree(self.root / "exec", ignore_errors=True)

    def restart(self, down: float = 0.0) -> None:
        """Stop the engine (SIGTERM by PID; it stops its containers as on a host reboot) and
        start it again on the same data after `down` seconds; containers come back by their
        restart policies."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._process is not None:
            self._process.stop(timeout=60)
            self._process = None
        time.sleep(down)
        self.start()

    def _remove_containers(self) -> None:
        """Force-remove all containers first: an engine stopping hundreds of them itself can
        outlast its stop timeout and be killed, leaving their shims behind."""
        try:
            containers = self.client.api.containers(all=True)
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return

        def remove(container: dict[str, object]) -> None:
            with contextlib.suppress(docker.errors.DockerException,
                                     requests.exceptions.RequestException):
                self.client.api.remove_container(str(container["Id"]), force=True)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(remove, containers))


def _kill_leftovers(root: Path) -> None:
    """SIGKILL processes started for this engine (shims name its exec root on their command
    line) and the container processes under them; found by PID in /proc, never by name."""
    marker = str(root).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "cmdline").read_bytes():
                continue
            children = [int(c) for task in (entry / "task").iterdir()
                        for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for pid in [*children, int(entry.name)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _unmount_below(root: Path) -> None:
    """Lazily unmount anything dockerd may have left mounted under `root`."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    targets = [line.split()[1] for line in mounts if line.split()[1].startswith(str(root))]
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)
