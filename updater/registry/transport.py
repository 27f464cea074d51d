"""Sending to registries: one HTTP client per registry host (TLS as Docker trusts it, plain
HTTP for insecure ones), bounded concurrency, retries of transient failures (connection errors,
timeouts, 429, 5xx) with backoff that honours `Retry-After`, bounded in attempts and time and
cut short when the updater stops; bodies capped in size and time; redirects followed only
within the registry; every request counted."""

from __future__ import annotations

import ipaddress
import math
import random
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import tenacity

from updater import __version__
from updater.core.reference import registry_host
from updater.core.settings import RegistrySettings
from updater.errors import RegistryError, RegistryProtocolError, RegistryUnavailable
from updater.registry.auth import Challenge, Credentials

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_BODY_BYTES = MAX_MANIFEST_BYTES + 64 * 1024  # any response: a manifest, a token, an error
_MAX_REDIRECTS = 3
Form = list[tuple[str, str]]
UNKNOWN = Challenge("unknown")  # not asked yet (None: the registry challenges nobody)


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


class Endpoint:
    """One registry host: its HTTP client, auth challenge, credentials, concurrency slots."""

    def __init__(self, host: str, insecure: bool, client: httpx.Client, slots: int) -> None:
        self.host = host
        self.insecure = insecure
        self.client = client
        self.slots = threading.BoundedSemaphore(slots)
        self.lock = threading.Lock()
        self.challenge: Challenge | None = UNKNOWN
        self.credentials_lock = threading.Lock()
        self.credentials: Credentials | None = None
        self.credentials_error: RegistryError | None = None
        self.credentials_read_at: float | None = None
        self.reread_after_refusal_at = -math.inf
        self.head_refused = False  # answers GET for manifests where it refuses HEAD


class Transport:
    """The endpoints of every registry asked, and the requests sent to them; thread-safe."""

    def __init__(self, settings: Mapping[str, RegistrySettings], *, timeout: float,
                 retry: RetryPolicy, per_registry: int,
                 transport: httpx.BaseTransport | None, sleep: Callable[[float], None],
                 stopping: threading.Event | None) -> None:
        self._settings = settings
        self._timeout = timeout
        self._retry = retry
        self._per_registry = per_registry
        self._transport = transport
        self._sleep = sleep
        self._stopping = stopping  # set on SIGTERM: every backoff ends at once
        self._endpoints: dict[str, Endpoint] = {}
        self._lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._requests: Counter[tuple[str, str, int]] = Counter()
        self._ratelimit: dict[str, float] = {}

    def stats(self) -> tuple[dict[tuple[str, str, int], int], dict[str, float]]:
        """Requests sent by (registry, method, status), and the rate-limit remaining per
        registry where the registry reports one (Docker Hub's `ratelimit-remaining`)."""
        with self._stats_lock:
            return dict(self._requests), dict(self._ratelimit)

    def close(self) -> None:
        for endpoint in self._endpoints.values():
            endpoint.client.close()

    def endpoint(self, host: str) -> Endpoint:
        with self._lock:
            endpoint = self._endpoints.get(host)
            if endpoint is None:
                endpoint = self._endpoints[host] = self._new_endpoint(host)
            return endpoint

    def _new_endpoint(self, host: str) -> Endpoint:
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
        return Endpoint(host, insecure, client, self._per_registry)

    def send(self, endpoint: Endpoint, method: str, url: str, headers: dict[str, str],
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

    def _send_once(self, endpoint: Endpoint, method: str, url: str, headers: dict[str, str],
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

    def _bounded(self, endpoint: Endpoint, method: str, url: str, headers: dict[str, str],
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


