"""WWW-Authenticate parsing and the token cache."""

from __future__ import annotations

from updater.registry.auth import Challenge, Credentials, TokenCache, parse_challenges, preferred


def test_docker_hub_bearer_challenge() -> None:
    """A Bearer challenge yields its realm, service and scope, unquoted."""
    header = ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
              'scope="repository:library/redis:pull"')
    assert parse_challenges(header) == [Challenge("bearer", {
        "realm": "https://auth.docker.io/token", "service": "registry.docker.io",
        "scope": "repository:library/redis:pull"})]


def test_several_challenges_and_odd_spacing() -> None:
    """Two challenges in one header, spaces around '=', bare tokens and escaped quotes parse."""
    header = 'Basic realm = "a \\"q\\" b" , BEARER realm="https://t/x", service=reg, error=x'
    found = parse_challenges(header)
    assert [c.scheme for c in found] == ["basic", "bearer"]
    assert found[0].realm == 'a "q" b'
    assert found[1].params == {"realm": "https://t/x", "service": "reg", "error": "x"}


def test_scope_with_commas_stays_whole() -> None:
    """A quoted scope that contains commas is one value."""
    found = parse_challenges('Bearer realm="r",scope="repository:a:pull,push"')
    assert found[0].params["scope"] == "repository:a:pull,push"


def test_garbage_gives_nothing_usable() -> None:
    """An empty or nonsense header yields no challenge that `preferred` would pick."""
    assert parse_challenges("") == []
    assert preferred(parse_challenges('=== "')) is None


def test_preferred_takes_bearer_over_basic() -> None:
    """Bearer wins over Basic when a registry offers both."""
    found = parse_challenges('Basic realm="b", Bearer realm="t"')
    chosen = preferred(found)
    assert chosen is not None and chosen.scheme == "bearer"


def test_token_cache_honours_expiry() -> None:
    """A token is served until its lifetime (less a margin) has passed, then dropped."""
    now = [1000.0]
    cache = TokenCache(clock=lambda: now[0], margin=5)
    key = ("realm", "svc", "repository:a:pull")
    cache.put(key, "tok", 60)
    now[0] += 54
    assert cache.get(key) == "tok"
    now[0] += 2
    assert cache.get(key) is None


def test_token_cache_default_lifetime() -> None:
    """Without expires_in a token lives the spec's default 60 s."""
    now = [0.0]
    cache = TokenCache(clock=lambda: now[0], margin=0)
    cache.put(("r", "s", "x"), "tok", None)
    now[0] = 59.9
    assert cache.get(("r", "s", "x")) == "tok"
    now[0] = 60.0
    assert cache.get(("r", "s", "x")) is None


def test_credentials_never_print_the_password() -> None:
    """repr of credentials hides the password; the Basic header encodes both."""
    creds = Credentials("alice", "s3cret-pw")
    assert "s3cret-pw" not in repr(creds)
    assert creds.basic_header() == "Basic YWxpY2U6czNjcmV0LXB3"


def test_token_cache_drops_expired_tokens_of_other_keys() -> None:
    """Tokens of credentials that were rotated are never asked for again; they do not pile up
    over months of a running daemon."""
    now = [0.0]
    cache = TokenCache(clock=lambda: now[0], margin=0)
    for rotation in range(100):
        now[0] = rotation * 1000.0
        cache.put(("host", f"identity-{rotation}", "r", "s", "x"), "tok", 300)
    assert len(cache) == 1
