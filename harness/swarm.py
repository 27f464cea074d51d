"""A multi-node swarm on one machine: each node a dockerd in its own network namespace, the
namespaces joined by a bridge in a "hub" namespace that has no link to the root namespace and
no default route, and a registry inside the hub every node reaches (HARNESS.md).

Everything is named after the run (namespaces, cgroup parents) and torn down by PID and name
in `stop()`, also after a failed start.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import requests.exceptions
import yaml

from harness.dockerd import EngineSetup
from harness.procs import Process, wait_for

SUBNET = "192.168.77"
_instances = itertools.count()
REGISTRY_PORT = 5200
# Inside each node's own mount namespace, its engine also listens here: the same path on every
# node, as /var/run/docker.sock is on real machines (a global service mounts one path).
NODE_SOCKET_DIR = "/run/updater-test-node"
NODE_SOCKET = f"{NODE_SOCKET_DIR}/docker.sock"
START_TIMEOUT = 60.0


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class Node:
    index: int
    root: Path
    namespace: str
    process: Process | None = None

    @property
    def address(self) -> str:
        return f"{SUBNET}.{10 + self.index}"

    @property
    def host(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    @property
    def name(self) -> str:
        return f"node{self.index}"

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, version="auto", timeout=120)


class Swarm:
    """`nodes` engines; the first `managers` of them managers, node 1 the first leader."""

    def __init__(self, root: Path, nodes: int = 3, managers: int = 1,
                 engine: EngineSetup | str = "dockerd",
                 registry_users: dict[str, str] | None = None) -> None:
        self.root = root
        self.setup = EngineSetup(engine) if isinstance(engine, str) else engine
        self.binary = self.setup.binary
        self.tag = f"ut{os.getpid() % 100000}s{next(_instances)}"
        self.hub = f"{self.tag}hub"
        self.nodes = [Node(i, root / f"node{i}", f"{self.tag}n{i}") for i in range(1, nodes + 1)]
        self.managers = managers
        self.registry_users = registry_users or {}
        self.registry_host = f"{SUBNET}.1:{REGISTRY_PORT}"
        self._registry: Process | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> Swarm:
        try:
            self._network()
            self._start_registry()
            for node in self.nodes:
                self._start_node(node)
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                with contextlib.suppress(Exception):
                    node.client().swarm.leave(force=True)
                node.process.stop(timeout=30)
                node.process = None
        if self._registry is not None:
            self._registry.stop()
            self._registry = None
        for namespace in [node.namespace for node in self.nodes] + [self.hub]:
            subprocess.run(["ip", "netns", "del", namespace], check=False, capture_output=True)
        names = {f"{self.tag}-{node.name}" for node in self.nodes}
        # os.walk, not Path.glob: other engines (parallel test workers) remove their containers'
        # cgroups while this walks, and a folder that vanished must not fail the teardown.
        for parent, folders, _ in os.walk("/sys/fs/cgroup"):
            for folder in names.intersection(folders):
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(parent, folder))
        for node in self.nodes:
            shutil.rmtree(node.root / "data", ignore_errors=True)

    def stop_node(self, node: Node) -> None:
        """Stop one node's engine (as a machine that went down); `start_node` brings it back."""
        if node.process is not None:
            node.process.stop(timeout=30)
            node.process = None

    def start_node(self, node: Node) -> None:
        """Start a stopped node's engine again and wait until the swarm has it ready."""
        self._start_node(node)
        manager = self.nodes[0].client()
        wait_for(lambda: any(n.attrs["Description"]["Hostname"] == node.name
                             and n.attrs["Status"]["State"] == "ready"
                             for n in manager.nodes.list()), 2 * START_TIMEOUT,
                 f"{node.name} ready again")

    def _network(self) -> None:
        _ip("netns", "add", self.hub)
        _ip("-n", self.hub, "link", "set", "lo", "up")
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "addr", "add", f"{SUBNET}.1/24", "dev", "br0")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        for node in self.nodes:
            _ip("netns", "add", node.namespace)
            _ip("-n", node.namespace, "link", "set", "lo", "up")
            _ip("-n", self.hub, "link", "add", f"h{node.index}", "type", "veth", "peer", "name",
                "eth0", "netns", node.namespace)
            _ip("-n", self.hub, "link", "set", f"h{node.index}", "master", "br0", "up")
            _ip("-n", node.namespace, "addr", "add", f"{node.address}/24", "dev", "eth0")
            _ip("-n", node.namespace, "link", "set", "eth0", "up")

    def in_hub(self, argv: list[str]) -> list[str]:
        """`argv` run inside the hub namespace (where the registry and every node are)."""
        return ["nsenter", f"--net=/run/netns/{self.hub}", *argv]

    def _start_registry(self) -> None:
        directory = self.root / "registry"
        directory.mkdir(parents=True, exist_ok=True)
        settings: dict[str, object] = {
            "version": 0.1, "log": {"level": "info"},
            "storage": {"filesystem": {"rootdirectory": str(directory / "data")}},
            "http": {"addr": self.registry_host, "secret": "harness-fixed-secret"},
        }
        if self.registry_users:
            import bcrypt

            htpasswd = directory / "htpasswd"
            htpasswd.write_text("".join(
                f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()}\n"
                for user, password in self.registry_users.items()))
            settings["auth"] = {"htpasswd": {"realm": "harness", "path": str(htpasswd)}}
        (directory / "config.yml").write_text(yaml.safe_dump(settings))
        self._registry = Process(self.in_hub(["docker-registry", "serve",
                                              str(directory / "config.yml")]),
                                 directory / "registry.log", directory / "registry.pid")

    @property
    def registry_log(self) -> Path:
        return self.root / "registry" / "registry.log"

    def _start_node(self, node: Node) -> None:
        node.root.mkdir(parents=True, exist_ok=True)
        (node.root / "daemon.json").write_text(json.dumps(
            {**self.setup.daemon_config(), "deprecated-key-path": str(node.root / "key.json")}))
        Path(NODE_SOCKET_DIR).mkdir(parents=True, exist_ok=True)  # an empty mount point
        command = (f"mount -t tmpfs -o size=1m,mode=0755 tmpfs {NODE_SOCKET_DIR} && "
                   f"hostname {node.name} && exec {self.binary} -H unix://{NODE_SOCKET} "
                   f"--config-file {node.root / 'daemon.json'} --data-root {node.root / 'data'} "
                   f"--exec-root {node.root / 'exec'} -H {node.host} "
                   f"--pidfile {node.root / 'docker.pid'} --cgroup-parent /{self.tag}-{node.name} "
                   f"--insecure-registry {self.registry_host} --log-level warn")
        node.process = Process(["nsenter", f"--net=/run/netns/{node.namespace}", "unshare",
                                "--uts", "--mount", "sh", "-c", command], node.root / "dockerd.log",
                               node.root / "dockerd.harness.pid", env=self.setup.environment())
        wait_for(lambda: _answers(node), START_TIMEOUT, f"dockerd of {node.name}")

    def _form(self) -> None:
        first = self.nodes[0].client()
        first.swarm.init(advertise_addr=self.nodes[0].address,
                         listen_addr=f"{self.nodes[0].address}:2377")
        tokens = first.swarm.attrs["JoinTokens"]
        for node in self.nodes[1:]:
            role = "Manager" if node.index <= self.managers else "Worker"
            node.client().swarm.join(remote_addrs=[f"{self.nodes[0].address}:2377"],
                                     join_token=tokens[role], advertise_addr=node.address,
                                     listen_addr=f"{node.address}:2377")
        wait_for(lambda: len([n for n in first.nodes.list()
                              if n.attrs["Status"]["State"] == "ready"]) == len(self.nodes),
                 START_TIMEOUT, "every node ready")


def _answers(node: Node) -> bool:
    if node.process is not None and not node.process.alive():
        raise RuntimeError(f"dockerd of {node.name} exited: "
                           f"{(node.root / 'dockerd.log').read_text()[-2000:]}")
    if not (node.root / "docker.sock").exists():
        return False
    try:
        return bool(docker.DockerClient(base_url=node.host, version="auto", timeout=2).ping())
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return False
