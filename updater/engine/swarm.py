"""The swarm's part of the engine adapter (the Engine is one): nodes, services and their
updates, tasks and configs, as the engine reports them."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import docker

from updater.engine.calls import message
from updater.errors import AlreadyExists, EngineError, NotFoundInEngine


class SwarmCalls:
    host: str
    _api: docker.APIClient

    @property
    def api_version(self) -> str:
        raise NotImplementedError

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def inspect_node(self, node: str) -> dict[str, Any]:
        return dict(self._call(f"inspect node {node}", self._api.inspect_node, node))

    def tasks(self, service: str | None = None) -> list[dict[str, Any]]:
        """Tasks of one service, or every task the swarm wants running."""
        filters = {"service": service} if service else {"desired-state": "running"}
        return list(self._call("list tasks", self._api.tasks, filters=filters))

    def nodes(self) -> list[dict[str, Any]]:
        return list(self._call("list nodes", self._api.nodes))

    def services(self) -> list[dict[str, Any]]:
        return list(self._call("list services", self._api.services))

    def inspect_service(self, service: str) -> dict[str, Any]:
        return dict(self._call(f"inspect service {service}", self._api.inspect_service,
                               service))

    def update_service(self, service: str, version: int, spec: dict[str, Any],
                       registry_auth: str | None, rollback: bool = False) -> None:
        """POST the whole spec with the version index as the optimistic lock."""
        url = f"{self._api.base_url}/v{self.api_version}/services/{service}/update"
        params: dict[str, Any] = {"version": version}
        if rollback:
            params["rollback"] = "previous"
        headers = {"Content-Type": "application/json"}
        if registry_auth:
            headers["X-Registry-Auth"] = registry_auth
        response = self._call(f"update service {service}", self._api.post, url,
                              data=json.dumps(spec), params=params, headers=headers)
        if response.status_code >= 400:
            raise EngineError(f"Docker engine at {self.host} refused to update service "
                              f"{service}: {message(response)}")

    def rollback_service(self, service: str, version: int) -> None:
        spec = self.inspect_service(service)["Spec"]
        self.update_service(service, version, spec, None, rollback=True)

    def configs(self, label: str) -> list[dict[str, Any]]:
        """The swarm configs that carry `label`."""
        return list(self._call("list configs", self._api.configs, filters={"label": label}))

    def create_config(self, name: str, data: bytes, labels: dict[str, str]) -> bool:
        """Create a swarm config; False when one of that name exists (the swarm refuses a
        second one atomically, so this is a claim only one caller wins)."""
        try:
            self._call(f"create config {name}", self._api.create_config, name, data,
                       labels=labels)
        except AlreadyExists:
            return False
        return True

    def remove_config(self, config: str) -> None:
        with contextlib.suppress(NotFoundInEngine):
            self._call(f"remove config {config}", self._api.remove_config, config)
