"""Setups real hosts have, updated for real: `--rm`, anonymous `--mount` volumes, a stop timeout
of -1, network-namespace chains, dependants of a killed update, monitor-only neighbours, hooks
that hang, name clashes, restart policies with another stop signal, paused containers. Each is
checked as the user sees it: the container is there under its name, runs (or stays paused) on
the expected image with its data and configuration, nothing `-updater-` is left, and the report
and exit code tell the truth."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker.types
import pytest

from harness import images
from harness.dockerd import Dockerd
from harness.registry import Registry
from tests.integration.helpers import ENABLED, run_updater, updater_env
from tests.integration.test_update import update

pytestmark = [pytest.mark.engine]
# Shuts down in 5 s on SIGTERM or SIGINT, and says so in /out/done (a bind mount).
SLOW_STOP = ('["sh", "-c", "trap \'sleep 5; echo clean > /out/done; exit 0\' TERM INT; '
             'while :; do sleep 1; done"]')
# Exits at once: a broken release.
BROKEN = '["sh", "-c", "exit 3"]'


def _release(engine: Dockerd, registry: Registry, unique: str, version: str,
             **kwargs: Any) -> str:
    image = f"{registry.host}/edge/{unique}:latest"
    images.release(engine.client, image, version, **kwargs)
    return image


def _leftovers(engine: Dockerd, *names: str) -> set[str]:
    """Containers with an `-updater-` name left over for any of `names`."""
    everything = {str(c.name) for c in engine.client.containers.list(all=True)}
    return {n for n in everything for base in names if n.startswith(base + "-updater-")}


def _state(engine: Dockerd, name: str) -> dict[str, Any]:
    return dict(engine.client.api.inspect_container(name))


def _events(engine: Dockerd, since: float, kind: str, container: str) -> list[dict[str, Any]]:
    """Engine events of `kind` for `container` from `since` (seconds) on."""
    found = engine.client.events(since=int(since) - 1, until=int(time.time()) + 1, decode=True,
                                 filters={"type": "container", "event": kind,
                                          "container": container})
    return [event for event in found if int(event["timeNano"]) >= since * 1e9]


def _version(engine: Dockerd, name: str) -> str:
    """The VERSION of the image the container `name` runs (written into it at build)."""
    image = engine.client.images.get(_state(engine, name)["Image"])
    return str(image.labels["org.opencontainers.image.version"])


@pytest.mark.matrix
def test_rm_container_is_updated_every_time_and_rolled_back_from_its_copy(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """A `--rm` container (the engine deletes it when it stops) is updated five times in a
    row, each time under its name, running, still `--rm`; then a broken release is rolled back
    to a copy of it, which runs the old image, under its name, still `--rm`."""
    image = _release(engine, registry, unique, "1")
    containers.append(unique)
    engine.client.containers.run(image, name=unique, detach=True, auto_remove=True,
                                 labels=ENABLED)
    for version in "23456":
        _release(engine, registry, unique, version, keep_local=False)
        code, items = update(engine, tmp_path, unique)
        assert (code, items[unique]["outcome"]) == (0, "updated"), items
        state = _state(engine, unique)
        assert state["State"]["Running"] and state["HostConfig"]["AutoRemove"]
        assert _version(engine, unique) == version
        assert not _leftovers(engine, unique)

    _release(engine, registry, unique, "7", cmd=BROKEN, keep_local=False)
    code, items = update(engine, tmp_path, unique)

    assert (code, items[unique]["outcome"]) == (1, "rolled-back"), items
    state = _state(engine, unique)
    assert state["State"]["Running"] and state["HostConfig"]["AutoRemove"]
    assert _version(engine, unique) == "6"
    assert not _leftovers(engine, unique)


def test_rm_dependant_is_started_again(engine: Dockerd, registry: Registry, unique: str,
                                       containers: list[str], tmp_path: Path) -> None:
    """A `--rm` container that depends on the updated one is stopped (so deleted by the
    engine) and yet is there again afterwards, running, `--rm`, on its own image."""
    image = _release(engine, registry, unique, "1")
    containers += [f"{unique}-a", f"{unique}-b"]
    engine.client.containers.run(image, name=f"{unique}-a", detach=True, labels=ENABLED)
    engine.client.containers.run(image, name=f"{unique}-b", detach=True, auto_remove=True,
                                 labels={"updater.depends-on": f"{unique}-a"})
    b_image = _state(engine, f"{unique}-b")["Image"]
    _release(engine, registry, unique, "2", keep_local=False)

    code, items = update(engine, tmp_path, f"{unique}-a")

    assert (code, items[f"{unique}-a"]["outcome"]) == (0, "updated"), items
    b = _state(engine, f"{unique}-b")
    assert b["State"]["Running"] and b["HostConfig"]["AutoRemove"]
    assert b["Image"] == b_image
    assert not _leftovers(engine, f"{unique}-a", f"{unique}-b")


@pytest.mark.matrix
def test_anonymous_mount_volume_keeps_its_data(engine: Dockerd, registry: Registry,
                                               unique: str, containers: list[str],
                                               tmp_path: Path) -> None:
    """`--mount type=volume,dst=/data` (no source: an anonymous volume): the new container
    mounts the same volume, with the data written before the update."""
    image = _release(engine, registry, unique, "1")
    containers.append(unique)
    engine.client.containers.run(image, name=unique, detach=True, labels=ENABLED,
                                 mounts=[docker.types.Mount("/data", None, type="volume")])
    engine.client.containers.get(unique).exec_run(["sh", "-c", "echo kept > /data/file"])
    volume = [m["Name"] for m in _state(engine, unique)["Mounts"]]
    _release(engine, registry, unique, "2", keep_local=False)

    code, items = update(engine, tmp_path, unique)

    assert (code, items[unique]["outcome"]) == (0, "updated"), items
    assert [m["Name"] for m in _state(engine, unique)["Mounts"]] == volume
    data = engine.client.containers.get(unique).exec_run(["cat", "/data/file"])
    assert data.output == b"kept\n"


@pytest.mark.slow
def test_stop_timeout_minus_one_waits_for_a_clean_shutdown(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path, root: Path) -> None:
    """`--stop-timeout -1` means wait as long as it takes: the old container (5 s to shut
    down) exits 0 and finishes its shutdown, it is not killed at once."""
    image = _release(engine, registry, unique, "1", cmd=SLOW_STOP)
    out = root / f"out-{unique}"
    out.mkdir()
    containers.append(unique)
    api = engine.client.api
    old_id = api.create_container(image, name=unique, labels=ENABLED, stop_timeout=-1,
                                  host_config=api.create_host_config(
                                      binds={str(out): {"bind": "/out", "mode": "rw"}}))["Id"]
    api.start(old_id)
    _release(engine, registry, unique, "2", cmd=SLOW_STOP, keep_local=False)
    since = time.time()

    code, items = update(engine, tmp_path, unique)

    assert (code, items[unique]["outcome"]) == (0, "updated"), items
    assert (out / "done").read_text() == "clean\n"
    deaths = _events(engine, since, "die", old_id)
    assert [e["Actor"]["Attributes"]["exitCode"] for e in deaths] == ["0"]


@pytest.mark.matrix
def test_network_namespace_chain_of_three_all_run_after_the_update(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """a ← b ← c (b in a's network namespace, c in b's): updating a recreates b and then c
    in the new namespaces; all three run, each on its own image, and the pass exits 0."""
    image = _release(engine, registry, unique, "1")
    a, b, c = (f"{unique}-{x}" for x in "abc")
    containers += [a, b, c]
    engine.client.containers.run(image, name=a, detach=True, labels=ENABLED)
    engine.client.containers.run(image, name=b, detach=True, network_mode=f"container:{a}")
    engine.client.containers.run(image, name=c, detach=True, network_mode=f"container:{b}")
    b_image, c_image = _state(engine, b)["Image"], _state(engine, c)["Image"]
    _release(engine, registry, unique, "2", keep_local=False)

    code, items = update(engine, tmp_path, a)

    assert (code, items[a]["outcome"]) == (0, "updated"), items
    states = {x: _state(engine, x) for x in (a, b, c)}
    assert all(s["State"]["Running"] for s in states.values()), {
        x: s["State"]["Status"] for x, s in states.items()}
    assert (states[b]["Image"], states[c]["Image"]) == (b_image, c_image)
    assert states[b]["HostConfig"]["NetworkMode"] in (f"container:{a}",
                                                       f"container:{states[a]['Id']}")
    assert states[c]["HostConfig"]["NetworkMode"] in (f"container:{b}",
                                                       f"container:{states[b]['Id']}")
    assert not _leftovers(engine, a, b, c)


@pytest.mark.parametrize("step", ["stopping", "stopped", "stopping:2", "renamed", "started"])
def test_killed_update_leaves_no_dependant_stopped(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path, step: str) -> None:
    """b depends on a; the updater is SIGKILLed while b stops, after it stopped, while a stops,
    after the rename, after the start; the next run brings a back (old or new) and b running."""
    image = _release(engine, registry, unique, "1")
    a, b = f"{unique}-a", f"{unique}-b"
    containers += [a, b]
    engine.client.containers.run(image, name=a, detach=True, labels=ENABLED)
    engine.client.containers.run(image, name=b, detach=True,
                                 labels={"updater.depends-on": a})
    _release(engine, registry, unique, "2", keep_local=False)
    settings = {"state_dir": str(tmp_path / "state")}

    killed = subprocess.run([sys.executable, "-m", "tests.integration.kill_driver", step, a],
                            env=updater_env(engine.host, tmp_path, settings),
                            capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode == -9, killed.stderr
    recovery = run_updater(["update", "--json", "--monitor-only", a], engine, tmp_path,
                           settings)

    assert recovery.returncode == 0, recovery.stderr
    assert "Traceback" not in recovery.stderr
    assert _state(engine, a)["State"]["Running"]
    assert _state(engine, b)["State"]["Running"], recovery.stdout
    assert not _leftovers(engine, a, b)


@pytest.mark.matrix
def test_monitor_only_neighbour_in_the_namespace_stays_on_its_image(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """b (monitor-only, same tag) lives in a's network namespace: updating a recreates b on
    the image b runs (v1), never on the tag the pull just moved to v2."""
    image = _release(engine, registry, unique, "1")
    a, b = f"{unique}-a", f"{unique}-b"
    containers += [a, b]
    engine.client.containers.run(image, name=a, detach=True, labels=ENABLED)
    engine.client.containers.run(image, name=b, detach=True, network_mode=f"container:{a}",
                                 labels={**ENABLED, "updater.monitor-only": "true"})
    _release(engine, registry, unique, "2", keep_local=False)

    code, items = update(engine, tmp_path, a, b)

    assert code == 0, items
    assert (items[a]["outcome"], items[b]["outcome"]) == ("updated", "update-available")
    assert (_version(engine, a), _version(engine, b)) == ("2", "1")
    assert _state(engine, b)["State"]["Running"]
    assert _state(engine, b)["Config"]["Image"] == image


@pytest.mark.matrix
def test_both_watched_in_one_namespace_are_both_updated(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """a and b (in a's network namespace) on the same tag, both watched: both end on v2,
    running, and the pass reports both updated with exit 0."""
    image = _release(engine, registry, unique, "1")
    a, b = f"{unique}-a", f"{unique}-b"
    containers += [a, b]
    engine.client.containers.run(image, name=a, detach=True, labels=ENABLED)
    engine.client.containers.run(image, name=b, detach=True, network_mode=f"container:{a}",
                                 labels=ENABLED)
    _release(engine, registry, unique, "2", keep_local=False)

    code, items = update(engine, tmp_path, a, b)

    assert code == 0, items
    assert (items[a]["outcome"], items[b]["outcome"]) == ("updated", "updated")
    assert (_version(engine, a), _version(engine, b)) == ("2", "2")
    assert _state(engine, a)["State"]["Running"] and _state(engine, b)["State"]["Running"]
    assert not _leftovers(engine, a, b)


def test_hook_past_its_timeout_is_ended_and_the_pass_goes_on(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """A pre-update hook `sleep 40` with hook.timeout=3s: the update is skipped within
    seconds (not 40), the hook's processes are gone from the container, which still runs
    its old image; pre-check and post-check hooks that never return do not hold the pass
    either."""
    image = _release(engine, registry, unique, "1")
    containers.append(unique)
    engine.client.containers.run(image, name=unique, detach=True, labels={
        **ENABLED, "updater.hook.pre-update": "sleep 40; echo late", "updater.hook.timeout": "3s",
        "updater.hook.pre-check": "sleep 1000", "updater.hook.post-check": "sleep 1000"})
    before = _state(engine, unique)
    _release(engine, registry, unique, "2", keep_local=False)
    started = time.monotonic()

    code, items = update(engine, tmp_path, unique)

    assert time.monotonic() - started < 25
    assert (code, items[unique]["outcome"]) == (0, "skipped"), items
    assert "did not finish within 3s" in items[unique]["reason"]
    after = _state(engine, unique)
    assert (after["Id"], after["State"]["StartedAt"]) == (before["Id"],
                                                          before["State"]["StartedAt"])
    processes = engine.client.api.top(unique)["Processes"]
    assert not [p for p in processes if "sleep 40" in " ".join(p) or "sleep 1000" in " ".join(p)]
    assert not _leftovers(engine, unique)


def test_name_clash_fails_before_anything_is_stopped(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """With an unrelated container called NAME-updater-old, the update fails at once with a
    message naming it; NAME was never stopped and the unrelated one is untouched."""
    image = _release(engine, registry, unique, "1")
    containers += [unique, f"{unique}-updater-old"]
    engine.client.containers.run(image, name=unique, detach=True, labels=ENABLED)
    other = engine.client.containers.create(image, name=f"{unique}-updater-old")
    before = _state(engine, unique)
    _release(engine, registry, unique, "2", keep_local=False)

    code, items = update(engine, tmp_path, unique)

    assert (code, items[unique]["outcome"]) == (1, "failed"), items
    assert f"{unique}-updater-old is taken" in items[unique]["reason"]
    after = _state(engine, unique)
    assert (after["Id"], after["State"]["StartedAt"]) == (before["Id"],
                                                          before["State"]["StartedAt"])
    assert _state(engine, f"{unique}-updater-old")["Id"] == other.id
    assert f"{unique}-updater-new" not in {c.name for c in
                                           engine.client.containers.list(all=True)}
    # Not held back: once the name is free, the same release is applied.
    other.remove()
    code, items = update(engine, tmp_path, unique)
    assert (code, items[unique]["outcome"]) == (0, "updated"), items


@pytest.mark.matrix
def test_restart_always_with_another_stop_signal_is_not_restarted_by_the_engine(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """`--restart always --stop-signal SIGINT` labelled updater.stop-signal=SIGTERM: the old
    container is stopped once (the engine does not restart it), the update succeeds, the new
    container keeps the restart policy and the stop signal."""
    image = _release(engine, registry, unique, "1")
    containers.append(unique)
    engine.client.containers.run(image, name=unique, detach=True, stop_signal="SIGINT",
                                 restart_policy={"Name": "always"},
                                 labels={**ENABLED, "updater.stop-signal": "SIGTERM"})
    old_id = _state(engine, unique)["Id"]
    _release(engine, registry, unique, "2", keep_local=False)
    since = time.time()

    code, items = update(engine, tmp_path, unique)

    assert (code, items[unique]["outcome"]) == (0, "updated"), items
    assert _events(engine, since, "start", old_id) == []
    assert len(_events(engine, since, "die", old_id)) == 1
    state = _state(engine, unique)
    assert state["HostConfig"]["RestartPolicy"]["Name"] == "always"
    assert state["Config"]["StopSignal"] == "SIGINT"
    assert _version(engine, unique) == "2"


@pytest.mark.matrix
def test_paused_container_stays_paused(engine: Dockerd, registry: Registry, unique: str,
                                       containers: list[str], tmp_path: Path) -> None:
    """A paused container is updated and comes back paused, on the new image; rolled back,
    the old one comes back paused too."""
    image = _release(engine, registry, unique, "1")
    containers.append(unique)
    engine.client.containers.run(image, name=unique, detach=True, labels=ENABLED).pause()
    _release(engine, registry, unique, "2", keep_local=False)

    code, items = update(engine, tmp_path, unique)

    assert (code, items[unique]["outcome"]) == (0, "updated"), items
    assert _state(engine, unique)["State"]["Paused"]
    assert _version(engine, unique) == "2"

    _release(engine, registry, unique, "3", cmd=BROKEN, keep_local=False)
    code, items = update(engine, tmp_path, unique)

    assert (code, items[unique]["outcome"]) == (1, "rolled-back"), items
    assert _state(engine, unique)["State"]["Paused"]
    assert _version(engine, unique) == "2"
    assert not _leftovers(engine, unique)


# --- the edge-setup matrix ------------------------------------------------------------------
# Options users give `docker run`, each on its own container; all are updated in one pass and
# compared field by field with what they were. Grow it with every setup found to matter.
RESTART_POLICIES = ({"Name": "no"}, {"Name": "always"}, {"Name": "unless-stopped"},
                    {"Name": "on-failure", "MaximumRetryCount": 3})
SIGNAL_SETUPS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("own-signal", {}),
    ("sigint-label-sigterm", {"stop_signal": "SIGINT",
                              "labels": {"updater.stop-signal": "SIGTERM"}}),
)
EDGE_SETUPS: dict[str, dict[str, Any]] = {
    "rm": {"auto_remove": True},
    "init": {"init": True},
    "read-only": {"read_only": True},
    "userns-host": {"userns_mode": "host"},
    "tmpfs": {"tmpfs": {"/scratch": "size=1m,mode=1777"}},
    "sysctls": {"sysctls": {"net.ipv4.ip_unprivileged_port_start": "0"}},
    "ulimits": {"ulimits": [docker.types.Ulimit(name="nofile", soft=1024, hard=2048)]},
    "devices": {"devices": ["/dev/null:/dev/extra-null:rwm"],
                "device_cgroup_rules": ["c 1:3 rmw"]},
    "named-volume-v": {"volumes": {"vol-v": {"bind": "/named", "mode": "rw"}}},
    "named-volume-mount": {"mounts": [{"Target": "/named", "Source": "vol-mount",
                                       "Type": "volume"}]},
    "anonymous-volume-mount": {"mounts": [{"Target": "/anon", "Type": "volume"}]},
    "tmpfs-mount": {"mounts": [{"Target": "/t", "Type": "tmpfs"}]},
    "stop-signal-usr1": {"stop_signal": "SIGUSR1", "labels": {"updater.stop-timeout": "1s"}},
    "network-none": {"network_mode": "none"},
    "kitchen-sink": {"cap_add": ["NET_ADMIN"], "cap_drop": ["MKNOD"],
                     "security_opt": ["no-new-privileges"], "pids_limit": 64,
                     "mem_limit": "64m", "nano_cpus": 500_000_000, "hostname": "sink",
                     "dns": ["127.0.0.9"], "extra_hosts": {"db.local": "127.0.0.8"},
                     "environment": {"USER_VAR": "1"}, "working_dir": "/tmp", "user": "1:1",
                     "entrypoint": ["sh", "-c"],
                     "command": ["trap 'exit 0' TERM; sleep 3600 & wait"],
                     "ipc_mode": "shareable", "oom_score_adj": 10, "shm_size": "8m",
                     "group_add": ["3"], "log_config": docker.types.LogConfig(
                         type="json-file", config={"max-size": "1m"})},
    **{f"restart-{p['Name']}-{signal}": {"restart_policy": p, **extra}
       for p in RESTART_POLICIES for signal, extra in SIGNAL_SETUPS},
}
PAUSED: tuple[str, dict[str, Any]] = ("paused", {})
# Fields the engine fills in itself, or that legitimately follow the new image.
_VOLATILE_CONFIG = ("Image", "Hostname", "Labels")
_VOLATILE_HOST = ("Binds", "Mounts")


def _create_edge(engine: Dockerd, image: str, name: str, setup: dict[str, Any],
                 unique: str) -> None:
    options = {key: value for key, value in setup.items() if key != "labels"}
    if "volumes" in options:
        options["volumes"] = {f"{unique}-{k}": v for k, v in options["volumes"].items()}
    if "mounts" in options:
        options["mounts"] = [docker.types.Mount(m["Target"], m.get("Source") and
                                                f"{unique}-{m['Source']}", type=m["Type"])
                             for m in options["mounts"]]
    labels = {**ENABLED, **setup.get("labels", {})}
    engine.client.containers.run(image, name=name, detach=True, labels=labels, **options)


def _differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Every user-visible difference between two inspects of one container's versions."""
    found = []
    for key in sorted(set(before["Config"]) | set(after["Config"])):
        if key not in _VOLATILE_CONFIG and before["Config"].get(key) != after["Config"].get(key):
            found.append(f"Config.{key}: {before['Config'].get(key)!r} -> "
                         f"{after['Config'].get(key)!r}")
    user_labels = {k: v for k, v in before["Config"]["Labels"].items()
                   if not k.startswith(("harness.", "org.opencontainers."))}
    if {k: after["Config"]["Labels"].get(k) for k in user_labels} != user_labels:
        found.append("Config.Labels lost a user label")
    for key in sorted(set(before["HostConfig"]) | set(after["HostConfig"])):
        old, new = before["HostConfig"].get(key), after["HostConfig"].get(key)
        if key not in _VOLATILE_HOST and old != new:
            found.append(f"HostConfig.{key}: {old!r} -> {new!r}")
    if not set(before["HostConfig"].get("Binds") or ()) <= set(
            after["HostConfig"].get("Binds") or ()):
        found.append("HostConfig.Binds lost a bind")
    if _mount_set(before) != _mount_set(after):
        found.append(f"Mounts: {_mount_set(before)} -> {_mount_set(after)}")
    for key in ("Running", "Paused"):
        if before["State"][key] != after["State"][key]:
            found.append(f"State.{key}: {before['State'][key]} -> {after['State'][key]}")
    return found


def _mount_set(inspect: dict[str, Any]) -> set[tuple[str, str, str, bool]]:
    return {(m["Type"], m.get("Name") or m.get("Source") or "", m["Destination"], m["RW"])
            for m in inspect["Mounts"]}


@pytest.mark.slow
@pytest.mark.matrix
def test_edge_setup_matrix_every_option_survives_an_update(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """Each setup of the matrix (and one paused) is updated in one pass: every one is
    reported updated, runs the new image, and differs from before in nothing but its image;
    a volume keeps its data; nothing `-updater-` is left."""
    image = _release(engine, registry, unique, "1")
    setups = {**EDGE_SETUPS, PAUSED[0]: PAUSED[1]}
    names = {case: f"{unique}-{case}" for case in setups}
    containers += names.values()
    for case, setup in setups.items():
        _create_edge(engine, image, names[case], setup, unique)
    engine.client.containers.get(names["paused"]).pause()
    for case in ("named-volume-v", "named-volume-mount", "anonymous-volume-mount"):
        target = "/anon" if case.startswith("anonymous") else "/named"
        engine.client.containers.get(names[case]).exec_run(
            ["sh", "-c", f"echo {case} > {target}/file"])
    before = {case: _state(engine, name) for case, name in names.items()}
    _release(engine, registry, unique, "2", keep_local=False)

    code, items = update(engine, tmp_path, *names.values())

    problems = {}
    for case, name in names.items():
        found = [] if items[name]["outcome"] == "updated" else [
            f"outcome {items[name]['outcome']}: {items[name]['reason']}"]
        after = _state(engine, name)
        found += _differences(before[case], after)
        if _version(engine, name) != "2":
            found.append("not on the new image")
        if found:
            problems[case] = found
    for case in ("named-volume-v", "named-volume-mount", "anonymous-volume-mount"):
        target = "/anon" if case.startswith("anonymous") else "/named"
        data = engine.client.containers.get(names[case]).exec_run(["cat", f"{target}/file"])
        if data.output != f"{case}\n".encode():
            problems.setdefault(case, []).append(f"data lost: {data.output!r}")
    print(f"edge-setup matrix: {len(names)} setups, {len(names) - len(problems)} held")
    assert problems == {}
    assert code == 0
    assert not _leftovers(engine, *names.values())


def test_pid_and_ipc_namespace_dependants_run_after_the_update(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """b joined a's PID namespace, c a's IPC namespace (a has `--ipc shareable`): after a is
    replaced both run again, joined to the new a, on their own images."""
    image = _release(engine, registry, unique, "1")
    a, b, c = (f"{unique}-{x}" for x in "abc")
    containers += [a, b, c]
    engine.client.containers.run(image, name=a, detach=True, labels=ENABLED,
                                 ipc_mode="shareable")
    engine.client.containers.run(image, name=b, detach=True, pid_mode=f"container:{a}")
    engine.client.containers.run(image, name=c, detach=True, ipc_mode=f"container:{a}")
    _release(engine, registry, unique, "2", keep_local=False)

    code, items = update(engine, tmp_path, a)

    assert (code, items[a]["outcome"]) == (0, "updated"), items
    new_a = _state(engine, a)["Id"]
    for name, key in ((b, "PidMode"), (c, "IpcMode")):
        state = _state(engine, name)
        assert state["State"]["Running"], name
        assert state["HostConfig"][key] in (f"container:{a}", f"container:{new_a}")
        assert _version(engine, name) == "1"
    assert not _leftovers(engine, a, b, c)


def test_recovery_keeps_the_new_container_when_the_old_was_removed_by_hand(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """Killed during the health wait; the user removes NAME-updater-old by hand. The next run
    keeps the new container running under the name (it used to remove it: nothing left) and
    closes the entry, so later passes are clean."""
    image = _release(engine, registry, unique, "1")
    containers.append(unique)
    engine.client.containers.run(image, name=unique, detach=True, labels=ENABLED)
    _release(engine, registry, unique, "2", keep_local=False)
    settings = {"state_dir": str(tmp_path / "state")}
    killed = subprocess.run(
        [sys.executable, "-m", "tests.integration.kill_driver", "started", unique],
        env=updater_env(engine.host, tmp_path, settings), capture_output=True, text=True,
        timeout=120, check=False)
    assert killed.returncode == -9, killed.stderr
    engine.client.containers.get(f"{unique}-updater-old").remove(force=True)

    first = run_updater(["update", "--json", unique], engine, tmp_path, settings)
    second = run_updater(["update", "--json", unique], engine, tmp_path, settings)

    assert first.returncode == 0 and '"recovered"' in first.stdout, first.stdout + first.stderr
    assert _state(engine, unique)["State"]["Running"] and _version(engine, unique) == "2"
    assert second.returncode == 0 and "recover" not in second.stdout + second.stderr
    assert not _leftovers(engine, unique)


# --- found by an adversarial review of the above --------------------------------------------
IGNORES_TERM = '["sh", "-c", "trap \'\' TERM; while :; do sleep 1; done"]'


def _killed_in_the_stop(engine: Dockerd, home: Path, settings: dict[str, Any],
                        name: str) -> None:
    """Start `updater update NAME`, SIGKILL it one second into the stop of the old container."""
    from tests.integration.helpers import wait_until
    from tests.integration.test_engine_restart import _step

    process = subprocess.Popen([sys.executable, "-m", "updater", "update", name],
                               env=updater_env(engine.host, home, settings),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: _step(Path(settings["state_dir"])) == "stopping", 60,
               lambda: f"the update reached the stop; {process.poll()}")
    time.sleep(1)
    process.kill()
    process.communicate(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("role", ["candidate", "dependant"])
def test_killed_in_the_stop_of_a_rm_container_restarted_at_once(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path, role: str) -> None:
    """A `--rm` container (the candidate, or a dependant in its namespace) that needs 6 s to
    stop; the updater is killed inside the stop and run again at once, while the engine is still
    stopping and then deleting it: it comes back under its name, running, `--rm`, with its data,
    from its copy; nothing is left over and the entry is closed."""
    image = _release(engine, registry, unique, "1", cmd=IGNORES_TERM)
    a, b = f"{unique}-a", f"{unique}-b"
    containers += [a, b]
    rm_one = a if role == "candidate" else b
    api = engine.client.api
    a_id = api.create_container(image, name=a, labels={**ENABLED, "updater.stop-timeout": "6s"},
                                volumes=["/data"], host_config=api.create_host_config(
                                    auto_remove=role == "candidate"))["Id"]
    api.start(a_id)
    if role == "dependant":
        b_id = api.create_container(image, name=b, labels={"updater.stop-timeout": "6s"},
                                    host_config=api.create_host_config(
                                        auto_remove=True, network_mode=f"container:{a}"))["Id"]
        api.start(b_id)
    engine.client.containers.get(a).exec_run(["sh", "-c", "echo kept > /data/file"])
    _release(engine, registry, unique, "2", cmd=IGNORES_TERM, keep_local=False)
    settings = {"state_dir": str(tmp_path / "state")}

    _killed_in_the_stop(engine, tmp_path, settings, a)
    again = run_updater(["update", "--json", a], engine, tmp_path, settings)
    later = run_updater(["update", "--json", a], engine, tmp_path, settings)

    assert "Traceback" not in again.stderr, again.stderr
    state = _state(engine, rm_one)
    assert state["State"]["Running"] and state["HostConfig"]["AutoRemove"], again.stderr
    assert _state(engine, a)["State"]["Running"]
    data = engine.client.containers.get(a).exec_run(["cat", "/data/file"])
    assert data.output == b"kept\n"
    assert "recovery of an interrupted update failed" not in later.stdout + later.stderr
    assert not _leftovers(engine, a, b)


def test_container_with_a_legacy_link_to_it_is_known_by_its_own_name(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """`client --link web:db`: the engine lists web also as `client/db`; web is still checked,
    updated and reported as web, and its dependants (the linked client, one in its network
    namespace) are recreated to use the new web."""
    image = _release(engine, registry, unique, "1")
    web, side, client = (f"{unique}-{x}" for x in ("web", "side", "client"))
    containers += [web, side, client]
    engine.client.containers.run(image, name=web, detach=True, labels=ENABLED)
    engine.client.containers.run(image, name=side, detach=True, network_mode=f"container:{web}")
    engine.client.containers.run(image, name=client, detach=True, links={web: "db"})
    _release(engine, registry, unique, "2", keep_local=False)

    code, items = update(engine, tmp_path, web)

    assert (code, items[web]["outcome"]) == (0, "updated"), items
    new_web = _state(engine, web)["Id"]
    assert _state(engine, side)["HostConfig"]["NetworkMode"] in (f"container:{web}",
                                                                  f"container:{new_web}")
    assert _state(engine, client)["HostConfig"]["Links"] == [f"/{web}:/{client}/db"]
    assert all(_state(engine, x)["State"]["Running"] for x in (web, side, client))
    assert not _leftovers(engine, web, side, client)


def test_rm_container_with_rollback_off_whose_release_exits_is_not_lost(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """`--rm` with updater.rollback=false and a release that exits at once: the engine deletes
    the failed new container, so there is nothing to keep; the old one is restored from its
    copy (and the failure is seen at once, not after the health timeout)."""
    image = _release(engine, registry, unique, "1")
    containers.append(unique)
    engine.client.containers.run(image, name=unique, detach=True, auto_remove=True, labels={
        **ENABLED, "updater.rollback": "false", "updater.health-timeout": "30s"})
    _release(engine, registry, unique, "2", cmd=BROKEN, keep_local=False)
    started = time.monotonic()

    code, items = update(engine, tmp_path, unique)

    assert time.monotonic() - started < 20
    assert (code, items[unique]["outcome"]) == (1, "rolled-back"), items
    assert "removed by the engine" in items[unique]["reason"]
    assert _state(engine, unique)["State"]["Running"] and _version(engine, unique) == "1"
    assert not _leftovers(engine, unique)


def test_volumes_from_read_only_stay_read_only(engine: Dockerd, registry: Registry,
                                               unique: str, containers: list[str],
                                               tmp_path: Path) -> None:
    """`--volumes-from src:ro`: the volumes stay read-only in the new container (they are the
    source's, not carried over as its own)."""
    image = _release(engine, registry, unique, "1")
    src, user = f"{unique}-src", f"{unique}-user"
    containers += [src, user]
    api = engine.client.api
    api.start(api.create_container(image, name=src, volumes=["/data"])["Id"])
    engine.client.containers.run(image, name=user, detach=True, labels=ENABLED,
                                 volumes_from=[f"{src}:ro"])
    _release(engine, registry, unique, "2", keep_local=False)

    code, items = update(engine, tmp_path, user)

    assert (code, items[user]["outcome"]) == (0, "updated"), items
    touched = engine.client.containers.get(user).exec_run(["touch", "/data/x"])
    assert touched.exit_code != 0 and b"Read-only" in touched.output


@pytest.mark.matrix
def test_crash_looping_container_is_updated_to_a_release_that_runs(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """A container in a restart loop (`--restart always`, exits after a second) gets a release
    that runs: it is updated, and the new one runs, with the same restart policy."""
    crashing = '["sh", "-c", "sleep 1; exit 1"]'
    image = _release(engine, registry, unique, "1", cmd=crashing)
    a = f"{unique}-a"
    containers.append(a)
    engine.client.containers.run(image, name=a, detach=True, labels=ENABLED,
                                 restart_policy={"Name": "always"})
    time.sleep(3)  # in its loop now
    _release(engine, registry, unique, "2", keep_local=False)

    code, items = update(engine, tmp_path, a)

    assert (code, items[a]["outcome"]) == (0, "updated"), items
    state = _state(engine, a)
    assert state["State"]["Running"] and not state["State"]["Restarting"]
    assert state["HostConfig"]["RestartPolicy"]["Name"] == "always"
    assert _version(engine, a) == "2"
    assert not _leftovers(engine, a)
