"""Registry client: the digest a registry holds for `repo:tag`, for as few requests as possible.

Per registry: one `GET /v2/` on first contact to learn the auth challenge (`authorize`); then
per reference one `HEAD` of the manifest, and a `GET` only when the registry sends no
`Docker-Content-Digest` or refuses HEAD. An index's platform entries are read with one GET per
index digest and remembered. Sending, retries and limits are `transport`'s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from updater.core.reference import Reference
from updater.core.settings import RegistrySettings
from updater.errors import (
    ManifestNotFound,
    RegistryAuthError,
    RegistryError,
    RegistryProtocolError,
)
from updater.registry.auth import Credentials
from updater.registry.authorize import Authorizer
from updater.registry.credentials import CredentialSource
from updater.registry.transport import (
    MAX_MANIFEST_BYTES,
    Endpoint,
    RetryPolicy,
    Transport,
    is_loopback,
)

log = logging.getLogger(__name__)
TAGS_PAGE = 100  # tags asked for per page of a tag list
MAX_TAG_PAGES = 100
RETRY = RetryPolicy()
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
# HEAD answers that may only mean "use GET" (Nexus 404, some proxies 403/405).
HEAD_REFUSALS = frozenset({403, 404, 405})
ACCEPT = ", ".join(MANIFEST_TYPES)
MAX_KNOWN_PLATFORMS = 4096  # platform digests kept in memory
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
class KnownPlatforms(Protocol):
    """Platform digests read before, kept across processes (the state database); "" is "the
    index has no entry for that platform"."""

    def get(self, repository: str, digest: str, platform: str) -> str | None: ...

    def put(self, repository: str, digest: str, platform: str, found: str) -> None: ...


class RegistryClient:
    """Asks registries for manifest digests; thread-safe; keeps tokens and connections."""

    def __init__(
        self,
        settings: Mapping[str, RegistrySettings],
        credentials: CredentialSource,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy = RETRY,
        per_registry: int = 8,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        known: KnownPlatforms | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self._transport = Transport(settings, timeout=timeout, retry=retry,
                                    per_registry=per_registry, transport=transport,
                                    sleep=sleep, stopping=stopping)
        self._endpoint = self._transport.endpoint
        self._authorizer = Authorizer(self._transport, credentials, clock)
        self._lock = threading.Lock()
        self._known = known
        self._platform_digests: dict[tuple[str, str, str], str] = {}

    def stats(self) -> tuple[dict[tuple[str, str, int], int], dict[str, float]]:
        """Requests sent by (registry, method, status), and the rate-limit remaining per
        registry where the registry reports one (Docker Hub's `ratelimit-remaining`)."""
        return self._transport.stats()

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def digest(self, reference: Reference) -> str:
        """The digest the registry holds for `reference`'s tag; raises a RegistryError."""
        if reference.tag is None:
            raise RegistryProtocolError(f"{reference} has no tag to look up")
        endpoint = self._endpoint(reference.domain)
        path = f"/v2/{reference.path}/manifests/{reference.tag}"
        scope = f"repository:{reference.path}:pull"
        with endpoint.slots:
            if not endpoint.head_refused:
                response, credentials = self._answer(endpoint, "HEAD", path, scope)
                if response.status_code not in HEAD_REFUSALS:
                    _raise_for_status(response, endpoint, reference, credentials)
                    digest = response.headers.get("Docker-Content-Digest")
                    if digest:
                        return _checked_digest(digest, endpoint.host)
                    log.debug("%s sent no digest on HEAD; fetching the manifest", endpoint.host)
                    response = self._authorized(endpoint, "GET", path, scope, reference)
                    return _verified_body_digest(response, endpoint.host)
                # Some registries (Nexus, some proxies) refuse HEAD where GET works.
                response, credentials = self._answer(endpoint, "GET", path, scope)
                if response.status_code == 200 and not endpoint.head_refused:
                    endpoint.head_refused = True
                    log.info("%s refuses HEAD for manifests (HTTP %d) but answers GET: using GET "
                             "there from now on", endpoint.host, response.status_code)
            else:
                response, credentials = self._answer(endpoint, "GET", path, scope)
            _raise_for_status(response, endpoint, reference, credentials)
            return _verified_body_digest(response, endpoint.host)

    def platform_digest(self, reference: Reference, digest: str, platform: str) -> str | None:
        """The digest of the manifest for `platform` ("os/arch[/variant]") that `digest` names:
        its entry when it is an index (or manifest list), else `digest` itself; None when the
        index has no entry for it. One GET per index digest answers every platform it names:
        kept in memory and in `known`, where one is given. Raises a RegistryError."""
        key = (f"{reference.domain}/{reference.path}", digest, platform)
        with self._lock:
            if key in self._platform_digests:
                return self._platform_digests[key] or None
        found = self._known.get(*key) if self._known is not None else None
        if found is not None:
            self._remember(key, found)
            return found or None
        entries = self._read_index(reference, digest)
        # One read answers every platform the index names (a swarm asks for each of its
        # nodes'); the one asked for is answered even when the index does not name it.
        answers = {wanted: _entry_for(entries, digest, wanted)
                   for wanted in {platform, *_platforms_named(entries)}}
        for wanted, answer in answers.items():
            if self._known is not None:
                self._known.put(key[0], digest, wanted, answer)
            self._remember((key[0], digest, wanted), answer)
        return answers[platform] or None

    def _remember(self, key: tuple[str, str, str], found: str) -> None:
        with self._lock:
            if len(self._platform_digests) >= MAX_KNOWN_PLATFORMS:
                self._platform_digests.pop(next(iter(self._platform_digests)))
            self._platform_digests[key] = found

    def tags(self, reference: Reference) -> list[str]:
        """Every tag of `reference`'s repository: `GET /v2/<name>/tags/list`, a page of
        TAGS_PAGE at a time following the registry's `Link` to the next, at most
        MAX_TAG_PAGES pages. Raises a RegistryError."""
        endpoint = self._endpoint(reference.domain)
        scope = f"repository:{reference.path}:pull"
        path = f"/v2/{reference.path}/tags/list?n={TAGS_PAGE}"
        found: list[str] = []
        with endpoint.slots:
            for _ in range(MAX_TAG_PAGES):
                response = self._authorized(endpoint, "GET", path, scope, reference)
                found += _tags_in(response, endpoint.host)
                following = response.links.get("next", {}).get("url")
                if not following:
                    return found
                path = _next_page(following, endpoint)
        raise RegistryProtocolError(
            f"{endpoint.host} lists more than {MAX_TAG_PAGES * TAGS_PAGE} tags for "
            f"{reference.path}; updater.tags=semver reads at most that many")

    def _read_index(self, reference: Reference, digest: str) -> list[Any] | None:
        """The entries of the index (or manifest list) `digest`; None for a manifest of one
        platform."""
        endpoint = self._endpoint(reference.domain)
        path = f"/v2/{reference.path}/manifests/{digest}"
        with endpoint.slots:
            response = self._authorized(endpoint, "GET", path,
                                        f"repository:{reference.path}:pull", reference)
        if _verified_body_digest(response, endpoint.host) != digest:
            raise RegistryProtocolError(f"{endpoint.host} sent another manifest than {digest}")
        try:
            document = json.loads(response.content)
        except ValueError:
            raise RegistryProtocolError(f"{endpoint.host} sent a manifest that is not JSON") \
                from None
        entries = document.get("manifests") if isinstance(document, dict) else None
        return entries if isinstance(entries, list) else None

    def lookup(self, host: str) -> Credentials | None:
        """The credentials to hand the engine for a pull or service update from `host` (a
        CredentialSource): none for a registry that challenges nobody."""
        return self._authorizer.lookup(host)

    def _authorized(self, endpoint: Endpoint, method: str, path: str, scope: str,
                    reference: Reference) -> httpx.Response:
        response, credentials = self._answer(endpoint, method, path, scope)
        _raise_for_status(response, endpoint, reference, credentials)
        return response

    def _answer(self, endpoint: Endpoint, method: str, path: str,
                scope: str) -> tuple[httpx.Response, Credentials | None]:
        return self._authorizer.answer(endpoint, method, path, scope, {"Accept": ACCEPT})


# --- helpers ------------------------------------------------------------------------------


def _raise_for_status(response: httpx.Response, endpoint: Endpoint, reference: Reference,
                      credentials: Credentials | None) -> None:
    status = response.status_code
    if status == 200:
        return
    if status == 401 and credentials is None:
        raise RegistryAuthError(
            f"{endpoint.host} requires credentials for {reference.path}: set "
            f"registries.{endpoint.host}.username/password or run docker login")
    if status in (401, 403):
        who = credentials.who if credentials else "anonymous access"
        raise RegistryAuthError(
            f"{endpoint.host} refused {who} for {reference.path} (HTTP {status}): check the "
            "password and the user's access")
    if status == 404:
        raise ManifestNotFound(f"{reference} not found in registry {endpoint.host} (HTTP 404): "
                               "check the repository and tag")
    raise RegistryProtocolError(f"{endpoint.host} answered HTTP {status} for {reference}")


def _tags_in(response: httpx.Response, host: str) -> list[str]:
    try:
        tags = json.loads(response.content).get("tags")
    except (ValueError, AttributeError):
        raise RegistryProtocolError(f"{host} sent a tag list that is not JSON") from None
    if tags is None:
        return []  # a repository with no tags says null
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise RegistryProtocolError(f"{host} sent a malformed tag list")
    return tags


def _next_page(url: str, endpoint: Endpoint) -> str:
    """The path of the next page; a `Link` to another host is not followed (the request
    carries the registry's credentials)."""
    parts = urlsplit(url)
    if parts.netloc and parts.netloc != endpoint.client.base_url.netloc.decode():
        raise RegistryProtocolError(f"{endpoint.host} linked the next page of tags to "
                                    f"{parts.netloc}; not followed")
    if not parts.path.startswith("/v2/"):
        raise RegistryProtocolError(f"{endpoint.host} linked the next page of tags to "
                                    f"{parts.path[:80]!r}; not followed")
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _checked_digest(digest: str, host: str) -> str:
    if not _DIGEST.fullmatch(digest):
        raise RegistryProtocolError(f"{host} sent a malformed digest {digest[:80]!r}")
    return digest


def _entry_for(entries: list[Any] | None, digest: str, platform: str) -> str:
    """The digest of the entry for `platform`; `digest` itself when it is a manifest of one
    platform (it is its own); "" when the index names none (remembered as "no entry")."""
    if entries is None:
        return digest
    for entry in entries:
        if isinstance(entry, dict) and _platform_matches(entry.get("platform"), platform):
            return str(entry.get("digest") or "")
    return ""


def _platforms_named(entries: list[Any] | None) -> set[str]:
    """The "os/arch[/variant]" of every image an index names (attestations, which name
    "unknown/unknown", left out)."""
    named = set()
    for entry in entries or ():
        found = entry.get("platform") if isinstance(entry, dict) else None
        if not isinstance(found, dict):
            continue
        parts = [str(found.get(k) or "") for k in ("os", "architecture", "variant")]
        if parts[0] and parts[1] and "unknown" not in parts[:2]:
            named |= {"/".join(parts[:2]), "/".join(part for part in parts if part)}
    return named


def _platform_matches(found: Any, wanted: str) -> bool:
    """An index entry's platform against "os/arch[/variant]" (a variant only where both say)."""
    if not isinstance(found, dict):
        return False
    os_name, _, rest = wanted.partition("/")
    architecture, _, variant = rest.partition("/")
    if (found.get("os"), found.get("architecture")) != (os_name, architecture):
        return False
    return not (variant and found.get("variant") and found.get("variant") != variant)


def _verified_body_digest(response: httpx.Response, host: str) -> str:
    body = response.content
    if len(body) > MAX_MANIFEST_BYTES:
        raise RegistryProtocolError(f"{host} sent a manifest over {MAX_MANIFEST_BYTES} bytes")
    computed = "sha256:" + hashlib.sha256(body).hexdigest()
    sent = response.headers.get("Docker-Content-Digest")
    if sent and sent != computed:
        raise RegistryProtocolError(f"{host} sent a manifest whose digest {computed[:19]} does "
                                    f"not match its Docker-Content-Digest {sent[:19]}")
    return computed


__all__ = ["RegistryClient", "RegistryError", "RetryPolicy", "is_loopback"]
