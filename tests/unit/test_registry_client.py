"""The registry client's logic over a hand-written registry behind httpx.MockTransport: auth
flows, request economy, digest fallback and checks, retries, and where credentials may go.
(The real registries are exercised in tests/integration.)"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable
from urllib.parse import parse_qsl

import httpx
import pytest

from updater.core.reference import parse
from updater.core.settings import RegistrySettings
from updater.errors import (
    CredentialsUnavailable,
    ManifestNotFound,
    RegistryAuthError,
    RegistryProtocolError,
    RegistryUnavailable,
)
from updater.registry.auth import Credentials
from updater.registry.client import ACCEPT, RegistryClient, RetryPolicy, is_loopback

MANIFEST = b'{"schemaVersion": 2}'
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
BASIC = "Basic " + base64.b64encode(b"alice:pw-1").decode()


class Creds:
    def __init__(self, credentials: Credentials | None,
                 failure: CredentialsUnavailable | None = None) -> None:
        self.credentials = credentials
        self.failure = failure
        self.lookups = 0

    def lookup(self, host: str) -> Credentials | None:
        self.lookups += 1
        if self.failure is not None:
            raise self.failure
        return self.credentials


class FakeRegistry:
    """A registry at `host`, anonymous, Basic or Bearer, recording every request."""

    def __init__(self, mode: str = "anonymous", realm: str = "https://auth.example/token") -> None:
        self.mode = mode
        self.realm = realm
        self.seen: list[httpx.Request] = []
        self.head_digest = True
        self.digest_header: str | None = DIGEST
        self.failures: list[httpx.Response] = []
        self.valid_tokens = {"tok-1"}
        self.basic = BASIC

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.url.path == "/token":
            if request.headers.get("Authorization") != self.basic:
                return httpx.Response(401)
            return httpx.Response(200, json={"token": "tok-1", "expires_in": 300})
        if self.failures:
            return self.failures.pop(0)
        if not self._authorized(request):
            challenge = ('Basic realm="r"' if self.mode == "basic" else
                         f'Bearer realm="{self.realm}",service="svc"')
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        if request.url.path == "/v2/":
            return httpx.Response(200, json={})
        if "missing" in request.url.path:
            return httpx.Response(404)
        headers = {"Docker-Content-Digest": self.digest_header} if self.digest_header else {}
        if request.method == "HEAD" and not self.head_digest:
            headers = {}
        body = MANIFEST if request.method == "GET" else b""
        return httpx.Response(200, headers=headers, content=body)

    def _authorized(self, request: httpx.Request) -> bool:
        header = str(request.headers.get("Authorization", ""))
        if self.mode == "basic":
            return header == self.basic
        if self.mode == "bearer":
            return header.removeprefix("Bearer ") in self.valid_tokens
        return True

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.host}{r.url.path}" for r in self.seen]


def client(fake: Callable[[httpx.Request], httpx.Response],
           credentials: Credentials | Creds | None = None,
           settings: dict[str, RegistrySettings] | None = None,
           sleeps: list[float] | None = None, attempts: int = 3,
           clock: Callable[[], float] = time.monotonic) -> RegistryClient:
    source = credentials if isinstance(credentials, Creds) else Creds(credentials)
    return RegistryClient(settings or {}, source, transport=httpx.MockTransport(fake),
                          retry=RetryPolicy(attempts=attempts, backoff=0.01, budget=30),
                          sleep=(sleeps.append if sleeps is not None else lambda _: None),
                          clock=clock)


ALICE = Credentials("alice", "pw-1")


def test_anonymous_one_ping_then_one_head_per_reference() -> None:
    """Per registry one GET /v2/, then exactly one HEAD per reference with all Accept types."""
    fake = FakeRegistry()
    with client(fake) as registry:
        assert registry.digest(parse("reg.example/a:1")) == DIGEST
        assert registry.digest(parse("reg.example/b:1")) == DIGEST
    assert fake.paths() == ["GET reg.example/v2/", "HEAD reg.example/v2/a/manifests/1",
                            "HEAD reg.example/v2/b/manifests/1"]
    assert fake.seen[1].headers["Accept"] == ACCEPT
    assert fake.seen[1].url.scheme == "https"


def test_bearer_token_fetched_once_per_scope() -> None:
    """A Bearer registry costs one token request per repository, reused afterwards."""
    fake = FakeRegistry("bearer")
    with client(fake, ALICE) as registry:
        for _ in range(3):
            registry.digest(parse("reg.example/a:1"))
        registry.digest(parse("reg.example/b:1"))
    tokens = [r for r in fake.seen if r.url.path == "/token"]
    assert [r.url.params["scope"] for r in tokens] == ["repository:a:pull", "repository:b:pull"]
    assert all(r.url.params["service"] == "svc" for r in tokens)
    assert len([r for r in fake.seen if r.method == "HEAD"]) == 4


def test_expired_token_is_refreshed_once() -> None:
    """A token the registry stops accepting is replaced by one fresh token request."""
    fake = FakeRegistry("bearer")
    with client(fake, ALICE) as registry:
        registry.digest(parse("reg.example/a:1"))
        fake.valid_tokens = {"tok-1"}  # same value, but make the next HEAD fail once
        fake.failures.append(httpx.Response(401, headers={
            "WWW-Authenticate": f'Bearer realm="{fake.realm}",service="svc"'}))
        assert registry.digest(parse("reg.example/a:1")) == DIGEST
    assert len([r for r in fake.seen if r.url.path == "/token"]) == 2


def test_basic_auth_sends_credentials_directly() -> None:
    """A Basic registry gets the Authorization header on the HEAD itself."""
    fake = FakeRegistry("basic")
    with client(fake, ALICE) as registry:
        assert registry.digest(parse("reg.example/a:1")) == DIGEST
    assert fake.seen[-1].headers["Authorization"] == BASIC


def test_missing_credentials_say_what_to_do() -> None:
    """No credentials for a Basic registry: the error says to configure or docker login."""
    with client(FakeRegistry("basic")) as registry, \
            pytest.raises(RegistryAuthError, match=r"requires credentials.*docker login"):
        registry.digest(parse("reg.example/a:1"))


def test_wrong_password_is_named_without_the_password() -> None:
    """Refused credentials name the user, never the password."""
    with client(FakeRegistry("bearer"), Credentials("alice", "wrong-pw")) as registry, \
            pytest.raises(RegistryAuthError) as caught:
        registry.digest(parse("reg.example/a:1"))
    assert "alice" in str(caught.value) and "wrong-pw" not in str(caught.value)


def test_not_found() -> None:
    """A 404 becomes ManifestNotFound naming the reference."""
    with client(FakeRegistry()) as registry, pytest.raises(ManifestNotFound, match="missing"):
        registry.digest(parse("reg.example/missing:1"))


def test_get_fallback_computes_the_digest() -> None:
    """Without a digest on HEAD, one GET follows and the digest is computed from the body."""
    fake = FakeRegistry()
    fake.head_digest = False
    with client(fake) as registry:
        assert registry.digest(parse("reg.example/a:1")) == DIGEST
    assert [r.method for r in fake.seen] == ["GET", "HEAD", "GET"]


def test_get_fallback_rejects_a_wrong_digest_header() -> None:
    """A body whose hash differs from its Docker-Content-Digest is refused."""
    fake = FakeRegistry()
    fake.head_digest = False
    fake.digest_header = "sha256:" + "0" * 64
    with client(fake) as registry, pytest.raises(RegistryProtocolError, match="does not match"):
        registry.digest(parse("reg.example/a:1"))


def test_malformed_digest_header_refused() -> None:
    """A Docker-Content-Digest that is not sha256:<64 hex> is an error, not a digest."""
    fake = FakeRegistry()
    fake.digest_header = "sha256:nope"
    with client(fake) as registry, pytest.raises(RegistryProtocolError, match="malformed"):
        registry.digest(parse("reg.example/a:1"))


def test_retry_after_is_honoured() -> None:
    """A 429 with Retry-After waits that long, then the retry succeeds."""
    fake = FakeRegistry()
    fake.failures = [httpx.Response(200, json={}),
                     httpx.Response(429, headers={"Retry-After": "2"})]
    sleeps: list[float] = []
    with client(fake, sleeps=sleeps) as registry:
        assert registry.digest(parse("reg.example/a:1")) == DIGEST
    assert sleeps == [2.0]


def test_persistent_5xx_gives_up_after_the_attempts() -> None:
    """503 on every try: a bounded number of attempts, then RegistryUnavailable."""
    fake = FakeRegistry()
    fake.failures = [httpx.Response(503)] * 10
    with client(fake, attempts=3) as registry, \
            pytest.raises(RegistryUnavailable, match="HTTP 503"):
        registry.digest(parse("reg.example/a:1"))
    assert len(fake.seen) == 3


def test_retry_after_beyond_the_budget_gives_up_at_once() -> None:
    """A Retry-After longer than the time budget is not waited out."""
    fake = FakeRegistry()
    fake.failures = [httpx.Response(429, headers={"Retry-After": "3600"})]
    sleeps: list[float] = []
    with client(fake, sleeps=sleeps) as registry, pytest.raises(RegistryUnavailable):
        registry.digest(parse("reg.example/a:1"))
    assert sleeps == []


def test_connection_errors_are_retried_then_reported() -> None:
    """A registry that refuses connections is tried a bounded number of times."""
    calls = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("refused", request=request)

    with client(refuse, attempts=2) as registry, \
            pytest.raises(RegistryUnavailable, match="cannot connect"):
        registry.digest(parse("reg.example/a:1"))
    assert len(calls) == 2


def test_redirect_to_another_host_is_not_followed() -> None:
    """A manifest redirect to another host is refused, and nothing is sent there."""
    fake = FakeRegistry("basic")
    fake.failures = [httpx.Response(302, headers={"Location": "https://evil.example/x"})]
    with client(fake, ALICE) as registry, pytest.raises(RegistryProtocolError, match="evil"):
        registry.digest(parse("reg.example/a:1"))
    assert all(r.url.host == "reg.example" for r in fake.seen)


def test_same_host_redirect_is_followed() -> None:
    """A redirect within the registry is followed."""
    fake = FakeRegistry()
    fake.failures = [httpx.Response(200, json={}),
                     httpx.Response(307, headers={"Location": "/v2/a/manifests/1"})]
    with client(fake) as registry:
        assert registry.digest(parse("reg.example/a:1")) == DIGEST


def test_plain_http_realm_on_another_host_gets_no_credentials() -> None:
    """Credentials are not sent to a plain-HTTP token realm on another host."""
    fake = FakeRegistry("bearer", realm="http://tokens.example/token")
    with client(fake, ALICE) as registry, pytest.raises(RegistryProtocolError, match="plain HTTP"):
        registry.digest(parse("reg.example/a:1"))
    assert not any(r.url.host == "tokens.example" for r in fake.seen)


def test_insecure_registry_uses_plain_http() -> None:
    """`insecure: true` (or a loopback host) means plain HTTP; everything else HTTPS."""
    fake = FakeRegistry()
    settings = {"reg.example": RegistrySettings(insecure=True)}
    with client(fake, settings=settings) as registry:
        registry.digest(parse("reg.example/a:1"))
        registry.digest(parse("127.0.0.1:5000/a:1"))
        registry.digest(parse("other.example/a:1"))
    schemes = {r.url.host: r.url.scheme for r in fake.seen}
    assert schemes == {"reg.example": "http", "127.0.0.1": "http", "other.example": "https"}


def test_docker_hub_is_asked_at_its_api_host() -> None:
    """docker.io references go to registry-1.docker.io, Docker's API endpoint."""
    fake = FakeRegistry()
    with client(fake) as registry:
        registry.digest(parse("redis"))
    assert fake.paths()[-1] == "HEAD registry-1.docker.io/v2/library/redis/manifests/latest"


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost:5000", True), ("127.0.0.1", True), ("127.8.9.1:80", True), ("[::1]:5000", True),
    ("reg.example", False), ("10.0.0.1:5000", False), ("[fe80::1]", False),
])
def test_loopback_detection(host: str, loopback: bool) -> None:
    """Docker's default insecure registries are the loopback ones."""
    assert is_loopback(host) is loopback


def test_stats_count_requests_and_rate_limit() -> None:
    """Requests are counted by registry, method and status; Docker Hub's
    `ratelimit-remaining` is kept per registry."""

    def hub(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":
            return httpx.Response(200, json={})
        return httpx.Response(200, headers={"Docker-Content-Digest": DIGEST,
                                            "ratelimit-remaining": "76;w=21600"})

    with client(hub) as registry:
        registry.digest(parse("redis"))
        registry.digest(parse("nginx"))
        requests, remaining = registry.stats()
    assert requests == {("docker.io", "GET", 200): 1, ("docker.io", "HEAD", 200): 2}
    assert remaining == {"docker.io": 76.0}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_anonymous_registry_never_reads_credentials() -> None:
    """A registry that challenges nobody costs no credential lookup, not even a broken one."""
    source = Creds(None, CredentialsUnavailable("helper broke"))
    with client(FakeRegistry(), source) as registry:
        assert registry.digest(parse("reg.example/a:1")) == DIGEST
        assert registry.lookup("reg.example") is None
    assert source.lookups == 0


def test_broken_credentials_fail_that_registry_as_a_registry_error() -> None:
    """A failing credential source is a RegistryAuthError of the images on that registry,
    read once, not again for every image in the next 30 s."""
    source = Creds(None, CredentialsUnavailable("credential helper docker-credential-x broke"))
    with client(FakeRegistry("basic"), source) as registry:
        for name in ("a", "b"):
            with pytest.raises(RegistryAuthError, match="docker-credential-x"):
                registry.digest(parse(f"reg.example/{name}:1"))
    assert source.lookups == 1


def test_refused_basic_credentials_are_read_again_and_retried() -> None:
    """A password rotated by a helper: the refused HEAD re-reads the credentials and succeeds
    with the new ones, in the same call."""
    fake, source, clock = FakeRegistry("basic"), Creds(ALICE), Clock()
    with client(fake, source, clock=clock) as registry:
        registry.digest(parse("reg.example/a:1"))
        clock.now += 1
        fake.basic = "Basic " + base64.b64encode(b"alice:pw-2").decode()
        source.credentials = Credentials("alice", "pw-2")
        assert registry.digest(parse("reg.example/a:1")) == DIGEST
    assert source.lookups == 2
    assert fake.seen[-1].headers["Authorization"] == fake.basic


def test_token_server_refusal_reads_credentials_again() -> None:
    """An expired token whose renewal the token server refuses (the password rotated):
    the credentials are read again and the token asked for once more."""
    fake, source, clock = FakeRegistry("bearer"), Creds(ALICE), Clock()
    with client(fake, source, clock=clock) as registry:
        registry.digest(parse("reg.example/a:1"))
        clock.now += 299  # the token (300 s) expired; the credentials (300 s) not yet
        fake.basic = "Basic " + base64.b64encode(b"alice:pw-2").decode()
        source.credentials = Credentials("alice", "pw-2")
        assert registry.digest(parse("reg.example/a:1")) == DIGEST
    assert source.lookups == 2
    assert [r.headers["Authorization"] == fake.basic for r in fake.seen
            if r.url.path == "/token"] == [False, False, True]


def test_credentials_are_read_again_after_five_minutes() -> None:
    """Credentials are kept for 300 s, then read anew (a helper's token may have changed)."""
    source, clock = Creds(ALICE), Clock()
    with client(FakeRegistry("basic"), source, clock=clock) as registry:
        registry.digest(parse("reg.example/a:1"))
        clock.now += 290
        registry.digest(parse("reg.example/a:1"))
        assert source.lookups == 1
        clock.now += 20
        registry.digest(parse("reg.example/a:1"))
    assert source.lookups == 2


def test_wrong_password_reads_the_helper_once_per_ten_seconds() -> None:
    """Credentials that stay wrong are read again at most once per 10 s, not per image."""
    source, clock = Creds(Credentials("alice", "wrong")), Clock()
    with client(FakeRegistry("basic"), source, clock=clock) as registry:
        for name in ("a", "b", "c"):
            with pytest.raises(RegistryAuthError, match="refused user 'alice'"):
                registry.digest(parse(f"reg.example/{name}:1"))
        assert source.lookups == 2
        clock.now += 11
        with pytest.raises(RegistryAuthError):
            registry.digest(parse("reg.example/d:1"))
    assert source.lookups == 3


@pytest.mark.parametrize("refusal", [403, 404, 405])
def test_a_registry_refusing_head_is_asked_by_get_from_then_on(refusal: int) -> None:
    """Nexus answers 404 (some proxies 403/405) to a manifest HEAD that GET answers: the
    digest comes by GET, and later lookups on that registry go straight to GET."""

    def refusing(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            fake.seen.append(request)
            return httpx.Response(refusal)
        return fake(request)

    fake = FakeRegistry()
    with client(refusing) as registry:
        assert registry.digest(parse("reg.example/a:1")) == DIGEST
        assert registry.digest(parse("reg.example/b:1")) == DIGEST
        with pytest.raises(ManifestNotFound):
            registry.digest(parse("reg.example/missing:1"))
        counts = registry.stats()[0]
    assert fake.paths() == ["GET reg.example/v2/", "HEAD reg.example/v2/a/manifests/1",
                            "GET reg.example/v2/a/manifests/1",
                            "GET reg.example/v2/b/manifests/1",
                            "GET reg.example/v2/missing/manifests/1"]
    assert counts[("reg.example", "HEAD", refusal)] == 1


def test_a_missing_tag_on_a_registry_that_takes_head_costs_a_head_and_a_get() -> None:
    """A 404 to HEAD may be a refusal: GET confirms it; a registry whose GET also says 404
    keeps being asked by HEAD first."""
    fake = FakeRegistry()
    with client(fake) as registry:
        for _ in range(2):
            with pytest.raises(ManifestNotFound):
                registry.digest(parse("reg.example/missing:1"))
        assert registry.digest(parse("reg.example/a:1")) == DIGEST
    assert fake.paths()[1:] == ["HEAD reg.example/v2/missing/manifests/1",
                                "GET reg.example/v2/missing/manifests/1"] * 2 + [
                                    "HEAD reg.example/v2/a/manifests/1"]


INDEX = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": [
                        {"digest": "sha256:" + "1" * 64, "platform": {"os": "linux",
                                                                    "architecture": "amd64"}},
                        {"digest": "sha256:" + "2" * 64, "platform": {
                            "os": "linux", "architecture": "arm64", "variant": "v8"}},
                        {"digest": "sha256:" + "3" * 64, "platform": {"os": "unknown",
                                                                    "architecture": "unknown"}},
                    ]}).encode()
INDEX_DIGEST = "sha256:" + hashlib.sha256(INDEX).hexdigest()


class Known:
    def __init__(self) -> None:
        self.kept: dict[tuple[str, str, str], str] = {}

    def get(self, repository: str, digest: str, platform: str) -> str | None:
        return self.kept.get((repository, digest, platform))

    def put(self, repository: str, digest: str, platform: str, found: str) -> None:
        self.kept[(repository, digest, platform)] = found


def test_platform_digest_reads_an_index_once() -> None:
    """The entry for the platform (a variant only where both name one); one read of the index
    answers every platform it names (a swarm asks for each of its nodes'), one more a platform
    it does not name; the next process asks `known`."""
    seen: list[str] = []

    def registry(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.url.path == "/v2/":
            return httpx.Response(200)
        return httpx.Response(200, content=INDEX,
                              headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})

    known = Known()
    ref = parse("reg.example/app:1")
    with RegistryClient({}, Creds(None), transport=httpx.MockTransport(registry),
                        known=known) as first:
        assert first.platform_digest(ref, INDEX_DIGEST, "linux/amd64") == "sha256:" + "1" * 64
        assert first.platform_digest(ref, INDEX_DIGEST, "linux/amd64") == "sha256:" + "1" * 64
        assert first.platform_digest(ref, INDEX_DIGEST, "linux/arm64/v8") == "sha256:" + "2" * 64
        assert first.platform_digest(ref, INDEX_DIGEST, "linux/arm64") == "sha256:" + "2" * 64
        assert first.platform_digest(ref, INDEX_DIGEST, "linux/s390x") is None
    assert seen.count(f"GET /v2/app/manifests/{INDEX_DIGEST}") == 2
    with RegistryClient({}, Creds(None), transport=httpx.MockTransport(registry),
                        known=known) as second:
        assert second.platform_digest(ref, INDEX_DIGEST, "linux/amd64") == "sha256:" + "1" * 64
        assert second.platform_digest(ref, INDEX_DIGEST, "linux/s390x") is None
        assert second.platform_digest(ref, INDEX_DIGEST, "linux/arm64") == "sha256:" + "2" * 64
    assert seen.count(f"GET /v2/app/manifests/{INDEX_DIGEST}") == 2


def test_platform_digest_refuses_a_manifest_that_is_not_the_one_asked_for() -> None:
    def registry(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=INDEX if request.url.path != "/v2/" else b"{}")

    with client(registry) as registry_client, pytest.raises(RegistryProtocolError):
        registry_client.platform_digest(parse("reg.example/app:1"), "sha256:" + "9" * 64,
                                        "linux/amd64")


class SharedRealm:
    """Registries a.example and b.example naming one token server (same realm and service),
    which issues a distinct token per request and says whose it is."""

    def __init__(self, realm: str = "https://auth.example/token", post_only: bool = False) -> None:
        self.realm = realm
        self.post_only = post_only
        self.seen: list[httpx.Request] = []
        self.owner: dict[str, str] = {}  # token -> user ("" anonymous)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.url.host == "auth.example":
            return self._token(request)
        token = str(request.headers.get("Authorization", "")).removeprefix("Bearer ")
        if self.owner.get(token):
            return httpx.Response(200, headers={"Docker-Content-Digest": DIGEST})
        return httpx.Response(401, headers={
            "WWW-Authenticate": f'Bearer realm="{self.realm}",service="svc"'})

    def _token(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and self.post_only:
            return httpx.Response(405)
        if request.method == "POST":
            form = dict(parse_qsl(request.content.decode()))
            user = {("refresh_token", "rt-1"): "alice", ("password", "pw-1"): "alice"}.get(
                (form.get("grant_type", ""), form.get("refresh_token") or
                 form.get("password", "")), "")
            if not user:
                return httpx.Response(401)
        else:
            user = "alice" if request.headers.get("Authorization") == BASIC else ""
            if request.headers.get("Authorization") and not user:
                return httpx.Response(401)
        token = f"tok-{len(self.owner)}"
        self.owner[token] = user
        return httpx.Response(200, json={"access_token": token, "expires_in": 300})

    def sent_to(self, host: str) -> list[str]:
        """The owners of the tokens `host` received."""
        return [self.owner.get(str(r.headers.get("Authorization", "")).removeprefix("Bearer "),
                               "?") for r in self.seen
                if r.url.host == host and r.headers.get("Authorization")]


class PerHost(Creds):
    def __init__(self, known: dict[str, Credentials]) -> None:
        super().__init__(None)
        self.known = known

    def lookup(self, host: str) -> Credentials | None:
        self.lookups += 1
        return self.known.get(host)


def test_a_token_reaches_only_the_registry_it_was_obtained_for() -> None:
    """Two registries naming the same realm and service, credentials for a.example only: the
    token issued to alice for a.example is never sent to b.example, however often it is
    asked, and b.example keeps saying it wants credentials (issue 21, case 1)."""
    fake = SharedRealm()
    with client(fake, PerHost({"a.example": ALICE})) as registry:
        for _ in range(3):
            assert registry.digest(parse("a.example/shared/app:1")) == DIGEST
            with pytest.raises(RegistryAuthError, match=r"b\.example requires credentials"):
                registry.digest(parse("b.example/shared/app:1"))
    assert set(fake.sent_to("a.example")) == {"alice"}
    assert set(fake.sent_to("b.example")) == {""}  # only anonymous tokens


def test_a_token_is_not_kept_for_other_credentials() -> None:
    """Credentials read anew that name another user get a token of their own: a cached token
    serves only the credentials it was obtained with."""
    fake, source, clock = SharedRealm(), Creds(Credentials("bob", "x")), Clock()
    with client(fake, source, clock=clock) as registry:
        with pytest.raises(RegistryAuthError):
            registry.digest(parse("a.example/shared/app:1"))  # bob is refused
        clock.now += 301  # the credentials are read again: now alice's
        source.credentials = ALICE
        assert registry.digest(parse("a.example/shared/app:1")) == DIGEST
        source.credentials, clock.now = None, clock.now + 301  # and then none at all
        with pytest.raises(RegistryAuthError, match="requires credentials"):
            registry.digest(parse("a.example/shared/app:1"))
    assert fake.sent_to("a.example")[-1] == ""


def test_an_identity_token_is_a_refresh_token_grant() -> None:
    """An identity token from `docker login` is POSTed as an OAuth2 refresh_token grant with
    the service and scope, never as a Basic password (issue 21, case 2)."""
    fake = SharedRealm()
    with client(fake, Credentials("alice", "", identity_token="rt-1")) as registry:
        assert registry.digest(parse("a.example/shared/app:1")) == DIGEST
    asked = [r for r in fake.seen if r.url.host == "auth.example"]
    assert [r.method for r in asked] == ["POST"]
    assert "Authorization" not in asked[0].headers
    assert dict(parse_qsl(asked[0].content.decode())) == {
        "grant_type": "refresh_token", "refresh_token": "rt-1", "client_id": "updater",
        "scope": "repository:shared/app:pull", "service": "svc"}


def test_a_refused_identity_token_says_to_log_in_again() -> None:
    fake = SharedRealm()
    with client(fake, Credentials("alice", "", identity_token="rt-expired")) as registry, \
            pytest.raises(RegistryAuthError, match=r"refused the identity token of 'alice'.*"
                                                   r"run docker login again") as caught:
        registry.digest(parse("a.example/shared/app:1"))
    assert "rt-expired" not in str(caught.value)


def test_a_token_server_taking_only_post_gets_a_password_grant() -> None:
    """A token server that refuses GET (405) is asked with the OAuth2 password grant."""
    fake = SharedRealm(post_only=True)
    with client(fake, ALICE) as registry:
        assert registry.digest(parse("a.example/shared/app:1")) == DIGEST
    asked = [r for r in fake.seen if r.url.host == "auth.example"]
    assert [r.method for r in asked] == ["GET", "POST"]
    assert dict(parse_qsl(asked[1].content.decode()))["grant_type"] == "password"


def test_the_realms_own_query_is_kept() -> None:
    """`realm="https://auth.example/token?tenant=t1"`: the token request keeps tenant=t1
    besides scope, service and account (issue 21, case 3)."""
    fake = SharedRealm(realm="https://auth.example/token?tenant=t1")
    with client(fake, ALICE) as registry:
        assert registry.digest(parse("a.example/shared/app:1")) == DIGEST
    asked = [r for r in fake.seen if r.url.host == "auth.example"]
    assert asked and all(dict(r.url.params)["tenant"] == "t1" for r in asked)
    assert dict(asked[-1].url.params) == {"tenant": "t1", "scope": "repository:shared/app:pull",
                                         "service": "svc", "account": "alice"}


def test_a_backoff_ends_at_once_when_the_updater_stops() -> None:
    """A registry asking to come back in 30 s: SIGTERM (the event) ends the wait at once, and
    nothing more is sent."""
    stopping = threading.Event()
    fake = FakeRegistry()
    fake.failures = [httpx.Response(503, headers={"Retry-After": "30"})] * 3
    registry = RegistryClient({}, Creds(None), transport=httpx.MockTransport(fake),
                              retry=RetryPolicy(attempts=4, budget=120), stopping=stopping)
    threading.Timer(0.3, stopping.set).start()
    started = time.monotonic()
    with registry, pytest.raises(RegistryUnavailable, match="the updater is stopping"):
        registry.digest(parse("reg.example/a:1"))
    assert time.monotonic() - started < 2
    assert len(fake.seen) == 1  # the first request; no retry after the stop


def _paged(names: list[str], link: Callable[[str], str] | None = None) -> Callable[
        [httpx.Request], httpx.Response]:
    """A registry listing `names` 100 at a time (as Docker Hub and distribution 3 do), with
    `Link` to the next page (`link(last)` makes the header, for odd links)."""
    registry = FakeRegistry("bearer")

    def answer(request: httpx.Request) -> httpx.Response:
        if "/tags/list" not in request.url.path:
            return registry(request)
        if not registry._authorized(request):
            return registry(request)
        registry.seen.append(request)
        last = request.url.params.get("last")
        start = names.index(last) + 1 if last else 0
        page = names[start:start + int(request.url.params.get("n", "1000"))]
        headers = {}
        if start + len(page) < len(names):
            target = (link or (lambda last: f"/v2/app/tags/list?last={last}&n=100"))(page[-1])
            headers["Link"] = f'<{target}>; rel="next"'
        return httpx.Response(200, json={"name": "app", "tags": page}, headers=headers)

    answer.seen = registry.seen  # type: ignore[attr-defined]
    return answer


def test_tags_follow_the_link_to_every_page() -> None:
    names = [f"1.0.{i}" for i in range(250)]
    fake = _paged(names)
    with client(fake, ALICE) as registry:
        assert registry.tags(parse("reg.example/app:1.0.0")) == names
    pages = [r for r in fake.seen if "/tags/list" in r.url.path]  # type: ignore[attr-defined]
    assert [r.url.params.get("last") for r in pages] == [None, "1.0.99", "1.0.199"]
    assert all(r.headers["Authorization"] == "Bearer tok-1" for r in pages)


def test_a_link_to_another_host_is_not_followed() -> None:
    fake = _paged([f"1.0.{i}" for i in range(150)],
                  lambda last: f"https://evil.example/v2/app/tags/list?last={last}")
    with client(fake, ALICE) as registry, pytest.raises(RegistryProtocolError,
                                                        match=r"evil\.example; not followed"):
        registry.tags(parse("reg.example/app:1.0.0"))
