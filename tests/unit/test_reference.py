"""Image reference parsing and normalisation, case by case against Docker's own rules."""

from __future__ import annotations

import pytest

from updater.core.reference import parse
from updater.errors import InvalidReference

HEX = "a" * 64
DIGEST = f"sha256:{HEX}"


@pytest.mark.parametrize(
    ("text", "domain", "path", "tag", "digest", "full"),
    [
        ("redis", "docker.io", "library/redis", "latest", None, "docker.io/library/redis:latest"),
        ("redis:7", "docker.io", "library/redis", "7", None, "docker.io/library/redis:7"),
        ("user/app", "docker.io", "user/app", "latest", None, "docker.io/user/app:latest"),
        ("docker.io/redis", "docker.io", "library/redis", "latest", None,
         "docker.io/library/redis:latest"),
        ("index.docker.io/redis", "docker.io", "library/redis", "latest", None,
         "docker.io/library/redis:latest"),
        ("index.docker.io/user/app:1", "docker.io", "user/app", "1", None,
         "docker.io/user/app:1"),
        ("localhost/app", "localhost", "app", "latest", None, "localhost/app:latest"),
        ("localhost:5000/demo/app:latest", "localhost:5000", "demo/app", "latest", None,
         "localhost:5000/demo/app:latest"),
        ("127.0.0.1:5000/demo/app", "127.0.0.1:5000", "demo/app", "latest", None,
         "127.0.0.1:5000/demo/app:latest"),
        ("[::1]:5000/x", "[::1]:5000", "x", "latest", None, "[::1]:5000/x:latest"),
        ("[fe80::1]/a/b:c", "[fe80::1]", "a/b", "c", None, "[fe80::1]/a/b:c"),
        ("Registry.Example.COM/app", "Registry.Example.COM", "app", "latest", None,
         "Registry.Example.COM/app:latest"),
        ("Foo/bar", "Foo", "bar", "latest", None, "Foo/bar:latest"),
        (f"app@{DIGEST}", "docker.io", "library/app", None, DIGEST,
         f"docker.io/library/app@{DIGEST}"),
        (f"ghcr.io/o/app:1.2@{DIGEST}", "ghcr.io", "o/app", "1.2", DIGEST,
         f"ghcr.io/o/app:1.2@{DIGEST}"),
        ("a.b/c__d/e-f.g_h:T_a.g-1", "a.b", "c__d/e-f.g_h", "T_a.g-1", None,
         "a.b/c__d/e-f.g_h:T_a.g-1"),
        ("a/b---c", "docker.io", "a/b---c", "latest", None, "docker.io/a/b---c:latest"),
        ("example.com:443/x/y/z", "example.com:443", "x/y/z", "latest", None,
         "example.com:443/x/y/z:latest"),
        (f"{'a' * 63}", "docker.io", f"library/{'a' * 63}", "latest", None,
         f"docker.io/library/{'a' * 63}:latest"),
        (f"{'a' * 65}", "docker.io", f"library/{'a' * 65}", "latest", None,
         f"docker.io/library/{'a' * 65}:latest"),
    ],
)
def test_valid_references(text: str, domain: str, path: str, tag: str | None,
                          digest: str | None, full: str) -> None:
    """Valid references normalise exactly as Docker normalises them."""
    ref = parse(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest, str(ref)) == (
        domain, path, tag, digest, full)
    assert parse(str(ref)) == ref


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        (HEX, "image ID"),
        ("Redis", "lowercase"),
        ("docker.io/Library/redis", "lowercase"),
        ("redis:", "expected"),
        (":tag", "expected"),
        ("redis:-tag", "expected"),
        (f"redis:{'t' * 129}", "expected"),
        ("re dis", "expected"),
        ("a//b", "expected"),
        ("a/-b", "expected"),
        ("a/b_", "expected"),
        ("a/b___c", "expected"),
        ("localhost:port/app", "expected"),
        ("[::1/app", "expected"),
        ("-host.com/app", "expected"),
        ("redis@sha256:abc", "expected"),
        (f"redis@md5:{'a' * 32}", "unsupported digest algorithm"),
        (f"redis@sha256:{'a' * 40}", "64"),
        (f"redis@sha256:{'A' * 64}", "lowercase hex"),
        (f"example.com/{'a' * 250}", "255"),
    ],
)
def test_invalid_references(text: str, reason: str) -> None:
    """Text Docker would reject raises InvalidReference (a ValueError) saying why."""
    with pytest.raises(InvalidReference, match=reason) as caught:
        parse(text)
    assert isinstance(caught.value, ValueError)


def test_repository_and_pinned() -> None:
    """`repository` is domain/path; `pinned` is true exactly when a digest is given."""
    assert parse("redis:7").repository == "docker.io/library/redis"
    assert not parse("redis:7").pinned
    assert parse(f"redis@{DIGEST}").pinned
