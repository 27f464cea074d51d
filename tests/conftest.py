"""Fixtures: a real engine and real registries for the whole session, started on first use and
stopped at the end (also when tests fail). The engine is the system's dockerd 20.10 unless
`UT_DOCKERD` / `UT_DOCKER_ROOT` name another, with `UT_CONTAINERD_STORE=1` for the containerd
image store (harness/dockerd.py)."""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import pytest

from harness import run_root
from harness.dockerd import Dockerd, EngineSetup
from harness.registry import Registry
from harness.tokenserver import TokenServer

if TYPE_CHECKING:
    from harness.sinks import JsonSink

USERS = {"alice": "wonder-land-42"}
_counter = itertools.count()


@pytest.fixture(scope="session")
def root() -> Path:
    return run_root()


@pytest.fixture(scope="session")
def engine(root: Path) -> Iterator[Dockerd]:
    daemon = Dockerd(root / "engine", EngineSetup.from_env()).start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def registry(root: Path) -> Iterator[Registry]:
    server = Registry(root / "registry-anon").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def basic_registry(root: Path) -> Iterator[Registry]:
    server = Registry(root / "registry-basic", users=USERS).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def token_server(root: Path) -> Iterator[TokenServer]:
    server = TokenServer(root / "tokens", USERS).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def token_registry(root: Path, token_server: TokenServer) -> Iterator[Registry]:
    server = Registry(root / "registry-token", token_server=token_server).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def json_sink() -> Iterator[JsonSink]:
    """A JSON webhook that records what it receives (a notification destination)."""
    from harness.sinks import JsonSink

    sink = JsonSink().start()
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
def build_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build context of the updater's image (the project as cloned, plus its wheels)."""
    from harness import updater_image

    return updater_image.context(tmp_path_factory.mktemp("updater-image"))


@pytest.fixture
def unique() -> str:
    """A short name no other test uses, for repositories and containers."""
    return f"t{next(_counter)}{uuid.uuid4().hex[:6]}"


@pytest.fixture
def containers(engine: Dockerd) -> Iterator[list[str]]:
    """Names of containers a test created; all removed afterwards."""
    created: list[str] = []
    yield created
    for name in created:
        with contextlib.suppress(docker.errors.NotFound):
            engine.client.containers.get(name).remove(force=True)
