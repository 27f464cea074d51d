"""Version tags: which tag a container on a version tag moves to, under the rules peers get
wrong (suffixes kept, precision kept, no jump to a pre-release, within major/minor)."""

from __future__ import annotations

import re

import pytest

from updater.core.detect import check
from updater.core.policy import State
from updater.core.reference import Reference
from updater.core.settings import Settings
from updater.core.snapshots import ContainerSnapshot
from updater.core.tags import TagPolicy, Within, newest, parse, retagged

# The issue's repository: versions, a suffixed one, a pre-release, `latest`, and filler.
TAGS = ["1.2.3", "1.2.4", "1.3.0", "1.3.0-alpine", "1.10.0", "2.0.0", "2.1.0-rc1", "latest",
        *(f"build-{i}" for i in range(150))]


@pytest.mark.parametrize(("within", "expected"), [
    (Within.MAJOR, "1.10.0"), (Within.MINOR, "1.2.4"), (Within.NONE, "2.0.0")])
def test_the_issue_repository(within: Within, expected: str) -> None:
    assert newest("1.2.3", TAGS, TagPolicy(within)) == expected


def test_numbers_compare_as_numbers_not_text() -> None:
    assert newest("1.9.0", ["1.10.0", "1.9.1"], TagPolicy()) == "1.10.0"


@pytest.mark.parametrize(("current", "tags", "expected"), [
    ("1.25-alpine", ["1.27-alpine", "1.27", "1.28.1-alpine", "1.26-alpine"], "1.27-alpine"),
    ("1.25", ["1.27-alpine", "1.26", "1.27.0"], "1.26"),  # precision kept
    ("1.2.3-alpine", ["1.3.0", "1.3.0-alpine3.18", "1.2.9-alpine"], "1.2.9-alpine"),
    ("v1.2", ["1.3", "v1.4"], "v1.4"),  # the v is part of how the repository names them
    ("16", ["17", "16.1", "18-alpine"], None),  # within major: 16 has no newer 16
])
def test_suffix_precision_and_prefix_are_kept(current: str, tags: list[str],
                                              expected: str | None) -> None:
    assert newest(current, tags, TagPolicy()) == expected


def test_no_prerelease_unless_the_current_tag_is_one() -> None:
    tags = ["2.0.0", "2.1.0-rc1", "2.1.0-beta.2", "3.0.0-alpha"]
    assert newest("2.0.0", tags, TagPolicy(Within.NONE)) is None
    assert newest("2.1.0-rc1", ["2.1.0-rc2", "2.1.0-rc10", "2.0.9"], TagPolicy()) == "2.1.0-rc10"
    assert newest("2.1.0-rc1", ["2.1.0-rc2", "2.1.0"], TagPolicy()) == "2.1.0"


def test_include_and_exclude_match_whole_tags() -> None:
    tags = ["1.3.0", "1.4.0", "1.5.0"]
    assert newest("1.2.0", tags, TagPolicy(exclude=re.compile(r"1\.5\..*"))) == "1.4.0"
    assert newest("1.2.0", tags, TagPolicy(include=re.compile(r"1\.[34]\.0"))) == "1.4.0"
    assert newest("1.2.0", tags, TagPolicy(include=re.compile(r"1\.3"))) is None  # not full


def test_only_newer_tags_count() -> None:
    assert newest("1.10.0", ["1.2.0", "1.9.9", "1.10.0"], TagPolicy()) is None


def test_a_current_tag_that_is_no_version_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'latest' is not a version"):
        newest("latest", TAGS, TagPolicy())


@pytest.mark.parametrize(("tag", "numbers", "prerelease", "suffix"), [
    ("1.2.3", (1, 2, 3), None, None), ("v2", (2,), None, None),
    ("1.25-alpine", (1, 25), None, "alpine"), ("2.0.0-rc1-alpine", (2, 0, 0), "rc1", "alpine"),
    ("1.0-bookworm-slim", (1, 0), None, "bookworm-slim"), ("3.1-beta.2", (3, 1), "beta.2", None),
])
def test_parse(tag: str, numbers: tuple[int, ...], prerelease: str | None,
               suffix: str | None) -> None:
    found = parse(tag)
    assert found is not None
    assert (found.numbers, found.prerelease, found.suffix) == (numbers, prerelease, suffix)


@pytest.mark.parametrize("tag", ["latest", "stable", "1.2.3.4", "sha-abc123", "", "1.2.x"])
def test_what_is_not_a_version(tag: str) -> None:
    assert parse(tag) is None


# --- detection: the tag step between listing and the digest lookup -------------------------

REPO = "reg.example/app"
DIGESTS = {f"{REPO}:{tag}": "sha256:" + f"{i:x}" * 64 for i, tag in enumerate(TAGS[:7], 1)}
SEMVER = {"updater.enable": "true", "updater.tags": "semver"}


class TaggedRegistry:
    """Tags and digests of one repository, counting what is asked."""

    def __init__(self) -> None:
        self.listed: list[str] = []
        self.asked: list[str] = []

    def tags(self, reference: Reference) -> list[str]:
        self.listed.append(reference.repository)
        return list(TAGS)

    def digest(self, reference: Reference) -> str:
        self.asked.append(str(reference))
        return DIGESTS[str(reference)]


def _on(name: str, tag: str, labels: dict[str, str]) -> ContainerSnapshot:
    digest = DIGESTS[f"{REPO}:{tag}"]
    return ContainerSnapshot(id=name * 3, name=name, image=f"{REPO}:{tag}", image_id="sha256:x",
                             state="running", labels=labels, repo_digests=(f"{REPO}@{digest}",))


def test_containers_on_version_tags_are_compared_with_their_newest_allowed_tag() -> None:
    registry = TaggedRegistry()
    containers = [_on("major", "1.2.3", SEMVER),
                  _on("minor", "1.2.3", {**SEMVER, "updater.tags.within": "minor"}),
                  _on("none", "1.2.3", {**SEMVER, "updater.tags.within": "none"}),
                  _on("alpine", "1.3.0-alpine", SEMVER),
                  _on("digest", "1.2.3", {"updater.enable": "true"})]
    results = {r.name: r for r in check(containers, registry, settings=Settings())}
    assert {name: r.target for name, r in results.items()} == {
        "major": f"{REPO}:1.10.0", "minor": f"{REPO}:1.2.4", "none": f"{REPO}:2.0.0",
        "alpine": None, "digest": None}
    assert results["major"].state is State.UPDATE_AVAILABLE
    assert results["major"].remote_digest == DIGESTS[f"{REPO}:1.10.0"]
    assert results["alpine"].state is State.UP_TO_DATE
    assert results["digest"].state is State.UP_TO_DATE
    assert registry.listed == [REPO]  # one listing for the repository, for the whole pass
    assert sorted(registry.asked) == sorted({f"{REPO}:1.10.0", f"{REPO}:1.2.4", f"{REPO}:2.0.0",
                                             f"{REPO}:1.3.0-alpine", f"{REPO}:1.2.3"})


def test_without_a_tag_policy_no_tags_are_listed() -> None:
    registry = TaggedRegistry()
    check([_on("digest", "1.2.3", {"updater.enable": "true"})], registry, settings=Settings())
    assert registry.listed == [] and registry.asked == [f"{REPO}:1.2.3"]


def test_the_setting_applies_where_no_label_says_otherwise() -> None:
    registry = TaggedRegistry()
    [result] = check([_on("app", "1.2.3", {"updater.enable": "true"})], registry,
                     settings=Settings(tags="semver"))
    assert result.target == f"{REPO}:1.10.0"


@pytest.mark.parametrize(("labels", "message"), [
    ({"updater.tags": "sometimes"}, "updater.tags='sometimes' is not one of digest, semver"),
    ({"updater.tags.within": "patch"}, "updater.tags.within='patch' is not one of major"),
    ({"updater.tags.include": "1.(2"}, "updater.tags.include='1.(2' is not a regular"),
])
def test_a_bad_tag_label_is_an_error_for_that_container_only(labels: dict[str, str],
                                                             message: str) -> None:
    registry = TaggedRegistry()
    bad, good = check([_on("bad", "1.2.3", {**SEMVER, **labels}), _on("good", "1.2.3", SEMVER)],
                      registry, settings=Settings())
    assert bad.state is State.ERROR and message in (bad.error or ""), bad
    assert good.target == f"{REPO}:1.10.0"


def test_a_current_tag_that_is_no_version_is_reported_not_acted_on() -> None:
    registry = TaggedRegistry()
    digest = DIGESTS[f"{REPO}:1.2.3"]
    latest = ContainerSnapshot(id="l" * 3, name="l", image=f"{REPO}:latest", image_id="sha256:x",
                               state="running", labels=SEMVER,
                               repo_digests=(f"{REPO}@{digest}",))
    [result] = check([latest], registry, settings=Settings())
    assert result.state is State.ERROR and "'latest' is not a version" in (result.error or "")


@pytest.mark.parametrize(("image", "expected"), [
    ("reg:5000/app:1.2", "reg:5000/app:1.3"), ("nginx", "nginx:1.3"),
    ("app:1.2@sha256:" + "a" * 64, "app:1.3"), ("reg:5000/app", "reg:5000/app:1.3")])
def test_retagged_keeps_how_the_user_wrote_the_name(image: str, expected: str) -> None:
    assert retagged(image, "1.3") == expected
