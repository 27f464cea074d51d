"""The one exception tree of the updater.

    UpdaterError                  anything a user or the environment caused; one clear line
    ├── ConfigError               bad settings (file, environment, flags, labels)
    ├── StateError                the state database could not be read or written (disk full)
    ├── NotWatched                a name asked for matches no watched container or service
    ├── InvalidReference          an image reference Docker would reject (also a ValueError)
    ├── EngineError               the Docker engine refused or failed a call
    │   ├── EngineUnavailable     the engine cannot be reached at all
    │   ├── NotFoundInEngine      no such container, image or network (404)
    │   └── AlreadyExists         an object of that name exists (409)
    └── RegistryError             a registry could not answer a question about an image
        ├── RegistryUnavailable   connection failed, timed out, or 5xx/429 after retries
        ├── RegistryAuthError     401/403: credentials missing, wrong or insufficient
        │   └── CredentialsUnavailable  the Docker config or a credential helper failed
        ├── ManifestNotFound      404: no such repository or tag
        └── RegistryProtocolError the answer was unusable or unsafe to follow

Adapters translate foreign exceptions into these once, at the edge; callers branch on the
types, never on message text. Messages never contain credentials.
"""

from __future__ import annotations


class UpdaterError(Exception):
    """Base of every error the updater reports to its user."""


class ConfigError(UpdaterError):
    """A setting is unknown, malformed or inconsistent."""


class StateError(UpdaterError):
    """The state database in state_dir could not be read or written."""


class NotWatched(UpdaterError):
    """A name asked for matches no watched container or service."""


class InvalidReference(UpdaterError, ValueError):
    """An image reference does not follow Docker's grammar."""


class EngineError(UpdaterError):
    """The Docker engine refused or failed a request."""


class EngineUnavailable(EngineError):
    """The Docker engine cannot be reached."""


class NotFoundInEngine(EngineError):
    """The engine has no object by that name or ID."""


class AlreadyExists(EngineError):
    """The engine has an object of that name already (409)."""


class RegistryError(UpdaterError):
    """A registry request failed."""


class RegistryUnavailable(RegistryError):
    """The registry could not be reached or kept failing."""


class RegistryAuthError(RegistryError):
    """The registry refused the credentials (or their absence)."""


class CredentialsUnavailable(RegistryAuthError):
    """The credentials of one registry could not be read (a broken helper or config.json):
    an error of the images on that registry only."""


class ManifestNotFound(RegistryError):
    """The registry has no manifest under that name and tag."""


class RegistryProtocolError(RegistryError):
    """The registry answered something unusable, or asked for something unsafe."""
