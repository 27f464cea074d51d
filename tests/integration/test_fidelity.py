"""Configuration fidelity: the replacement keeps everything the user set, and takes the NEW
image's defaults instead of the old image's. Compared field by field on `docker inspect`."""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path
from typing import Any

import docker.errors
import docker.types
import pytest

from harness import images
from harness.dockerd import Dockerd
from harness.procs import free_port
from harness.registry import Registry
from tests.integration.test_update import update

pytestmark = [pytest.mark.engine]
_subnets = itertools.count(40)
CMD = ["sh", "-c", "trap 'exit 0' TERM; echo user-command; while :; do sleep 1; done"]


def _networks(engine: Dockerd, unique: str) -> list[tuple[str, str]]:
    """Two user-defined networks with fixed subnets; (name, static address) each."""
    made = []
    for index in range(2):
        third = next(_subnets)
        name = f"{unique}-net{index}"
        ipam = docker.types.IPAMConfig(
            pool_configs=[docker.types.IPAMPool(subnet=f"172.31.{third}.0/24")])
        engine.client.api.create_network(name, driver="bridge", ipam=ipam)
        made.append((name, f"172.31.{third}.10"))
    return made


def _create(engine: Dockerd, image: str, name: str, bind_dir: Path, volume: str,
            networks: list[tuple[str, str]], port: int) -> None:
    api = engine.client.api
    host_config = api.create_host_config(
        binds={str(bind_dir): {"bind": "/host", "mode": "rw"},
               volume: {"bind": "/data", "mode": "rw"}},
        port_bindings={80: ("127.0.0.1", port)},
        restart_policy={"Name": "unless-stopped"},
        mem_limit="64m", network_mode=networks[0][0], cap_add=["NET_ADMIN"])
    endpoint = api.create_endpoint_config(aliases=["alias-zero"], ipv4_address=networks[0][1])
    created = api.create_container(
        image, command=CMD, name=name, environment={"USER_VAR": "set-by-user"},
        labels={"updater.enable": "true", "team": "blue"}, host_config=host_config,
        networking_config=api.create_networking_config(
            {networks[0][0]: endpoint}),  # type: ignore[arg-type]  # stubs say one endpoint
        healthcheck={"test": ["CMD-SHELL", "test -d /data"], "interval": 1_000_000_000},
        ports=[80], working_dir="/data", user="0:0")
    api.connect_container_to_network(created["Id"], networks[1][0], aliases=["alias-one"],
                                      ipv4_address=networks[1][1])
    api.start(created["Id"])


def _mounts(inspect: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {m["Destination"]: (m["Type"], m.get("Name") or m["Source"]) for m in inspect["Mounts"]}


@pytest.mark.matrix
def test_user_settings_survive_and_image_defaults_follow_the_new_image(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path, root: Path) -> None:
    """Every user-set field is equal before and after; env and labels of the old image are
    gone, the new image's are present; the image's anonymous volume keeps its data."""
    image = f"{registry.host}/fidelity/{unique}:latest"
    images.release(engine.client, image, "1",
                   extra="ENV OLD_ONLY=old\nLABEL old.only=yes\nVOLUME /anon")
    networks = _networks(engine, unique)
    bind_dir = root / f"bind-{unique}"
    bind_dir.mkdir()
    volume = f"{unique}-vol"
    containers.append(unique)
    _create(engine, image, unique, bind_dir, volume, networks, free_port())
    engine.client.containers.get(unique).exec_run(["sh", "-c", "echo kept > /anon/file"])
    before = engine.client.api.inspect_container(unique)
    images.release(engine.client, image, "2", keep_local=False,
                   extra="ENV NEW_ONLY=new\nLABEL new.only=yes\nVOLUME /anon")

    try:
        code, items = update(engine, tmp_path, unique)
        after = engine.client.api.inspect_container(unique)
        anon = engine.client.containers.get(unique).exec_run(["cat", "/anon/file"]).output
    finally:
        engine.client.containers.get(unique).remove(force=True)
        for name, _ in networks:
            engine.client.api.remove_network(name)

    assert code == 0 and items[unique]["outcome"] == "updated", items
    assert after["Id"] != before["Id"] and after["Image"] != before["Image"]
    config_b, config_a = before["Config"], after["Config"]
    for key in ("Cmd", "Image", "Healthcheck", "WorkingDir", "User", "ExposedPorts"):
        assert config_a[key] == config_b[key], key
    assert "USER_VAR=set-by-user" in config_a["Env"] and "NEW_ONLY=new" in config_a["Env"]
    assert "OLD_ONLY=old" in config_b["Env"] and "OLD_ONLY=old" not in config_a["Env"]
    assert config_a["Labels"]["team"] == "blue" and config_a["Labels"]["new.only"] == "yes"
    assert "old.only" not in config_a["Labels"] and config_b["Labels"]["old.only"] == "yes"
    host_b, host_a = before["HostConfig"], after["HostConfig"]
    for key in ("PortBindings", "RestartPolicy", "Memory", "NetworkMode", "CapAdd"):
        assert host_a[key] == host_b[key], key
    assert set(host_b["Binds"]) <= set(host_a["Binds"])
    assert _mounts(after) == _mounts(before)
    assert anon == b"kept\n"
    for name, address in networks:
        net_b = before["NetworkSettings"]["Networks"][name]
        net_a = after["NetworkSettings"]["Networks"][name]
        assert net_a["IPAMConfig"] == net_b["IPAMConfig"] and net_a["IPAddress"] == address
        user_aliases = {"alias-zero", "alias-one"}
        assert set(net_a["Aliases"] or ()) & user_aliases == set(net_b["Aliases"] or ()) & \
            user_aliases != set()


@pytest.mark.matrix
def test_a_mac_address_the_user_set_survives_and_a_generated_one_is_not_copied(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """`--mac-address` on the default bridge and on a user network (where API >= 1.44 keeps it
    per endpoint) is the same after the update; a container whose MAC the engine generated gets
    a generated one again (not a copy, which could clash)."""
    image = f"{registry.host}/mac/{unique}:latest"
    images.release(engine.client, image, "1")
    api = engine.client.api
    [(network, _)] = _networks(engine, unique)[:1]
    wanted = {f"{unique}-bridge": ("02:42:ac:11:99:01", None),
              f"{unique}-usernet": ("02:42:ac:11:99:02", network),
              f"{unique}-generated": (None, None)}
    for name, (mac, net) in wanted.items():
        host = api.create_host_config(network_mode=net) if net else api.create_host_config()
        api.create_container(image, name=name, labels={"updater.enable": "true"},
                             host_config=host, mac_address=mac)
        api.start(name)
        containers.append(name)
    before = {n: api.inspect_container(n) for n in wanted}
    images.release(engine.client, image, "2", keep_local=False)
    code, items = update(engine, tmp_path, *wanted)
    assert code == 0 and {i["outcome"] for i in items.values()} == {"updated"}, items
    for name, (mac, net) in wanted.items():
        after = api.inspect_container(name)
        assert after["Id"] != before[name]["Id"]
        networks = after["NetworkSettings"]["Networks"]
        if mac:
            assert networks[net or "bridge"]["MacAddress"] == mac, (name, networks)
        else:
            assert not after["Config"].get("MacAddress"), after["Config"]


def _api_1_44(engine: Dockerd) -> bool:
    """Whether the engine has a MAC address per endpoint and takes every network at create."""
    version = str(engine.client.version()["ApiVersion"])
    return tuple(int(part) for part in version.split(".")[:2]) >= (1, 44)


def _run_on_two_networks(engine: Dockerd, image: str, name: str,
                         endpoints: dict[str, str | None]) -> None:
    """Run `name` on two user networks (the first its NetworkMode), with a MAC on each endpoint
    that names one: API >= 1.44 takes both endpoints at create, as `docker run --network
    name=a,mac-address=X --network name=b,mac-address=Y` sends them (the SDK takes one); older
    engines have no MAC per endpoint: the second network is connected before the start."""
    api = engine.client.api
    first, second = endpoints
    if _api_1_44(engine):
        body = {"Image": image, "Labels": {"updater.enable": "true"},
                "HostConfig": {"NetworkMode": first},
                "NetworkingConfig": {"EndpointsConfig": {
                    net: {"MacAddress": mac} if mac else {} for net, mac in endpoints.items()}}}
        created = api.post(f"{api.base_url}/v{api.api_version}/containers/create",
                           json=body, params={"name": name})
        assert created.status_code == 201, created.text
    else:
        assert not any(endpoints.values()), "no MAC per endpoint before API 1.44"
        api.create_container(image, name=name, labels={"updater.enable": "true"},
                             host_config=api.create_host_config(network_mode=first))
        api.connect_container_to_network(name, second)
    api.start(name)


def _ip_derived_mac(endpoint: dict[str, Any]) -> str:
    """The MAC engines before 28 generate: 02:42 and the 4 bytes of the IPv4 address."""
    return ":".join(["02", "42", *(f"{int(b):02x}" for b in endpoint["IPAddress"].split("."))])


@pytest.mark.matrix
def test_mac_addresses_of_secondary_networks_the_user_set_survive(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """On two user networks: MACs the user set on both endpoints (API >= 1.44 only, where there
    is one per endpoint) are the same after the update. A container whose MACs the engine
    generated gets none copied from its primary endpoint (Config.MacAddress stays empty); one
    derived from the address (engines before 28) is derived from the new address again; a
    random one on a secondary endpoint (28+) is kept, as it cannot be told from a user's."""
    image = f"{registry.host}/mac2/{unique}:latest"
    images.release(engine.client, image, "1")
    first, second = [net for net, _ in _networks(engine, unique)]
    wanted: dict[str, dict[str, str | None]] = {}
    if _api_1_44(engine):
        wanted[f"{unique}-user"] = {first: "12:34:56:78:9a:01", second: "12:34:56:78:9a:02"}
    wanted[f"{unique}-generated"] = {first: None, second: None}
    try:
        for name, endpoints in wanted.items():
            containers.append(name)
            _run_on_two_networks(engine, image, name, endpoints)
        api = engine.client.api
        before = {n: api.inspect_container(n) for n in wanted}
        images.release(engine.client, image, "2", keep_local=False)
        code, items = update(engine, tmp_path, *wanted)
        after = {n: api.inspect_container(n) for n in wanted}
    finally:
        for name in wanted:
            with contextlib.suppress(docker.errors.NotFound):
                engine.client.containers.get(name).remove(force=True)
        for net in (first, second):
            engine.client.api.remove_network(net)

    assert code == 0 and {i["outcome"] for i in items.values()} == {"updated"}, items
    for name, endpoints in wanted.items():
        assert after[name]["Id"] != before[name]["Id"]
        old, new = (c["NetworkSettings"]["Networks"] for c in (before[name], after[name]))
        for net, mac in endpoints.items():
            if mac:
                assert new[net]["MacAddress"] == mac, (name, net, new)
            elif old[net]["MacAddress"] == _ip_derived_mac(old[net]):
                assert new[net]["MacAddress"] == _ip_derived_mac(new[net]), (name, net, new)
            elif net == first:  # a random one: not pinned by a copy
                assert new[net]["MacAddress"] != old[net]["MacAddress"], (name, net, new)
            else:
                assert new[net]["MacAddress"] == old[net]["MacAddress"], (name, net, new)
    assert not after[f"{unique}-generated"]["Config"].get("MacAddress")


@pytest.mark.matrix
def test_a_container_run_for_another_platform_stays_on_it(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """`docker run --platform linux/386` of a tag whose index has amd64 and 386 images (an
    emulated architecture, as arm64 under QEMU): the update pulls the 386 image again, not
    the engine's own platform."""
    repository = f"platform/{unique}"

    def release(version: str) -> str:
        native = images.release(engine.client, f"{registry.host}/{repository}:amd64-{version}",
                                version)
        foreign = images.for_platform(registry.host, repository, native, "386", f"386-{version}")
        images.push_index(registry.host, repository, "latest", {"amd64": native, "386": foreign})
        return foreign

    release("1")
    image = f"{registry.host}/{repository}:latest"
    engine.client.images.pull(image, platform="linux/386")
    containers.append(unique)
    engine.client.containers.run(image, name=unique, detach=True, platform="linux/386",
                                 labels={"updater.enable": "true"})

    def running() -> tuple[str, str]:
        container = engine.client.containers.get(unique)
        output = container.exec_run(["cat", "/version"]).output
        assert isinstance(output, bytes)
        version = output.decode().strip()
        return _architecture(engine, container.attrs), version

    assert running() == ("386", "1")
    release("2")

    code, items = update(engine, tmp_path, unique)

    assert code == 0 and items[unique]["outcome"] == "updated", items
    assert running() == ("386", "2")


def _architecture(engine: Dockerd, container: dict[str, Any]) -> str:
    """The architecture of the image the container runs (the manifest it was created from,
    where the engine says: the containerd image store keeps every platform under one ID)."""
    descriptor = container.get("ImageManifestDescriptor") or {}
    if descriptor.get("platform"):
        return str(descriptor["platform"]["architecture"])
    return str(engine.client.images.get(container["Image"]).attrs["Architecture"])


# HostConfig fields a user sets with `docker run` options, compared whole before and after.
_RUN_OPTIONS = ("Init", "Runtime", "Sysctls", "Ulimits", "Tmpfs", "SecurityOpt", "PidMode",
                "IpcMode", "CgroupnsMode", "CapDrop", "ReadonlyRootfs", "OomScoreAdj",
                "ShmSize", "PidsLimit", "CpuShares", "Devices", "GroupAdd", "Dns", "DnsOptions",
                "DnsSearch", "ExtraHosts", "LogConfig", "MemoryReservation", "Privileged",
                "UTSMode", "Isolation", "StorageOpt", "MaskedPaths", "ReadonlyPaths",
                "DeviceCgroupRules", "NanoCpus", "AutoRemove")


@pytest.mark.matrix
def test_every_docker_run_option_survives(engine: Dockerd, registry: Registry, unique: str,
                                          containers: list[str], tmp_path: Path) -> None:
    """`--init --runtime --sysctl --ulimit --tmpfs --security-opt --pid --ipc --cgroupns
    --cap-drop --read-only --oom-score-adj --shm-size --pids-limit --cpu-shares --device
    --group-add --dns* --add-host --log-opt --memory-reservation --hostname --domainname
    --stop-signal --stop-timeout`: each is the same on the replacement (and in force: the
    ulimit, the sysctl and the tmpfs are seen from inside it)."""
    image = f"{registry.host}/options/{unique}:latest"
    images.release(engine.client, image, "1")
    api = engine.client.api
    host_config = api.create_host_config(
        init=True, runtime="runc", sysctls={"net.core.somaxconn": "1024"},
        ulimits=[docker.types.Ulimit(name="nofile", soft=1024, hard=2048)],
        tmpfs={"/scratch": "size=1m"}, security_opt=["no-new-privileges"], pid_mode="host",
        ipc_mode="shareable", cgroupns="private", cap_drop=["NET_RAW"], read_only=True,
        oom_score_adj=100, shm_size="16m", pids_limit=100, cpu_shares=512,
        devices=["/dev/null:/dev/xnull:rwm"], group_add=["1234"], dns=["127.0.0.53"],
        dns_opt=["ndots:2"], dns_search=["example.internal"],
        extra_hosts={"db.internal": "10.1.2.3"},
        log_config=docker.types.LogConfig(type="json-file", config={"max-size": "1m"}),
        mem_reservation="32m")
    containers.append(unique)
    created = api.create_container(
        image, command=CMD, name=unique, host_config=host_config, hostname="custom-host",
        domainname="example.internal", stop_signal="SIGUSR1", stop_timeout=7,
        labels={"updater.enable": "true"})
    api.start(created["Id"])
    before = api.inspect_container(unique)
    images.release(engine.client, image, "2", keep_local=False)

    code, items = update(engine, tmp_path, unique)

    assert code == 0 and items[unique]["outcome"] == "updated", items
    after = api.inspect_container(unique)
    assert after["Id"] != before["Id"]
    differ = {key: (before["HostConfig"].get(key), after["HostConfig"].get(key))
              for key in _RUN_OPTIONS
              if before["HostConfig"].get(key) != after["HostConfig"].get(key)}
    assert differ == {}
    for key in ("Hostname", "Domainname", "StopSignal", "StopTimeout"):
        assert after["Config"].get(key) == before["Config"].get(key), key
    # The ulimit as the container's own process has it (an exec's limits are the engine's to
    # set: on 28.5 under load an exec sometimes showed the hard limit as its soft). It shares
    # the host's PID namespace (--pid host), so its PID on the host is its PID inside.
    pid = after["State"]["Pid"]
    inside = engine.client.containers.get(unique).exec_run(
        ["sh", "-c", f"grep 'Max open files' /proc/{pid}/limits; "
                     "cat /proc/sys/net/core/somaxconn; grep -c ' /scratch ' /proc/mounts; "
                     "test -e /dev/xnull && echo device"]).output
    assert isinstance(inside, bytes)
    assert inside.decode().split() == ["Max", "open", "files", "1024", "2048", "files", "1024",
                                       "1", "device"]


@pytest.mark.matrix
def test_a_linked_container_on_the_default_bridge_and_a_user_network_keeps_both(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """`--link` works on the default bridge only; with a user network too (every network in
    the create body on API >= 1.44) the replacement is on both, with the link and the alias."""
    image = f"{registry.host}/links/{unique}:latest"
    images.release(engine.client, image, "1")
    api = engine.client.api
    [(network, _)] = _networks(engine, unique)[:1]
    db, app = f"{unique}-db", f"{unique}-app"
    containers.extend([app, db])
    try:
        engine.client.containers.run(image, name=db, detach=True)
        api.create_container(image, name=app, labels={"updater.enable": "true"},
                             host_config=api.create_host_config(links={db: "database"}))
        api.connect_container_to_network(app, network, aliases=["app-alias"])
        api.start(app)
        images.release(engine.client, image, "2", keep_local=False)
        code, items = update(engine, tmp_path, app)
        after = api.inspect_container(app)
        resolved = engine.client.containers.get(app).exec_run(
            ["sh", "-c", "grep -c database /etc/hosts"]).output
    finally:
        for name in (app, db):
            with contextlib.suppress(docker.errors.NotFound):
                engine.client.containers.get(name).remove(force=True)
        api.remove_network(network)

    assert code == 0 and items[app]["outcome"] == "updated", items
    networks = after["NetworkSettings"]["Networks"]
    assert set(networks) == {"bridge", network}, networks
    assert "app-alias" in (networks[network]["Aliases"] or ()), networks
    assert after["HostConfig"]["Links"] == [f"/{db}:/{app}/database"]
    assert isinstance(resolved, bytes) and resolved.strip() != b"0", resolved
