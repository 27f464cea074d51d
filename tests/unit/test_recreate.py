"""The replacement's create body: user settings kept, old image defaults dropped."""

from __future__ import annotations

from typing import Any

from updater.engine.recreate import plan

CONTAINER_ID = "abcdef1234567890" * 4


def _container(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "Id": CONTAINER_ID,
        "Image": "sha256:old",
        "Config": {
            "Hostname": CONTAINER_ID[:12], "Image": "reg.example/app:1",
            "Env": ["PATH=/bin", "IMAGE_ONLY=1", "USER_SET=2"],
            "Cmd": ["run"], "Entrypoint": None, "WorkingDir": "/srv", "User": "",
            "Labels": {"from.image": "x", "team": "blue", "overridden": "user"},
            "Volumes": {"/image-vol": {}}, "ExposedPorts": {"80/tcp": {}, "9000/tcp": {}},
            "Healthcheck": {"Test": ["CMD", "true"]}, "StopSignal": "SIGQUIT",
            "ArgsEscaped": True,
        },
        "HostConfig": {
            "NetworkMode": "front", "Binds": ["/host:/host:ro"],
            "PortBindings": {"9000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9000"}]},
            "Links": ["/db:/app/database"], "RestartPolicy": {"Name": "always"},
            "Memory": 67108864,
        },
        "Mounts": [
            {"Type": "bind", "Source": "/host", "Destination": "/host"},
            {"Type": "volume", "Name": "f00d" * 16, "Destination": "/image-vol"},
        ],
        "NetworkSettings": {"Networks": {
            "front": {"Aliases": ["web", CONTAINER_ID[:12]],
                      "IPAMConfig": {"IPv4Address": "172.31.1.5"}, "MacAddress": "02:42"},
            "back": {"Aliases": None, "IPAMConfig": None, "Links": ["db:db"]},
        }},
    }
    base.update(overrides)
    return base


OLD_IMAGE: dict[str, Any] = {"Config": {"Env": ["PATH=/bin", "IMAGE_ONLY=1"], "Cmd": ["default"],
                        "Entrypoint": None, "WorkingDir": "/srv", "User": "",
                        "Labels": {"from.image": "x", "overridden": "image"},
                        "Volumes": {"/image-vol": {}}, "ExposedPorts": {"80/tcp": {}},
                        "Healthcheck": {"Test": ["CMD", "true"]}, "StopSignal": "SIGQUIT"}}
NEW_IMAGE: dict[str, Any] = {"Config": {"Env": ["PATH=/bin", "NEW=1"]}}


def test_user_config_kept_image_defaults_dropped() -> None:
    """What the user set stays; what equals the old image's default goes."""
    body = plan(_container(), OLD_IMAGE, NEW_IMAGE, "reg.example/app:1").body
    assert body["Image"] == "reg.example/app:1"
    assert body["Env"] == ["USER_SET=2"]
    assert body["Cmd"] == ["run"]
    assert body["Labels"] == {"team": "blue", "overridden": "user"}
    for dropped in ("WorkingDir", "User", "Healthcheck", "StopSignal", "ArgsEscaped",
                    "Hostname", "Entrypoint"):
        assert dropped not in body, dropped
    assert body["Volumes"] is None
    assert body["ExposedPorts"] == {"9000/tcp": {}}


def test_host_config_kept_with_links_and_image_volumes_bound() -> None:
    """HostConfig is kept; links take the create form; the image's anonymous volume is bound
    by name so its data follows."""
    host = plan(_container(), OLD_IMAGE, NEW_IMAGE, "x").body["HostConfig"]
    assert host["RestartPolicy"] == {"Name": "always"} and host["Memory"] == 67108864
    assert host["PortBindings"] == {"9000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9000"}]}
    assert host["Links"] == ["db:database"]
    assert host["Binds"] == ["/host:/host:ro", f"{'f00d' * 16}:/image-vol"]


def test_networks_primary_at_create_others_after() -> None:
    """The NetworkMode network goes in the create body; the others are connected after, with
    user aliases and static addresses but not the engine's own alias."""
    result = plan(_container(), OLD_IMAGE, NEW_IMAGE, "x")
    assert result.body["NetworkingConfig"] == {"EndpointsConfig": {
        "front": {"Aliases": ["web"], "IPAMConfig": {"IPv4Address": "172.31.1.5"}}}}
    assert result.extra_networks == {"back": {"Links": ["db:db"]}}


def test_container_network_mode_follows_a_renamed_container() -> None:
    """`container:<id>` of a replaced container becomes `container:<name>`; no endpoints."""
    container = _container()
    container["HostConfig"]["NetworkMode"] = "container:" + "9" * 64
    result = plan(container, OLD_IMAGE, NEW_IMAGE, "x", {"9" * 64: "vpn"})
    assert result.body["HostConfig"]["NetworkMode"] == "container:vpn"
    assert "NetworkingConfig" not in result.body and result.extra_networks == {}


def test_user_hostname_and_overridden_cmd_kept() -> None:
    """A hostname the user chose, and a command equal to nothing in the image, stay."""
    container = _container()
    container["Config"]["Hostname"] = "myhost"
    body = plan(container, OLD_IMAGE, NEW_IMAGE, "x").body
    assert body["Hostname"] == "myhost" and body["Cmd"] == ["run"]


def test_input_is_not_modified() -> None:
    """Planning does not change the inspect documents it reads."""
    container = _container()
    snapshot = repr(container)
    plan(container, OLD_IMAGE, NEW_IMAGE, "x")
    assert repr(container) == snapshot


def test_shared_network_namespace_drops_what_the_engine_refuses() -> None:
    """In `container:X` mode, hostname, ports, DNS and links are X's and are left out."""
    container = _container()
    container["HostConfig"].update(NetworkMode="container:vpn", Dns=["1.1.1.1"])
    container["Config"]["Hostname"] = "vpnhost"
    body = plan(container, OLD_IMAGE, NEW_IMAGE, "x").body
    assert "Hostname" not in body and "ExposedPorts" not in body
    for key in ("PortBindings", "Dns", "Links"):
        assert key not in body["HostConfig"], key


def test_anonymous_mount_volume_is_kept_by_name() -> None:
    """`--mount type=volume,dst=/data` (no source) is bound to the volume it made, by name;
    named mounts, binds and tmpfs mounts pass as they are."""
    mounts = [{"Type": "volume", "Target": "/data", "VolumeOptions": {}},
              {"Type": "volume", "Source": "named", "Target": "/named"},
              {"Type": "tmpfs", "Target": "/tmp"}]
    container = _container(Mounts=[
        {"Type": "volume", "Name": "anon1", "Destination": "/data"},
        {"Type": "volume", "Name": "named", "Destination": "/named"},
        {"Type": "tmpfs", "Destination": "/tmp"}])
    container["HostConfig"]["Mounts"] = mounts
    body = plan(container, OLD_IMAGE, NEW_IMAGE, "reg.example/app:1").body
    assert body["HostConfig"]["Mounts"] == [
        {"Type": "volume", "Source": "anon1", "Target": "/data", "VolumeOptions": {}},
        mounts[1], mounts[2]]
    assert not [b for b in body["HostConfig"]["Binds"] if b.endswith(":/data")]


def test_pid_and_ipc_namespaces_of_a_replaced_container_follow_it_by_name() -> None:
    """`--pid container:<id>` and `--ipc container:<id>` of a replaced container name it."""
    container = _container()
    container["HostConfig"].update(PidMode="container:old-id", IpcMode="container:old-id")
    host = plan(container, OLD_IMAGE, NEW_IMAGE, "reg.example/app:1", {"old-id": "db"}
                ).body["HostConfig"]
    assert (host["PidMode"], host["IpcMode"]) == ("container:db", "container:db")


def test_compose_image_label_names_the_new_image() -> None:
    """Compose records the image ID a container runs; it must name the new one, or `docker
    compose up` recreates the container again. Other Compose labels stay as they were."""
    labels = {"com.docker.compose.image": "sha256:old", "com.docker.compose.project": "p",
              "com.docker.compose.config-hash": "abc"}
    container = {"Id": "c" * 64, "Config": {"Image": "web:1", "Labels": labels},
                 "HostConfig": {}}
    body = plan(container, {"Id": "sha256:old", "Config": {}},
                {"Id": "sha256:new", "Config": {}}, "web:1").body
    assert body["Labels"] == {**labels, "com.docker.compose.image": "sha256:new"}


def test_gpu_device_requests_are_kept() -> None:
    """`--gpus all` (DeviceRequests) cannot be started on these machines, so the copy is
    shown here: the request is in the create body as the user made it."""
    gpus = [{"Driver": "", "Count": -1, "DeviceIDs": None, "Capabilities": [["gpu"]],
             "Options": {}}]
    container = _container()
    container["HostConfig"]["DeviceRequests"] = gpus
    body = plan(container, OLD_IMAGE, NEW_IMAGE, "reg.example/app:1").body
    assert body["HostConfig"]["DeviceRequests"] == gpus


def test_the_platform_of_the_manifest_the_container_came_from() -> None:
    """On the containerd store the container's manifest descriptor names its platform: the
    replacement is created for that one (not the engine's own)."""
    container = _container(ImageManifestDescriptor={
        "digest": "sha256:" + "1" * 64, "platform": {"os": "linux", "architecture": "arm",
                                                     "variant": "v7"}})
    assert plan(container, OLD_IMAGE, NEW_IMAGE, "reg.example/app:1").platform == "linux/arm/v7"
    assert plan(_container(), OLD_IMAGE, NEW_IMAGE, "reg.example/app:1").platform is None


def _two_networks(primary_mac: str, secondary_mac: str) -> dict[str, Any]:
    """Running on `front` (primary, a generated MAC) and `back`, as inspect shows them."""
    container = _container()
    networks = container["NetworkSettings"]["Networks"]
    networks["front"].update(MacAddress=primary_mac, IPAddress="172.31.1.5")
    networks["back"].update(MacAddress=secondary_mac, IPAddress="172.31.2.7")
    return container


def test_every_network_in_the_body_where_the_engine_takes_them_all() -> None:
    """API >= 1.44: the secondary network goes in the create body with a MAC the user set, as
    the primary (first); nothing is left to connect."""
    container = _two_networks("9a:0b:1c:2d:3e:4f", "12:34:56:78:9a:bc")
    result = plan(container, OLD_IMAGE, NEW_IMAGE, "x", endpoints_at_create=True)
    endpoints = result.body["NetworkingConfig"]["EndpointsConfig"]
    assert endpoints == {
        "front": {"Aliases": ["web"], "IPAMConfig": {"IPv4Address": "172.31.1.5"}},
        "back": {"Links": ["db:db"], "MacAddress": "12:34:56:78:9a:bc"}}
    assert list(endpoints) == ["front", "back"] and result.primary_network == "front"
    assert result.extra_networks == {}


def test_a_mac_derived_from_the_address_is_not_copied() -> None:
    """02:42 and the IPv4 address's bytes is what engines before 28 generate: left out, so the
    new endpoint gets one from its own (perhaps new) address; in either case of hex digits."""
    for generated in ("02:42:ac:1f:02:07", "02:42:AC:1F:02:07"):
        container = _two_networks("02:42:ac:1f:01:05", generated)
        endpoints = plan(container, OLD_IMAGE, NEW_IMAGE, "x", endpoints_at_create=True
                         ).body["NetworkingConfig"]["EndpointsConfig"]
        assert endpoints["back"] == {"Links": ["db:db"]}, generated


def test_a_mac_like_the_pattern_of_another_address_is_copied() -> None:
    """02:42 with bytes that are not this endpoint's address is not the engine's: kept."""
    container = _two_networks("02:42:ac:1f:01:05", "02:42:ac:1f:01:05")
    endpoints = plan(container, OLD_IMAGE, NEW_IMAGE, "x", endpoints_at_create=True
                     ).body["NetworkingConfig"]["EndpointsConfig"]
    assert endpoints["back"]["MacAddress"] == "02:42:ac:1f:01:05"


def test_the_primary_mac_is_config_mac_address_only() -> None:
    """The primary endpoint's MAC as shown is never copied (a generated one would be pinned);
    the one the user set is Config.MacAddress, kept as it is."""
    container = _two_networks("9a:0b:1c:2d:3e:4f", "")
    body = plan(container, OLD_IMAGE, NEW_IMAGE, "x", endpoints_at_create=True).body
    assert "MacAddress" not in body["NetworkingConfig"]["EndpointsConfig"]["front"]
    assert "MacAddress" not in body
    container["Config"]["MacAddress"] = "9a:0b:1c:2d:3e:4f"
    body = plan(container, OLD_IMAGE, NEW_IMAGE, "x", endpoints_at_create=True).body
    assert body["MacAddress"] == "9a:0b:1c:2d:3e:4f"
    assert "MacAddress" not in body["NetworkingConfig"]["EndpointsConfig"]["front"]


def test_a_stopped_container_has_no_mac_to_keep() -> None:
    """A stopped container shows '' on every endpoint (the user's MAC too): none is set."""
    container = _two_networks("", "")
    endpoints = plan(container, OLD_IMAGE, NEW_IMAGE, "x", endpoints_at_create=True
                     ).body["NetworkingConfig"]["EndpointsConfig"]
    assert "MacAddress" not in endpoints["front"] and "MacAddress" not in endpoints["back"]


def test_an_engine_taking_one_network_gets_no_endpoint_mac() -> None:
    """API < 1.44: the primary at create, the others connected after, none with a MAC (there
    is none per endpoint); as before."""
    container = _two_networks("02:42:ac:1f:01:05", "12:34:56:78:9a:bc")
    result = plan(container, OLD_IMAGE, NEW_IMAGE, "x")
    assert result.body["NetworkingConfig"] == {"EndpointsConfig": {
        "front": {"Aliases": ["web"], "IPAMConfig": {"IPv4Address": "172.31.1.5"}}}}
    assert result.extra_networks == {"back": {"Links": ["db:db"]}}
    assert result.primary_network == "front"


def test_the_gateway_priority_of_a_network_is_kept() -> None:
    """`--network name=back,gw-priority=10` (API >= 1.48) makes `back`'s gateway the default
    route; without it the replacement's default route would move to `front`."""
    container = _two_networks("9a:0b:1c:2d:3e:4f", "02:42:ac:1f:02:07")
    container["NetworkSettings"]["Networks"]["back"]["GwPriority"] = 10
    endpoints = plan(container, OLD_IMAGE, NEW_IMAGE, "x",
                     endpoints_at_create=True).body["NetworkingConfig"]["EndpointsConfig"]
    assert endpoints["back"]["GwPriority"] == 10 and "GwPriority" not in endpoints["front"]
