"""The new container's configuration: everything the user set on the old one, nothing the OLD
image supplied by default (so the NEW image's defaults apply). Pure: dicts in, dicts out.

Inputs are the engine's own inspect documents: the old container, the old image and the new
image. The result is a `/containers/create` body plus the extra networks to connect before the
first start (API < 1.44 accepts one network at create; later engines take them all in the body).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Config fields that fall back to the image's value when the container does not set them.
_IMAGE_DEFAULTS = ("Cmd", "Entrypoint", "WorkingDir", "User", "Healthcheck", "StopSignal",
                   "Shell", "OnBuild")
_RUNTIME_ONLY = ("ArgsEscaped", "Image")
_SPECIAL_NETWORK_MODES = ("host", "none")
COMPOSE_IMAGE = "com.docker.compose.image"


@dataclass(frozen=True, slots=True)
class CreatePlan:
    """What to send to the engine to create the replacement."""

    body: dict[str, Any]
    # Connected before the first start: only where the engine takes one network at create.
    extra_networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The platform to create for, where the engine keeps several under one image ID.
    platform: str | None = None
    # The network of NetworkMode (its endpoint is in the body), if the container has one.
    primary_network: str | None = None


def plan(container: Mapping[str, Any], old_image: Mapping[str, Any],
         new_image: Mapping[str, Any], image_name: str,
         rename_container_refs: Mapping[str, str] | None = None, *,
         endpoints_at_create: bool = False) -> CreatePlan:
    """The create body for a replacement of `container` running `image_name`.

    `rename_container_refs` maps container IDs to the names to use instead in
    `network_mode: container:<id>` (and the PID and IPC modes: the ID of a container that is
    itself being replaced). `endpoints_at_create`: the engine takes every network at create,
    each with its own MAC address (API >= 1.44); then all go in the body, and the secondary
    ones keep their MAC (see `_secondary_mac`). Else only the primary goes in the body and the
    others are connected after, with no MAC (older engines have none per endpoint).
    """
    config = _config(container, old_image.get("Config") or {}, image_name)
    if COMPOSE_IMAGE in config["Labels"] and new_image.get("Id"):
        # What Compose itself writes: the ID of the image the container runs. Left at the old
        # one, `docker compose up` would recreate the updated container once more.
        config["Labels"][COMPOSE_IMAGE] = str(new_image["Id"])
    host_config = _host_config(container, rename_container_refs or {})
    primary, extra = _networks(container, host_config.get("NetworkMode") or "default",
                               endpoints_at_create)
    if str(host_config.get("NetworkMode") or "").startswith("container:"):
        _drop_network_namespace_settings(config, host_config)
    body = {**config, "HostConfig": host_config}
    primary_network = next(iter(primary), None)
    if endpoints_at_create:
        primary, extra = {**primary, **extra}, {}
    if primary:
        body["NetworkingConfig"] = {"EndpointsConfig": primary}
    return CreatePlan(body=body, extra_networks=extra, platform=manifest_platform(container),
                      primary_network=primary_network)


def manifest_platform(container: Mapping[str, Any]) -> str | None:
    """The platform ("os/arch[/variant]") of the manifest the container was created from, as
    its inspect names it on the containerd image store (`ImageManifestDescriptor`, API >= 1.48),
    which keeps every platform of a tag under one image ID; else None (one platform per ID)."""
    found = (container.get("ImageManifestDescriptor") or {}).get("platform") or {}
    parts = [str(found.get("os") or ""), str(found.get("architecture") or "")]
    if not all(parts):
        return None
    return "/".join(parts + ([str(found["variant"])] if found.get("variant") else []))


def _config(container: Mapping[str, Any], old_defaults: Mapping[str, Any],
            image_name: str) -> dict[str, Any]:
    config = copy.deepcopy(dict(container.get("Config") or {}))
    for key in _RUNTIME_ONLY:
        config.pop(key, None)
    for key in _IMAGE_DEFAULTS:
        if key in config and config[key] == old_defaults.get(key):
            config.pop(key)
    config["Env"] = _without(config.get("Env"), old_defaults.get("Env"))
    config["Labels"] = {k: v for k, v in (config.get("Labels") or {}).items()
                        if (old_defaults.get("Labels") or {}).get(k) != v}
    config["Volumes"] = {path: spec for path, spec in (config.get("Volumes") or {}).items()
                         if path not in (old_defaults.get("Volumes") or {})} or None
    bound = set((container.get("HostConfig") or {}).get("PortBindings") or {})
    image_ports = old_defaults.get("ExposedPorts") or {}
    exposed = config.get("ExposedPorts") or {}
    config["ExposedPorts"] = {port: spec for port, spec in exposed.items()
                              if port in bound or port not in image_ports} or None
    if config.get("Hostname") == str(container.get("Id", ""))[:12]:
        config.pop("Hostname")  # the engine's default, not the user's
    config["Image"] = image_name
    return config


def _drop_network_namespace_settings(config: dict[str, Any], host: dict[str, Any]) -> None:
    """In another container's network namespace these come from that container (inspect shows
    its values); the engine refuses them at create."""
    for key in ("Hostname", "Domainname", "ExposedPorts", "MacAddress"):
        config.pop(key, None)
    for key in ("PortBindings", "PublishAllPorts", "Dns", "DnsOptions", "DnsSearch",
                "ExtraHosts", "Links"):
        host.pop(key, None)


def _without(values: list[str] | None, defaults: list[str] | None) -> list[str]:
    """`values` less those equal to an entry of `defaults` (the old image set them)."""
    inherited = set(defaults or ())
    return [value for value in values or () if value not in inherited]


def _host_config(container: Mapping[str, Any],
                 rename_refs: Mapping[str, str]) -> dict[str, Any]:
    host = copy.deepcopy(dict(container.get("HostConfig") or {}))
    for key in ("NetworkMode", "PidMode", "IpcMode"):
        mode = str(host.get(key) or "")
        if mode.startswith("container:"):
            target = mode.removeprefix("container:")
            host[key] = f"container:{rename_refs.get(target, target)}"
    host["Links"] = [_link_for_create(link) for link in host.get("Links") or ()] or None
    host["Binds"] = (host.get("Binds") or []) + _anonymous_volumes(container, host)
    host["Mounts"] = _named_mounts(container, host.get("Mounts")) or None
    return host


def _named_mounts(container: Mapping[str, Any],
                  mounts: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """`--mount type=volume,dst=X` without a source made an anonymous volume: the new
    container gets that same volume by name, not a fresh empty one."""
    names = {m.get("Destination"): m.get("Name") for m in container.get("Mounts") or ()
             if m.get("Type") == "volume" and m.get("Name")}
    return [{**mount, "Source": names[mount.get("Target")]}
            if mount.get("Type") == "volume" and not mount.get("Source")
            and names.get(mount.get("Target")) else mount
            for mount in mounts or ()]


def _link_for_create(link: str) -> str:
    """Inspect shows links as `/target:/this/alias`; create takes `target:alias`."""
    target, _, alias = link.partition(":")
    return f"{target.lstrip('/')}:{alias.rsplit('/', 1)[-1]}"


def _anonymous_volumes(container: Mapping[str, Any], host: Mapping[str, Any]) -> list[str]:
    """Volumes the old image declared and the engine created anonymously: bound by name into
    the new container, so their data is not left behind."""
    explicit = {str(m.get("Target")) for m in host.get("Mounts") or ()}
    explicit |= {str(b).split(":")[1] for b in host.get("Binds") or () if ":" in str(b)}
    # Only its own: the image's and `-v /path` ones. Those of `--volumes-from` come with it.
    own = set((container.get("Config") or {}).get("Volumes") or ())
    return [f"{m['Name']}:{m['Destination']}" for m in container.get("Mounts") or ()
            if m.get("Type") == "volume" and m.get("Name") and m["Destination"] not in explicit
            and m["Destination"] in own]


def _networks(container: Mapping[str, Any], mode: str,
              secondary_macs: bool) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The primary endpoint (NetworkMode's) and the others, each as create takes it. The
    primary's MAC is Config.MacAddress, never its endpoint's (see `_secondary_mac`)."""
    if mode in _SPECIAL_NETWORK_MODES or mode.startswith("container:"):
        return {}, {}
    endpoints = (container.get("NetworkSettings") or {}).get("Networks") or {}
    short_id = str(container.get("Id", ""))[:12]
    cleaned = {name: _endpoint(spec, short_id) for name, spec in endpoints.items()}
    primary_name = mode if mode in cleaned else "bridge" if mode == "default" else None
    if primary_name is None or primary_name not in cleaned:
        primary_name = next(iter(cleaned), None)
    if primary_name is None:
        return {}, {}
    primary = {primary_name: cleaned.pop(primary_name)}
    if secondary_macs:
        for name, endpoint in cleaned.items():
            mac = _secondary_mac(endpoints[name])
            if mac:
                endpoint["MacAddress"] = mac
    return primary, cleaned


def _secondary_mac(spec: Mapping[str, Any]) -> str | None:
    """The MAC address to create a secondary endpoint with: the one inspect shows, unless the
    engine derived it from the endpoint's IPv4 address (02:42 and the address's 4 bytes, as
    engines before 28 generate them).

    A running container's inspect shows every endpoint's MAC, the user's and the generated
    alike, and engines 28+ generate random ones, which cannot be told from a user's. So such
    a MAC is copied: a generated one kept is harmless (nothing is derived from it), a user's
    one lost is not. The primary endpoint is not handled here: its user MAC is
    Config.MacAddress, and its operational one is never copied (that would pin a generated
    one). A stopped container shows no MAC on any endpoint: there is nothing to keep."""
    mac = str(spec.get("MacAddress") or "")
    if not mac or mac.lower() == _ip_derived_mac(str(spec.get("IPAddress") or "")):
        return None
    return mac


def _ip_derived_mac(address: str) -> str | None:
    """The MAC engines before 28 generate for an IPv4 address; None if it is not one."""
    parts = address.split(".")
    if len(parts) != 4 or not all(part.isdigit() and int(part) < 256 for part in parts):
        return None
    return ":".join(["02", "42", *(f"{int(part):02x}" for part in parts)])


def _endpoint(spec: Mapping[str, Any], short_id: str) -> dict[str, Any]:
    """The user-set part of an endpoint: aliases (less the engine's own), static addresses,
    links, driver options, gateway priority."""
    endpoint: dict[str, Any] = {}
    aliases = [a for a in spec.get("Aliases") or () if a != short_id]
    if aliases:
        endpoint["Aliases"] = aliases
    if spec.get("IPAMConfig"):
        endpoint["IPAMConfig"] = dict(spec["IPAMConfig"])
    if spec.get("Links"):
        endpoint["Links"] = list(spec["Links"])
    if spec.get("DriverOpts"):
        endpoint["DriverOpts"] = dict(spec["DriverOpts"])
    if spec.get("GwPriority"):  # API >= 1.48: which network's gateway is the default route
        endpoint["GwPriority"] = spec["GwPriority"]
    return endpoint
