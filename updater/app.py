"""The composition root: builds the long-lived parts (registry client with its token cache,
journal) once, and an engine connection per pass, so a restarted dockerd is picked up."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from updater.config import Settings
from updater.containers import ContainerUpdater
from updater.credentials import ChainedCredentials, DockerConfigCredentials, SettingsCredentials
from updater.engine import Engine
from updater.journal import Journal
from updater.passes import UpdatePass
from updater.registry import RegistryClient
from updater.report import PassReport


class Application:
    def __init__(self, settings: Settings, journal: Journal | None = None) -> None:
        self.settings = settings
        self.credentials = ChainedCredentials(SettingsCredentials(settings.registries),
                                              DockerConfigCredentials())
        self.registry = RegistryClient(settings.registries, self.credentials,
                                       timeout=settings.registry_timeout)
        self.journal = journal or Journal(settings.state_dir)

    def close(self) -> None:
        self.registry.close()
        self.journal.close()

    def __enter__(self) -> Application:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def run_pass(self, names: Iterable[str] = (),
                 stop_requested: Callable[[], bool] = lambda: False) -> PassReport:
        engine = Engine.connect(self.settings.docker_host)
        try:
            updater = ContainerUpdater(engine, self.journal, self.credentials,
                                       cleanup=self.settings.cleanup)
            return UpdatePass(engine, self.registry, updater, self.settings).run(
                names, stop_requested)
        finally:
            engine.close()
