"""Authorizing registry requests as each registry asks: its challenge from `GET /v2/` (asked
once), Basic credentials or a Bearer token from its token server (cached per registry,
credentials, realm, service and scope), asked again once after a 401.

Credentials are read only for a registry that challenges, kept for CREDENTIALS_MAX_AGE, and
read again at once when the registry or its token server refuses them (a helper's short-lived
token was rotated); one refusal is retried with what was read, so a rotation costs no pass.
Credentials never go to a token realm on another host over plain HTTP.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from updater.errors import RegistryAuthError, RegistryError, RegistryProtocolError
from updater.registry.auth import (
    Challenge,
    Credentials,
    TokenCache,
    parse_challenges,
    preferred,
    token_key,
)
from updater.registry.credentials import CredentialSource
from updater.registry.transport import UNKNOWN, Endpoint, Form, Transport

CREDENTIALS_MAX_AGE = 300.0  # helpers hand out tokens that live ~1 h (gcloud) to ~12 h (ECR)
_REREAD_AFTER_REFUSAL = 10.0  # a wrong password costs one helper run per 10 s, not per image
_RETRY_FAILED_READ = 30.0
OAUTH_CLIENT_ID = "updater"  # the client_id of OAuth2 token requests (Docker sends "docker")


class Authorizer:
    def __init__(self, transport: Transport, credentials: CredentialSource,
                 clock: Callable[[], float]) -> None:
        self._transport = transport
        self._send = transport.send
        self._credentials = credentials
        self._clock = clock
        self._tokens = TokenCache(clock)

    def lookup(self, host: str) -> Credentials | None:
        """The credentials to hand the engine for a pull or service update from `host` (a
        CredentialSource): none for a registry that challenges nobody, so a broken helper
        entry of an anonymous registry stops nothing."""
        endpoint = self._transport.endpoint(host)
        if self._challenge(endpoint) is None:
            return None
        return self._credentials_for(endpoint)

    def _credentials_for(self, endpoint: Endpoint, refused: bool = False) -> Credentials | None:
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

    def _challenge(self, endpoint: Endpoint) -> Challenge | None:
        """The registry's auth challenge from `GET /v2/`, asked once per registry."""
        with endpoint.lock:
            if endpoint.challenge is UNKNOWN:
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

    def answer(self, endpoint: Endpoint, method: str, path: str, scope: str,
               headers: dict[str, str]) -> tuple[httpx.Response, Credentials | None]:
        """The registry's answer, authorized as it asks (once more after a 401), and the
        credentials sent; not checked."""
        challenge = self._challenge(endpoint)
        authorization, credentials = self._authorization(endpoint, challenge, scope, False)
        response = self._send(endpoint, method, path, {**headers, **authorization})
        if response.status_code == 401:
            offered = preferred(parse_challenges(response.headers.get("WWW-Authenticate", "")))
            if offered is not None:
                endpoint.challenge = offered
                authorization, credentials = self._authorization(endpoint, offered, scope, True)
                response = self._send(endpoint, method, path,
                                      {**headers, **authorization})
        return response, credentials

    def _authorization(self, endpoint: Endpoint, challenge: Challenge | None, scope: str,
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

    def _token(self, endpoint: Endpoint, challenge: Challenge, scope: str,
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

    def _ask_token(self, endpoint: Endpoint, realm: str, service: str, scope: str,
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


def _check_realm(realm: str, endpoint: Endpoint, credentials: Credentials | None) -> None:
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
