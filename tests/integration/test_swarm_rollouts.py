# mypy: disable-error-code="no-untyped-call"
"""Service rollouts that outlive the updater that started them, on a real 3-node swarm: an
updater SIGKILLed mid-rollout, and a leader whose engine stops mid-rollout. The next updater
(restarted, or the new leader's) finishes the story: rolls back or reports `updated`, once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from harness import images
from harness.dockerd import EngineSetup
from harness.swarm import Swarm
from tests.conftest import USERS
from tests.integration.helpers import updater_env

pytestmark = [pytest.mark.engine, pytest.mark.slow]
USER, PASSWORD = next(iter(USERS.items()))
AUTH = {"username": USER, "password": PASSWORD}
# Tasks of a bad release run 2 s, then exit: the swarm's update monitor sees them fail.
CRASHES = '["sh", "-c", "sleep 2; exit 3"]'
INTERVAL = 2.0


@pytest.fixture(scope="module")
def swarm(root: Path) -> Iterator[Swarm]:
    cluster = Swarm(root / "rollouts", nodes=3, managers=1, engine=EngineSetup.from_env(),
                    registry_users=USERS).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _env(swarm: Swarm, node: int, home: Path, extra: dict[str, Any] | None = None,
         config: str = "updater.yml") -> dict[str, str]:
    return updater_env(swarm.nodes[node - 1].host, home, {
        "state_dir": str(home / f"state-{node}"),
        "registries": {swarm.registry_host: {"insecure": True, **AUTH}}, **(extra or {})},
        f"{node}-{config}")


def _start(swarm: Swarm, node: int, home: Path, args: list[str],
           extra: dict[str, Any] | None = None, log: Path | None = None,
           config: str = "updater.yml") -> subprocess.Popen[str]:
    """The real updater against node N's engine, in the hub namespace, in the background."""
    output = log.open("w") if log is not None else subprocess.PIPE
    return subprocess.Popen(swarm.in_hub([sys.executable, "-m", "updater", *args]),
                            env=_env(swarm, node, home, extra, config), text=True,
                            stdout=output, stderr=subprocess.STDOUT if log else subprocess.PIPE)


def _run(swarm: Swarm, node: int, home: Path, args: list[str],
         extra: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(swarm.in_hub([sys.executable, "-m", "updater", *args]),
                          env=_env(swarm, node, home, extra), capture_output=True, text=True,
                          timeout=600, check=False)


def _pass(swarm: Swarm, node: int, home: Path,
          scope: str) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """One `updater update` pass over the items of `scope` (not by name: a name would try a
    rolled-back digest again); the item named `scope`, and the process."""
    result = _run(swarm, node, home, ["update", "--json"], {"scope": scope})
    assert "Traceback" not in result.stderr, result.stderr
    return _items(result.stdout)[scope], result


def _items(output: str) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in json.loads(output)["items"]}


def _create(client: docker.DockerClient, name: str, image: str, digest: str) -> None:
    """4 replicas, one at a time with 5 s between them, failure action pause (the docker
    CLI's default; the SDK's is continue); the swarm's defaults otherwise (monitor 5 s,
    restart on any exit)."""
    client.api.create_service(
        docker.types.TaskTemplate(docker.types.ContainerSpec(f"{image}@{digest}")),
        name=name, mode=docker.types.ServiceMode("replicated", replicas=4),
        labels={"updater.enable": "true", "updater.scope": name},
        update_config=docker.types.UpdateConfig(parallelism=1, delay=5_000_000_000,
                                                failure_action="pause"))


def _state(client: docker.DockerClient, name: str) -> str:
    return str((client.api.inspect_service(name).get("UpdateStatus") or {}).get("State"))


def _wait(condition: Any, timeout: float, what: Any) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, f"not within {timeout:.0f}s: {what()}"
        time.sleep(0.25)


def _running(client: docker.DockerClient, name: str, digest: str) -> int:
    tasks = client.api.tasks(filters={"service": name, "desired-state": "running"})
    return sum(1 for t in tasks if t["Status"]["State"] == "running"
               and t["Spec"]["ContainerSpec"]["Image"].endswith(digest))


def _history(swarm: Swarm, node: int, home: Path, name: str) -> list[dict[str, Any]]:
    result = _run(swarm, node, home, ["history", "--json", name])
    if result.returncode == 2 and "no history" in result.stderr:
        return []
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def _killed_mid_rollout(swarm: Swarm, home: Path, name: str) -> None:
    """`updater update NAME` SIGKILLed once the swarm's rolling update it started runs."""
    manager = swarm.nodes[0].client()
    run = _start(swarm, 1, home, ["update", "--json", name])
    _wait(lambda: _state(manager, name) == "updating" or run.poll() is not None, 60,
          lambda: manager.api.inspect_service(name))
    assert run.poll() is None, run.communicate()
    run.kill()
    run.communicate(timeout=30)
    assert run.returncode == -9


@pytest.mark.parametrize("good", [False, True], ids=["failing-image", "good-image"])
def test_updater_killed_mid_rollout_finishes_it_next_pass(
        swarm: Swarm, unique: str, tmp_path: Path, good: bool) -> None:
    """SIGKILL while following a rollout: the next pass on the same node rolls a failing one
    back (`rolled-back`) or reports a good one `updated`, once; the pass after it changes
    nothing and says so; history has the outcome."""
    manager = swarm.nodes[0].client()
    manager.login(username=USER, password=PASSWORD, registry=swarm.registry_host)
    image = f"{swarm.registry_host}/kill/{unique}:latest"
    first = images.release(manager, image, "1", AUTH)
    _create(manager, unique, image, first)
    _wait(lambda: _running(manager, unique, first) == 4, 120, lambda: _state(manager, unique))
    second = images.release(manager, image, "2", AUTH, keep_local=False,
                            **({} if good else {"cmd": CRASHES}))
    _killed_mid_rollout(swarm, tmp_path, unique)
    killed_at = time.monotonic()

    item, result = _pass(swarm, 1, tmp_path, unique)

    took = time.monotonic() - killed_at
    print(f"{'good' if good else 'failing'} image, next pass: {item['outcome']} in {took:.1f}s"
          f" ({item['reason']})")
    expected = "updated" if good else "rolled-back"
    assert item["outcome"] == expected, (item, result.stderr[-3000:])
    assert (item["old_digest"], item["new_digest"]) == (first, second)
    assert result.returncode == (0 if good else 1)
    end = second if good else first
    _wait(lambda: _running(manager, unique, end) == 4, 120, lambda: _state(manager, unique))
    inspect = manager.api.inspect_service(unique)
    assert inspect["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].endswith(end)
    version = inspect["Version"]["Index"]
    again, _ = _pass(swarm, 1, tmp_path, unique)
    assert again["outcome"] == ("up-to-date" if good else "held-back"), again
    assert manager.api.inspect_service(unique)["Version"]["Index"] == version
    outcomes = [entry["outcome"] for entry in _history(swarm, 1, tmp_path, unique)]
    assert outcomes.count(expected) == 1, outcomes


def test_pass_reports_a_rolling_update_it_did_not_start_and_leaves_it(
        swarm: Swarm, unique: str, tmp_path: Path) -> None:
    """An operator's own `docker service update` of the image in progress, then paused by its
    failures: the updater reports `rolling`, then `paused`, never up-to-date, and changes
    nothing (no rollback of what it did not start)."""
    manager = swarm.nodes[0].client()
    manager.login(username=USER, password=PASSWORD, registry=swarm.registry_host)
    image = f"{swarm.registry_host}/own/{unique}:latest"
    first = images.release(manager, image, "1", AUTH)
    _create(manager, unique, image, first)
    _wait(lambda: _running(manager, unique, first) == 4, 120, lambda: _state(manager, unique))
    second = images.release(manager, image, "2", AUTH, cmd=CRASHES)
    subprocess.run(["docker", "-H", swarm.nodes[0].host, "service", "update", "--detach",
                    "--image", f"{image}@{second}", unique], check=True, capture_output=True,
                   timeout=60)
    _wait(lambda: _state(manager, unique) == "updating", 30, lambda: _state(manager, unique))

    rolling, _ = _pass(swarm, 1, tmp_path, unique)

    assert rolling["outcome"] == "rolling", rolling
    _wait(lambda: _state(manager, unique) == "paused", 120, lambda: _state(manager, unique))
    version = manager.api.inspect_service(unique)["Version"]["Index"]
    paused, _ = _pass(swarm, 1, tmp_path, unique)
    assert paused["outcome"] == "paused" and "not started by this updater" in paused["reason"]
    assert manager.api.inspect_service(unique)["Version"]["Index"] == version
    assert _state(manager, unique) == "paused"


def _leader(cluster: Swarm, candidates: tuple[int, ...]) -> int:
    def found() -> int:
        for index in candidates:
            try:
                client = cluster.nodes[index - 1].client()
                node = client.api.inspect_node(client.info()["Swarm"]["NodeID"])
                if node["ManagerStatus"].get("Leader"):
                    return index
            except (docker.errors.APIError, KeyError):
                pass
        return 0
    return int(_wait(found, 60, lambda: "no leader"))


def test_new_leader_rolls_back_what_the_lost_leader_started(
        root: Path, unique: str, tmp_path: Path) -> None:
    """3 managers, `updater run` (2 s interval) on nodes 2 and 3, `updater update` on node 1
    starts a rollout of a failing image; node 1's engine stops mid-wait. That `update` prints
    what it decided (its node's container, the service `rolling`) and exits 1; the new
    leader's updater rolls the service back within two intervals of the pause and its history
    has `rolled-back`; the other updater tells nothing."""
    cluster = Swarm(root / f"leader-{unique}", nodes=3, managers=3,
                    engine=EngineSetup.from_env(), registry_users=USERS).start()
    daemons: list[subprocess.Popen[str]] = []
    try:
        first_leader = cluster.nodes[0].client()
        first_leader.login(username=USER, password=PASSWORD, registry=cluster.registry_host)
        image = f"{cluster.registry_host}/lead/{unique}:latest"
        first = images.release(first_leader, image, "1", AUTH)
        _create(first_leader, unique, image, first)
        other = f"{cluster.registry_host}/standalone/{unique}:latest"
        images.release(first_leader, other, "1", AUTH)
        first_leader.containers.run(other, name=f"{unique}-c", detach=True,
                                    labels={"updater.enable": "true"})
        _wait(lambda: _running(first_leader, unique, first) == 4, 120, lambda: "")
        settings = {"interval": f"{INTERVAL:.0f}s", "scope": unique}
        daemons = [_start(cluster, node, tmp_path, ["run"], settings, tmp_path / f"run-{node}.log",
                          "run.yml") for node in (2, 3)]
        second = images.release(first_leader, image, "2", AUTH, keep_local=False, cmd=CRASHES)
        update = _start(cluster, 1, tmp_path, ["update", "--json"])
        _wait(lambda: _state(first_leader, unique) == "updating" or update.poll() is not None,
              60, lambda: "")
        assert update.poll() is None, update.communicate()
        assert cluster.nodes[0].process is not None
        cluster.nodes[0].process.stop(timeout=30)
        cluster.nodes[0].process = None
        stopped = time.monotonic()
        leader = _leader(cluster, (2, 3))
        elected = time.monotonic() - stopped

        out, err = update.communicate(timeout=120)

        print(f"node 1's update after its engine stopped: exit {update.returncode}\n{out}")
        assert update.returncode == 1, err[-3000:]
        report = json.loads(out)
        items = {item["name"]: item for item in report["items"]}
        assert items[f"{unique}-c"]["outcome"] == "up-to-date"
        assert items[unique]["outcome"] == "rolling", items[unique]
        assert items[unique]["new_digest"] == second
        assert report["error"]
        client = cluster.nodes[leader - 1].client()
        timeline = _follow(client, unique, first, 240)
        print(f"new leader node{leader} found {elected:.1f}s after node 1's dockerd exited; "
              f"UpdateStatus "
              f"after it: {[(round(t, 1), s) for t, s in timeline]}")
        for node in (2, 3):
            said = [line for line in (tmp_path / f"run-{node}.log").read_text().splitlines()
                    if unique in line and "up-to-date" not in line]
            print(f"node{node}'s updater:", *said[-6:], sep="\n  ")
        paused = [t for t, s in timeline if s == "paused"]
        rolling_back = [t for t, s in timeline if s.startswith("rollback")]
        assert rolling_back, timeline
        if paused:
            assert rolling_back[0] - paused[0] <= 2 * INTERVAL + 1, timeline
        _wait(lambda: [e for e in _history(cluster, leader, tmp_path, unique)
                       if e["outcome"] == "rolled-back"], 30, lambda: "no history")
        follower = 5 - leader
        assert not [e for e in _history(cluster, follower, tmp_path, unique)
                    if e["outcome"] in ("rolled-back", "updated", "failed")]
    finally:
        for daemon in daemons:
            daemon.terminate()
            daemon.wait(timeout=60)
        cluster.stop()


def _follow(client: docker.DockerClient, name: str, digest: str,
            timeout: float) -> list[tuple[float, str]]:
    """UpdateStatus states seen (seconds from now) until 4 tasks run `digest` again."""
    started = time.monotonic()
    seen: list[tuple[float, str]] = []
    while _running(client, name, digest) < 4 or not seen or \
            not seen[-1][1].startswith("rollback"):
        try:
            state = _state(client, name)
        except docker.errors.APIError:
            state = "unanswered"
        if not seen or seen[-1][1] != state:
            seen.append((time.monotonic() - started, state))
        assert time.monotonic() - started < timeout, seen
        time.sleep(0.25)
    return seen
