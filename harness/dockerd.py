"""A real dockerd on its own socket, directories and bridge, started and stopped by the harness.

Which dockerd is an `EngineSetup`: the system's 20.10 by default; from the environment
(`EngineSetup.from_env`) another binary, the folders put first in its PATH (where it finds its
managed containerd, the shim, docker-init and docker-proxy) and the image store:

    UT_DOCKER_ROOT=<root>    a root unpacked from Debian packages (scripts/fetch-docker-forky.sh):
                             <root>/usr/sbin/dockerd, <root>/usr/bin and usr/sbin first in PATH
    UT_DOCKERD=<binary>      the dockerd binary (wins over UT_DOCKER_ROOT's); a binary at
                             <root>/usr/sbin/dockerd next to a <root>/usr/bin/containerd gets
                             that root's folders first in PATH too
    UT_CONTAINERD_STORE=1    the containerd image store (`features.containerd-snapshotter`,
                             the default of fresh Docker 29 installs); `start()` checks that
                             `docker info` reports it

Every engine gets a bridge of its own (`--bridge`, a /24 no route of the machine uses) instead
of docker0: two engines in one network namespace would otherwise share docker0 and hand out
the same addresses.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

from harness.procs import Process, wait_for

START_TIMEOUT = 60.0
SNAPSHOTTER = "io.containerd.snapshotter.v1"
_bridges = itertools.count()
BRIDGES = "10.213.0.0/16"  # every engine's bridge is a /24 of it
BRIDGE_LOCK = "/var/tmp/updater-test-bridges.lock"


@dataclass(frozen=True)
class EngineSetup:
    """Which dockerd to start and how (module docstring)."""

    binary: str = "dockerd"
    path: tuple[str, ...] = ()
    containerd_store: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> EngineSetup:
        root = environ.get("UT_DOCKER_ROOT")
        binary = environ.get("UT_DOCKERD") or (f"{root}/usr/sbin/dockerd" if root else "dockerd")
        if root:
            path: tuple[str, ...] = (f"{root}/usr/bin", f"{root}/usr/sbin")
        elif os.path.isabs(binary) and (Path(binary).parent.parent / "bin/containerd").exists():
            path = (str(Path(binary).parent.parent / "bin"), str(Path(binary).parent))
        else:
            path = ()
        store = environ.get("UT_CONTAINERD_STORE", "").strip().lower() not in ("", "0", "false",
                                                                               "no")
        return cls(binary, path, store)

    def environment(self) -> dict[str, str]:
        """The environment of the dockerd process: ours, with `path` first in PATH."""
        env = dict(os.environ)
        if self.path:
            env["PATH"] = os.pathsep.join([*self.path, env.get("PATH", "/usr/sbin:/usr/bin")])
        return env

    def daemon_config(self) -> dict[str, object]:
        """The settings of its --config-file."""
        if self.containerd_store:
            return {"features": {"containerd-snapshotter": True}}
        return {}

    def describe(self) -> str:
        store = "containerd image store" if self.containerd_store else "graph driver"
        return f"{self.binary} ({store})"


def image_store(info: Mapping[str, object]) -> str:
    """`containerd` when `docker info` says the containerd image store is in use, else
    `graphdriver` (overlay2, vfs, ...)."""
    status = info.get("DriverStatus") or []
    assert isinstance(status, list)
    if any(list(pair) == ["driver-type", SNAPSHOTTER] for pair in status):
        return "containerd"
    return "graphdriver"


class Dockerd:
    """One engine under `root`: the system's dockerd 20.10, or what `setup` (an EngineSetup,
    or just a binary) names."""

    def __init__(self, root: Path, setup: EngineSetup | str = "dockerd") -> None:
        self.root = root
        self.setup = EngineSetup(setup) if isinstance(setup, str) else setup
        self.binary = self.setup.binary
        self.socket = root / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.bridge: str | None = None
        self._process: Process | None = None
        self._client: docker.DockerClient | None = None

    def gateway(self) -> str:
        """The address of the engine's bridge on the host: what its containers reach the host
        at (a registry listening there serves both the engine and containers)."""
        assert self.bridge is not None, "the engine is not started"
        shown = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", self.bridge],
                               check=True, capture_output=True, text=True).stdout
        return shown.split(" inet ", 1)[1].split("/", 1)[0]

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.host, version="auto", timeout=120)
        return self._client

    def start(self) -> Dockerd:
        """Start the engine and wait until it answers; on failure nothing of it is left."""
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "daemon.json"
        # Registries on the engines' own bridges (their gateway addresses, which containers
        # reach) are plain HTTP, as loopback ones are.
        config.write_text(json.dumps({**self.setup.daemon_config(),
                                      "insecure-registries": [BRIDGES]}))
        try:
            if self.bridge is None:
                self.bridge = _make_bridge(self.root)
            argv = [
                self.binary,
                "--config-file", str(config),
                "--data-root", str(self.root / "data"),
                "--exec-root", str(self.root / "exec"),
                "-H", self.host,
                "--pidfile", str(self.root / "docker.pid"),
                "--bridge", self.bridge,
                # Tests never touch the host's firewall; the registries are on loopback.
                "--iptables=false",
                "--log-level", "warn",
            ]
            self._process = Process(argv, self.root / "dockerd.log",
                                    self.root / "dockerd.harness.pid",
                                    env=self.setup.environment())
            wait_for(self._ready, START_TIMEOUT,
                     f"dockerd ({self.setup.describe()}) at {self.host}")
            store = self.image_store()
            wanted = "containerd" if self.setup.containerd_store else "graphdriver"
            if store != wanted:
                raise RuntimeError(f"dockerd {self.binary} uses the {store} image store, "
                                   f"not the {wanted} one that was asked for")
        except BaseException:
            self.stop()
            raise
        return self

    def image_store(self) -> str:
        """`containerd` or `graphdriver`, as `docker info` reports it."""
        return image_store(self.client.info())

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
        if self.bridge is not None:
            subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True)
            (self.root / "bridge").unlink(missing_ok=True)
            self.bridge = None

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


def _make_bridge(root: Path) -> str:
    """A bridge for one engine, `ut<pid>b<n>` (a leftover of a dead process that had our PID
    is replaced), with the first 10.213.X.1/24 that overlaps no
    route of the machine (another run's bridge included); its name is kept in `root/bridge`
    so scripts/test.sh can remove it after a run that was cut short."""
    name = f"ut{os.getpid()}b{next(_bridges)}"
    subprocess.run(["ip", "link", "del", name], check=False, capture_output=True)
    subprocess.run(["ip", "link", "add", "name", name, "type", "bridge"], check=True,
                   capture_output=True)
    (root / "bridge").write_text(name + "\n")
    start = os.getpid() % 200
    # Runs in parallel (pytest-xdist workers) choose under one lock: the route a bridge adds is
    # what keeps the next chooser off its subnet.
    with open(BRIDGE_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for offset in range(250):
            subnet = ipaddress.ip_network(f"10.213.{(start + offset) % 250}.0/24")
            if any(subnet.overlaps(used) for used in _routes()):
                continue
            added = subprocess.run(["ip", "addr", "add", f"{subnet[1]}/24", "dev", name],
                                   check=False, capture_output=True)
            if added.returncode == 0:
                subprocess.run(["ip", "link", "set", name, "up"], check=True,
                               capture_output=True)
                return name
    subprocess.run(["ip", "link", "del", name], check=False, capture_output=True)
    raise RuntimeError("no free 10.213.X.0/24 subnet for an engine's bridge")


def _routes() -> list[ipaddress.IPv4Network]:
    """The IPv4 prefixes routed on this machine (the default route left out)."""
    output = subprocess.run(["ip", "-4", "route", "show", "table", "all"], check=True,
                            capture_output=True, text=True).stdout
    routes = []
    for line in output.splitlines():
        # "10.0.0.0/8 dev x ...", or with a type first: "local 10.0.0.1 dev x ...".
        for word in line.split()[:2]:
            with contextlib.suppress(ValueError):
                routes.append(ipaddress.ip_network(word, strict=False))
                break
    return [r for r in routes if isinstance(r, ipaddress.IPv4Network) and r.prefixlen > 0]


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
