"""An in-memory Docker engine with the calls the container updater makes, for unit tests of
its state machine: containers and images as inspect documents, names that clash as the
engine's do, `--rm` containers deleted when they stop, images whose containers exit at once,
and a crash (the updater process killed) before any chosen mutating call."""

from __future__ import annotations

import copy
import itertools
from typing import Any

from updater.errors import AlreadyExists, EngineError, NotFoundInEngine


class Clock:
    """Time that passes only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Crash(BaseException):
    """The updater was killed here: nothing of it runs on (not an Exception it could catch)."""


class FakeEngine:
    def __init__(self) -> None:
        self.containers: dict[str, dict[str, Any]] = {}
        self.images: dict[str, dict[str, Any]] = {}
        self.references: dict[str, str] = {}  # repo:tag and repo@digest -> image ID
        self.registry: dict[str, str] = {}  # digest -> image ID a pull of it gives
        self.broken: set[str] = set()  # image IDs whose containers exit at once
        self.unstartable: set[str] = set()  # image IDs whose containers the engine won't start
        self.calls: list[str] = []  # mutating calls, in order
        self.crash_before: int | None = None  # 1-based index of the call to die before
        self.api_1_44 = False  # whether create takes every network (else: connected after)
        self.bodies: dict[str, dict[str, Any]] = {}  # name created -> create body
        self.refusals: dict[str, str] = {}  # a call starting with the key fails with the value
        self.hook_codes: dict[str, int | None] = {}  # exec'd command -> its exit code (None:
        # it outlived its time limit); any other command succeeds
        self._ids = itertools.count(1)

    # --- set-up -----------------------------------------------------------------------------

    def add_image(self, reference: str, version: str, digest: str, *,
                  local: bool = True) -> str:
        image_id = f"sha256:{version * 64}"[:71]
        self.images[image_id] = {"Id": image_id, "Os": "linux", "Architecture": "amd64",
                                 "Config": {"Env": ["PATH=/bin"], "Cmd": ["run"],
                                            "Labels": {"org.opencontainers.image.version":
                                                       version}}}
        self.registry[digest] = image_id
        repository = reference.rsplit(":", 1)[0]
        if local:
            self.references[reference] = image_id
            self.references[f"{repository}@{digest}"] = image_id
        else:  # only in the registry: a pull brings it
            self.images[image_id]["_remote"] = True
        return image_id

    def run(self, name: str, reference: str, **host: Any) -> str:
        container = self._new(name, {"Image": reference, "Env": ["PATH=/bin"],
                                     "Cmd": ["run"], "Labels": {}},
                              {"RestartPolicy": {"Name": "unless-stopped"}, **host},
                              self.references[reference])
        self._start(container)
        return str(container["Id"])

    # --- what the updater calls ---------------------------------------------------------------

    def inspect_container(self, reference: str) -> dict[str, Any] | None:
        found = self._find(reference)
        if found is not None and found.get("_removing"):
            found["_removing"] -= 1
            if not found["_removing"]:  # the engine's deletion is done
                del self.containers[str(found["Id"])]
                return None
        return copy.deepcopy(found) if found is not None else None

    def inspect_image(self, reference: str) -> dict[str, Any]:
        image_id = self.references.get(reference, reference)
        found = self.images.get(image_id)
        if found is None or found.get("_remote"):
            raise NotFoundInEngine(f"no such image {reference}")
        return copy.deepcopy(found)

    def pull(self, repository: str, digest: str, auth: dict[str, str] | None,
             platform: str | None = None) -> str:
        self._act(f"pull {repository}@{digest}")
        image_id = self.registry[digest]
        self.images[image_id].pop("_remote", None)
        self.references[f"{repository}@{digest}"] = image_id
        return image_id

    def tag(self, image: str, repository: str, tag: str) -> None:
        self._act(f"tag {repository}:{tag}")
        self.references[f"{repository}:{tag}"] = self.references.get(image, image)

    def create(self, body: dict[str, Any], name: str, image_id: str | None = None,
               platform: str | None = None) -> str:
        self._act(f"create {name}")
        self.bodies[name] = copy.deepcopy(body)
        config = {k: v for k, v in body.items() if k not in ("HostConfig", "NetworkingConfig")}
        return str(self._new(name, config, dict(body.get("HostConfig") or {}),
                             image_id or self.references[str(body["Image"])])["Id"])

    def endpoints_at_create(self) -> bool:
        return self.api_1_44

    def connect_network(self, network: str, container: str, endpoint: dict[str, Any]) -> None:
        self._act(f"connect {container[:12]} {network}")

    def rename(self, container: str, name: str) -> None:
        self._act(f"rename {self._name(container)} {name}")
        found = self._require(container)
        if self._find(name) is not None:
            raise EngineError(f"Conflict: the name {name} is in use")
        found["Name"] = f"/{name}"

    def start(self, container: str) -> None:
        self._act(f"start {self._name(container)}")
        found = self._require(container)
        if found["Image"] in self.unstartable:
            raise EngineError(f"failed to start {self._name(container)}: driver failed "
                              "programming external connectivity")
        self._start(found)

    def stop(self, container: str, timeout: float, signal: str | None = None) -> None:
        self._act(f"stop {self._name(container)}")
        found = self._require(container)
        found["State"].update(Running=False, Paused=False, Status="exited", ExitCode=0)
        if found["HostConfig"].get("AutoRemove"):
            del self.containers[str(found["Id"])]

    def remove(self, container: str, force: bool = False) -> None:
        self._act(f"remove {self._name(container)}")
        found = self._find(container)
        if found is None:
            return
        if found["State"]["Running"] and not force:
            raise EngineError(f"Conflict: container {container} is running")
        if found.get("_removing"):
            raise AlreadyExists(f"removal of container {found['Id']} is already in progress")
        del self.containers[str(found["Id"])]

    def remove_image(self, image: str) -> None:
        self._act(f"remove image {image[:19]}")

    def pause(self, container: str) -> None:
        self._act(f"pause {self._name(container)}")
        self._require(container)["State"]["Paused"] = True

    def unpause(self, container: str) -> None:
        self._act(f"unpause {self._name(container)}")
        self._require(container)["State"]["Paused"] = False

    def set_restart_policy(self, container: str, policy: dict[str, Any]) -> None:
        self._act(f"restart policy {self._name(container)}")
        self._require(container)["HostConfig"]["RestartPolicy"] = dict(policy)

    # --- views for the tests ------------------------------------------------------------------

    def exec(self, container: str, command: str, timeout: float) -> tuple[int | None, str]:
        """A hook: its exit code from `hook_codes` (0 for any other), saying nothing."""
        self._act(f"exec in {self._name(container)}")
        return self.hook_codes.get(command, 0), ""

    def named(self) -> dict[str, tuple[str, bool]]:
        """Every container: name -> (image ID, running)."""
        return {str(c["Name"]).lstrip("/"): (str(c["Image"]), bool(c["State"]["Running"]))
                for c in self.containers.values()}

    # --- inside -------------------------------------------------------------------------------

    def _act(self, what: str) -> None:
        if self.crash_before is not None and len(self.calls) + 1 == self.crash_before:
            self.crash_before = None
            raise Crash(what)
        self.calls.append(what)
        for call, message in self.refusals.items():
            if what.startswith(call):
                raise EngineError(message)

    def _new(self, name: str, config: dict[str, Any], host: dict[str, Any],
             image_id: str) -> dict[str, Any]:
        if self._find(name) is not None:
            raise EngineError(f"Conflict: the name {name} is in use")
        container_id = f"{next(self._ids):064x}"
        config = {**config, "Hostname": container_id[:12]}
        container = {"Id": container_id, "Name": f"/{name}", "Image": image_id,
                     "Config": config, "HostConfig": host, "Mounts": [],
                     "NetworkSettings": {"Networks": {}},
                     "State": {"Running": False, "Paused": False, "Restarting": False,
                               "Status": "created", "ExitCode": 0}}
        self.containers[container_id] = container
        return container

    def _start(self, container: dict[str, Any]) -> None:
        if container["Image"] in self.broken:
            container["State"].update(Running=False, Status="exited", ExitCode=3)
            # A `--rm` container that exits: the engine is deleting it, which takes a while
            # (six more looks at it); a remove meanwhile is refused with 409.
            if container["HostConfig"].get("AutoRemove"):
                container["_removing"] = 6
        else:
            container["State"].update(Running=True, Status="running", ExitCode=0)

    def _find(self, reference: str) -> dict[str, Any] | None:
        if not reference:
            return None
        for container in self.containers.values():
            if reference in (container["Id"], container["Name"].lstrip("/")) or (
                    len(reference) >= 12 and str(container["Id"]).startswith(reference)):
                return container
        return None

    def _require(self, reference: str) -> dict[str, Any]:
        found = self._find(reference)
        if found is None:
            raise NotFoundInEngine(f"no such container {reference}")
        return found

    def _name(self, reference: str) -> str:
        found = self._find(reference)
        return str(found["Name"]).lstrip("/") if found else reference[:12]
