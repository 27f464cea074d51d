"""Registry client: the digest a registry holds for `repo:tag`, for as few requests as possible.

Per registry: one `GET /v2/` on first contact to learn the auth challenge; then per reference one
`HEAD` of the manifest (with a cached Bearer token or Basic credentials), and a `GET` only when
the registry sends no `Docker-Content-Digest`. Transient failures (connection errors, timeouts,
429, 5xx) are retried with backoff that honours `Retry-After`, bounded in attempts and time.
Credentials never travel over plain HTTP unless the registry is marked insecure, never to a
token realm on another host over plain HTTP, and never along a redirect.

Credentials are read only for a registry that challenges, kept for CREDENTIALS_MAX_AGE, and
read again at once when the registry or its token server refuses them (a helper's short-lived
token was rotated); one refusal is retried with what was read, so a rotation costs no pass.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import math
import random
import re
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import tenacity

from updater import __version__
from updater.core.reference import Reference, registry_host
from updater.core.settings import RegistrySettings
from updater.errors import (
    ManifestNotFound,
    RegistryAuthError,
    RegistryError,
    RegistryProtocolError,
    RegistryUnavailable,
)
from updater.registry.auth import (
    Challenge,
    Credentials,
    TokenCache,
    parse_challenges,
    preferred,
    token_key,
)
from updater.registry.credentials import CredentialSource

log = logging.getLogger(__name__)

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
# HEAD answers that may only mean "use GET" (Nexus 404, some proxies 403/405).
HEAD_REFUSALS = frozenset({403, 404, 405})
ACCEPT = ", ".join(MANIFEST_TYPES)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_KNOWN_PLATFORMS = 4096  # platform digests kept in memory
MAX_BODY_BYTES = MAX_MANIFEST_BYTES + 64 * 1024  # any response: a manifest, a token, an error
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_MAX_REDIRECTS = 3
CREDENTIALS_MAX_AGE = 300.0  # helpers hand out tokens that live ~1 h (gcloud) to ~12 h (ECR)
_REREAD_AFTER_REFUSAL = 10.0  # a wrong password costs one helper run per 10 s, not per image
_RETRY_FAILED_READ = 30.0
OAUTH_CLIENT_ID = "updater"  # the client_id of OAuth2 token requests (Docker sends "docker")
Form = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient registry failures are retried: attempts, a time budget, backoff."""

    attempts: int = 4
    budget: float = 60.0
    backoff: float = 1.0
    max_wait: float = 30.0


class _Stopping(Exception):
    """The updater is stopping: a backoff is cut short and nothing is retried."""


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


_UNKNOWN = Challenge("unknown")


class _Endpoint:
    """One registry host: its HTTP client, auth challenge, concurrency slots."""

    def __init__(self, host: str, insecure: bool, client: httpx.Client, slots: int) -> None:
        self.host = host
        self.insecure = insecure
        self.client = client
        self.slots = threading.BoundedSemaphore(slots)
        self.lock = threading.Lock()
        self.challenge: Challenge | None = _UNKNOWN
        self.credentials_lock = threading.Lock()
        self.credentials: Credentials | None = None
        self.credentials_error: RegistryError | None = None
        self.credentials_read_at: float | None = None
        self.reread_after_refusal_at = -math.inf
        self.head_refused = False  # answers GET for manifests where it refuses HEAD


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
        retry: RetryPolicy = RetryPolicy(),
        per_registry: int = 8,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        known: KnownPlatforms | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self._settings = settings
        self._credentials = credentials
        self._timeout = timeout
        self._retry = retry
        self._per_registry = per_registry
        self._transport = transport
        self._sleep = sleep
        self._stopping = stopping  # set on SIGTERM: every backoff ends at once
        self._clock = clock
        self._tokens = TokenCache(clock)
        self._endpoints: dict[str, _Endpoint] = {}
        self._lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._requests: Counter[tuple[str, str, int]] = Counter()
        self._ratelimit: dict[str, float] = {}
        self._known = known
        self._platform_digests: dict[tuple[str, str, str], str] = {}

    def stats(self) -> tuple[dict[tuple[str, str, int], int], dict[str, float]]:
        """Requests sent by (registry, method, status), and the rate-limit remaining per
        registry where the registry reports one (Docker Hub's `ratelimit-remaining`)."""
        with self._stats_lock:
            return dict(self._requests), dict(self._ratelimit)

    def close(self) -> None:
        for endpoint in self._endpoints.values():
            endpoint.client.close()

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

    # --- endpoints and auth -----------------------------------------------------------------

    def _endpoint(self, host: str) -> _Endpoint:
        with self._lock:
            endpoint = self._endpoints.get(host)
            if endpoint is None:
                endpoint = self._endpoints[host] = self._new_endpoint(host)
            return endpoint

    def _new_endpoint(self, host: str) -> _Endpoint:
        entry = self._settings.get(registry_host(host), RegistrySettings())
        insecure = entry.insecure if entry.insecure is not None else is_loopback(host)
        api_host = "registry-1.docker.io" if host == "docker.io" else host
        client = httpx.Client(
            base_url=f"{'http' if insecure else 'https'}://{api_host}",
            verify=_tls_context(host, entry.ca_file),
            timeout=self._timeout,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=self._per_registry,
                                max_keepalive_connections=self._per_registry),
            headers={"User-Agent": f"updater/{__version__}"},
            transport=self._transport,
        )
        return _Endpoint(host, insecure, client, self._per_registry)

    def lookup(self, host: str) -> Credentials | None:
        """The credentials to hand the engine for a pull or service update from `host` (a
        CredentialSource): none for a registry that challenges nobody, so a broken helper
        entry of an anonymous registry stops nothing."""
        endpoint = self._endpoint(host)
        if self._challenge(endpoint) is None:
            return None
        return self._credentials_for(endpoint)

    def _credentials_for(self, endpoint: _Endpoint, refused: bool = False) -> Credentials | None:
        """The registry's credentials, read from the sources when first needed, when older
        than CREDENTIALS_MAX_AGE, or when the registry has just refused them (at most once
        per _REREAD_AFTER_REFUSAL: credentials that stay wrong cost no helper run per image)."""
        with endpoint.credentials_lock:
            now = self._clock()
            read_at = endpoint.credentials_read_at
            age = math.inf if read_at is None else now - read_at
            max_age = CREDENTIALS_MAX_AGE if endpoint.credentials_error is None else \
                _RETRY_FAILED_READ
            due = age > max_age
            if refused and now - endpoint.reread_after_refusal_at > _REREAD_AFTER_REFUSAL:
                endpoint.reread_after_refusal_at = now
                due = True
            if due:
                try:
                    endpoint.credentials = self._credentials.lookup(endpoint.host)
                    endpoint.credentials_error = None
                except RegistryError as exc:
                    endpoint.credentials, endpoint.credentials_error = None, exc
                endpoint.credentials_read_at = now
            if endpoint.credentials_error is not None:
                raise endpoint.credentials_error
            return endpoint.credentials

    def _challenge(self, endpoint: _Endpoint) -> Challenge | None:
        """The registry's auth challenge from `GET /v2/`, asked once per registry."""
        with endpoint.lock:
            if endpoint.challenge is _UNKNOWN:
                response = self._send(endpoint, "GET", "/v2/", {})
                if response.status_code == 401:
                    header = response.headers.get("WWW-Authenticate", "")
                    endpoint.challenge = preferred(parse_challenges(header))
                elif response.status_code == 200:
                    endpoint.challenge = None
                else:
                    hint = ("; if it serves HTTPS, set registries.<host>.insecure: false"
                            if endpoint.insecure else "")
                    raise RegistryProtocolError(
                        f"{endpoint.host} is not a Docker registry (GET /v2/ answered "
                        f"HTTP {response.status_code}){hint}")
            return endpoint.challenge

    def _authorized(self, endpoint: _Endpoint, method: str, path: str, scope: str,
                    reference: Reference) -> httpx.Response:
        response, credentials = self._answer(endpoint, method, path, scope)
        _raise_for_status(response, endpoint, reference, credentials)
        return response

    def _answer(self, endpoint: _Endpoint, method: str, path: str,
                scope: str) -> tuple[httpx.Response, Credentials | None]:
        """The registry's answer, authorized as it asks (once more after a 401), and the
        credentials sent; not checked."""
        challenge = self._challenge(endpoint)
        authorization, credentials = self._authorization(endpoint, challenge, scope, False)
        response = self._send(endpoint, method, path, {"Accept": ACCEPT, **authorization})
        if response.status_code == 401:
            offered = preferred(parse_challenges(response.headers.get("WWW-Authenticate", "")))
            if offered is not None:
                endpoint.challenge = offered
                authorization, credentials = self._authorization(endpoint, offered, scope, True)
                response = self._send(endpoint, method, path,
                                      {"Accept": ACCEPT, **authorization})
        return response, credentials

    def _authorization(self, endpoint: _Endpoint, challenge: Challenge | None, scope: str,
                       refused: bool) -> tuple[dict[str, str], Credentials | None]:
        """The Authorization header for `challenge`, and the credentials behind it; after a
        refusal (`refused`) with a new token and, unless just read, credentials read anew."""
        if challenge is None:
            return {}, None
        credentials = self._credentials_for(endpoint, refused)
        if challenge.scheme == "basic":
            return ({"Authorization": credentials.basic_header()} if credentials else {},
                    credentials)
        if challenge.scheme != "bearer" or not challenge.realm:
            return {}, credentials
        token, credentials = self._token(endpoint, challenge, scope, credentials, refused)
        return {"Authorization": f"Bearer {token}"}, credentials

    def _token(self, endpoint: _Endpoint, challenge: Challenge, scope: str,
               credentials: Credentials | None, fresh: bool) -> tuple[str, Credentials | None]:
        realm = challenge.realm or ""
        service = challenge.params.get("service", "")
        cached = None if fresh else self._tokens.get(
            token_key(endpoint.host, credentials, realm, service, scope))
        if cached is not None:
            return cached, credentials
        response = self._ask_token(endpoint, realm, service, scope, credentials)
        if response.status_code in (401, 403):
            renewed = self._credentials_for(endpoint, refused=True)
            if renewed != credentials:
                credentials = renewed
                response = self._ask_token(endpoint, realm, service, scope, credentials)
        if response.status_code in (401, 403):
            who = credentials.who if credentials else "anonymous access"
            again = "; run docker login again" if credentials and credentials.identity_token \
                else ": check the credentials"
            raise RegistryAuthError(f"token server of {endpoint.host} refused {who} "
                                    f"(HTTP {response.status_code}){again}")
        if response.status_code != 200:
            raise RegistryProtocolError(f"token server of {endpoint.host} answered "
                                        f"HTTP {response.status_code}")
        token, expires_in = _token_from(response, endpoint.host)
        self._tokens.put(token_key(endpoint.host, credentials, realm, service, scope), token,
                         expires_in)
        return token, credentials

    def _ask_token(self, endpoint: _Endpoint, realm: str, service: str, scope: str,
                   credentials: Credentials | None) -> httpx.Response:
        """The token server's answer, asked as Docker asks: an identity token (from
        `docker login` with an OAuth2 token server) as a `refresh_token` grant; a password by
        GET with Basic auth, and as a `password` grant to a server that takes only POST."""
        _check_realm(realm, endpoint, credentials)
        wanted = [("scope", scope), *([("service", service)] if service else [])]
        if credentials is not None and credentials.identity_token:
            return self._send(endpoint, "POST", realm, {}, form=[
                ("grant_type", "refresh_token"), ("refresh_token", credentials.identity_token),
                ("client_id", OAUTH_CLIENT_ID), *wanted])
        if credentials is None:
            return self._send(endpoint, "GET", _with_query(realm, wanted), {})
        account = [("account", credentials.username)] if credentials.username else []
        response = self._send(endpoint, "GET", _with_query(realm, [*wanted, *account]),
                              {"Authorization": credentials.basic_header()})
        if response.status_code in (404, 405):
            response = self._send(endpoint, "POST", realm, {}, form=[
                ("grant_type", "password"), ("username", credentials.username),
                ("password", credentials.password), ("client_id", OAUTH_CLIENT_ID), *wanted])
        return response

    # --- sending ------------------------------------------------------------------------------

    def _send(self, endpoint: _Endpoint, method: str, url: str, headers: dict[str, str],
              form: Form | None = None) -> httpx.Response:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            stop=self._should_stop,
            wait=self._wait,
            sleep=self._pause,
            reraise=True,
        )
        try:
            response: httpx.Response = retrying(self._send_once, endpoint, method, url,
                                                headers, form)
        except _Transient as exc:
            message = f"registry {endpoint.host} unavailable: {exc.reason}"
            raise RegistryUnavailable(message) from None
        except _Stopping:
            raise RegistryUnavailable(f"registry {endpoint.host} unavailable; not retried: "
                                      "the updater is stopping") from None
        return response

    def _pause(self, seconds: float) -> None:
        """The backoff between two attempts, cut short when the updater is stopping."""
        if self._stopping is None:
            self._sleep(seconds)
        elif self._stopping.wait(seconds):
            raise _Stopping

    def _send_once(self, endpoint: _Endpoint, method: str, url: str, headers: dict[str, str],
                   form: Form | None) -> httpx.Response:
        for _ in range(_MAX_REDIRECTS + 1):
            try:
                response = self._bounded(endpoint, method, url, headers, form)
            except httpx.TimeoutException:
                raise _Transient(f"no answer within {self._timeout:g}s") from None
            except httpx.TransportError as exc:
                _raise_if_untrusted(exc, endpoint.host)
                broke = not isinstance(exc, httpx.ConnectError)
                what = "connection broke" if broke else "cannot connect"
                raise _Transient(f"{what} ({type(exc).__name__})") from None
            self._count(endpoint.host, method, response)
            if response.status_code == 429 or response.status_code >= 500:
                raise _Transient(f"HTTP {response.status_code}", _retry_after(response))
            if not response.is_redirect:
                return response
            url = _same_origin_redirect(response, endpoint.host)
        raise RegistryProtocolError(f"{endpoint.host} redirected more than {_MAX_REDIRECTS} times")

    def _bounded(self, endpoint: _Endpoint, method: str, url: str, headers: dict[str, str],
                 form: Form | None) -> httpx.Response:
        """One request whose body is read with a size cap and an overall deadline, so a
        registry (or something in between) that sends endlessly or drips cannot hold a pass."""
        if form is None:
            request = endpoint.client.build_request(method, url, headers=headers)
        else:
            request = endpoint.client.build_request(
                method, url, content=urlencode(form).encode(),
                headers={**headers, "Content-Type": "application/x-www-form-urlencoded"})
        deadline = time.monotonic() + 3 * self._timeout
        response = endpoint.client.send(request, stream=True)
        try:
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise RegistryProtocolError(
                        f"{endpoint.host} sent a response over {MAX_BODY_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise _Transient(f"response not complete within {3 * self._timeout:g}s")
                chunks.append(chunk)
        finally:
            response.close()
        # The body is decoded already: the copy must not claim an encoding or the old length.
        kept = [(k, v) for k, v in response.headers.multi_items()
                if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
        return httpx.Response(response.status_code, headers=kept, content=b"".join(chunks),
                              request=request)

    def _count(self, host: str, method: str, response: httpx.Response) -> None:
        remaining = _ratelimit_remaining(response)
        with self._stats_lock:
            self._requests[(host, method, response.status_code)] += 1
            if remaining is not None:
                self._ratelimit[host] = remaining

    def _base_wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _Transient) and error.retry_after is not None:
            return float(error.retry_after)
        backoff: float = self._retry.backoff * 2.0 ** (state.attempt_number - 1)
        return min(backoff, self._retry.max_wait)

    def _should_stop(self, state: tenacity.RetryCallState) -> bool:
        if state.attempt_number >= self._retry.attempts:
            return True
        elapsed = state.seconds_since_start or 0.0
        return elapsed + self._base_wait(state) > self._retry.budget

    def _wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        base = self._base_wait(state)
        if isinstance(error, _Transient) and error.retry_after is not None:
            return base
        return base * random.uniform(0.5, 1.0)


# --- helpers ------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (with or without port): Docker's default
    insecure registries."""
    name = urlsplit(f"//{host}").hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _tls_context(host: str, ca_file: str | None) -> ssl.SSLContext | bool:
    certs_d = Path("/etc/docker/certs.d") / host / "ca.crt"
    path = ca_file or (str(certs_d) if certs_d.is_file() else None)
    if path is None:
        return True
    try:
        return ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise RegistryProtocolError(f"cannot load CA file {path} for {host}: {exc}") from None


def _raise_if_untrusted(exc: BaseException, host: str) -> None:
    """A certificate that does not verify is a configuration problem, not worth retrying."""
    inner: BaseException | None = exc
    while inner is not None:
        if isinstance(inner, ssl.SSLCertVerificationError):
            raise RegistryProtocolError(
                f"TLS certificate of registry {host} is not trusted ({inner.verify_message}); "
                f"set registries.{host}.ca_file or put its CA in "
                f"/etc/docker/certs.d/{host}/ca.crt") from None
        inner = inner.__cause__ or inner.__context__


def _check_realm(realm: str, endpoint: _Endpoint, credentials: Credentials | None) -> None:
    parts = urlsplit(realm)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RegistryProtocolError(f"{endpoint.host} named an unusable token realm {realm!r}")
    if credentials is None or parts.scheme == "https":
        return
    registry_host = urlsplit(f"//{endpoint.host}").hostname
    if not endpoint.insecure or parts.hostname != registry_host:
        raise RegistryProtocolError(
            f"{endpoint.host} sends clients to token server {parts.scheme}://{parts.netloc} over "
            "plain HTTP; refusing to send credentials there (use HTTPS for the token server)")


def _with_query(url: str, params: Form) -> str:
    """`url` with `params` added to the query it already has (a realm such as
    `https://auth.example/token?tenant=t1` keeps its own)."""
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), *params]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _same_origin_redirect(response: httpx.Response, host: str) -> str:
    source = response.request.url
    target = source.join(response.headers.get("Location", ""))
    if (target.scheme, target.host, target.port) != (source.scheme, source.host, source.port):
        raise RegistryProtocolError(f"{host} redirected to {target.host or 'nowhere'}; not "
                                    "followed, so no credentials leave the registry")
    return str(target)


def _ratelimit_remaining(response: httpx.Response) -> float | None:
    """`ratelimit-remaining: 76;w=21600` -> 76.0."""
    value = response.headers.get("ratelimit-remaining")
    if not value:
        return None
    try:
        return float(value.split(";")[0])
    except ValueError:
        return None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _raise_for_status(response: httpx.Response, endpoint: _Endpoint, reference: Reference,
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


def _token_from(response: httpx.Response, host: str) -> tuple[str, float | None]:
    try:
        body = response.json()
        token = body.get("token") or body.get("access_token")
        expires_in = body.get("expires_in")
    except (ValueError, AttributeError):
        raise RegistryProtocolError(f"token server of {host} sent no JSON token") from None
    if not isinstance(token, str) or not token:
        raise RegistryProtocolError(f"token server of {host} sent no token")
    return token, float(expires_in) if isinstance(expires_in, int | float) else None


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
