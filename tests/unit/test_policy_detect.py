"""What is watched and what state it is in: pure decisions, with a fake registry."""

from __future__ import annotations

import dataclasses

import pytest

from updater.core.detect import check, require_names, watched
from updater.core.policy import State, bool_label, is_watched, label, local_digests
from updater.core.reference import Reference, parse
from updater.core.settings import Settings
from updater.core.snapshots import ContainerSnapshot
from updater.engine.adapter import own_container_id
from updater.errors import ConfigError, ManifestNotFound, NotWatched, RegistryUnavailable

OLD, NEW = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def snapshot(name: str, image: str, labels: dict[str, str] | None = None,
             repo_digests: tuple[str, ...] = ()) -> ContainerSnapshot:
    return ContainerSnapshot(id=name * 3, name=name, image=image, image_id="sha256:x",
                             state="running", labels=labels or {}, repo_digests=repo_digests)


class FakeRegistry:
    def __init__(self, answers: dict[str, str | Exception]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def digest(self, reference: Reference) -> str:
        self.asked.append(str(reference))
        answer = self.answers[str(reference)]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.mark.parametrize(("labels", "label_enable", "scope", "expected"), [
    ({}, True, None, False),
    ({"updater.enable": "true"}, True, None, True),
    ({"com.centurylinklabs.watchtower.enable": "true"}, True, None, True),
    ({"updater.enable": "false", "com.centurylinklabs.watchtower.enable": "true"}, True, None,
     False),
    ({}, False, None, True),
    ({"updater.enable": "false"}, False, None, False),
    ({"updater.enable": "true", "updater.scope": "a"}, True, "a", True),
    ({"updater.enable": "true", "updater.scope": "b"}, True, "a", False),
    ({"updater.enable": "true"}, True, "a", False),
    ({"updater.enable": "true", "com.centurylinklabs.watchtower.scope": "a"}, True, "a", True),
])
def test_is_watched(labels: dict[str, str], label_enable: bool, scope: str | None,
                    expected: bool) -> None:
    """Opt-in or opt-out, scope matching, Watchtower labels as aliases, ours winning."""
    assert is_watched(labels, Settings(label_enable=label_enable, scope=scope)) is expected


def test_bad_boolean_label_is_named() -> None:
    """A label that is neither true nor false is a ConfigError naming label and value."""
    with pytest.raises(ConfigError, match=r"updater.enable='maybe'"):
        bool_label({"updater.enable": "maybe"}, "enable")


def test_hook_labels_alias_watchtower_lifecycle() -> None:
    """Watchtower's lifecycle labels are read for our hook labels."""
    labels = {"com.centurylinklabs.watchtower.lifecycle.pre-update": "echo hi"}
    assert label(labels, "hook.pre-update") == "echo hi"


def test_local_digests_match_by_normalised_repository() -> None:
    """RepoDigests of other repositories do not count; Docker Hub short names normalise."""
    digests = (f"redis@{OLD}", f"docker.io/library/redis@{NEW}", f"other/redis@{NEW}")
    assert local_digests(parse("redis:7"), digests) == (OLD, NEW)
    assert local_digests(parse("127.0.0.1:5000/redis"), digests) == ()


def test_check_asks_each_reference_once_and_compares() -> None:
    """Containers sharing a reference cost one lookup; states follow the digests."""
    image = "reg.example/app:1"
    containers = [snapshot(f"c{i}", image, repo_digests=(f"reg.example/app@{OLD}",))
                  for i in range(5)]
    containers.append(snapshot("fresh", "reg.example/new:1",
                               repo_digests=(f"reg.example/new@{NEW}",)))
    registry = FakeRegistry({"reg.example/app:1": NEW, "reg.example/new:1": NEW})
    results = {r.name: r for r in check(containers, registry)}
    assert sorted(registry.asked) == ["reg.example/app:1", "reg.example/new:1"]
    assert results["c0"].state is State.UPDATE_AVAILABLE
    assert (results["c0"].local_digest, results["c0"].remote_digest) == (OLD, NEW)
    assert results["fresh"].state is State.UP_TO_DATE


def test_check_pinned_image_id_and_unpulled() -> None:
    """Pinned references, image IDs and never-pulled images are decided without a lookup."""
    containers = [snapshot("pin", f"reg.example/app@{OLD}"),
                  snapshot("byid", "sha256:" + "9" * 64),
                  snapshot("local", "reg.example/built:1"),
                  snapshot("bad", "UPPER/Case")]
    registry = FakeRegistry({})
    results = {r.name: r for r in check(containers, registry)}
    assert registry.asked == []
    assert (results["pin"].state, results["pin"].local_digest) == (State.PINNED, OLD)
    assert results["byid"].state is State.ERROR and "image ID" in (results["byid"].error or "")
    assert "never pulled" in (results["local"].error or "")
    assert "lowercase" in (results["bad"].error or "")


def test_one_failed_lookup_leaves_the_others_checked() -> None:
    """A registry error is reported for its containers only."""
    containers = [snapshot("a", "reg.example/a:1", repo_digests=(f"reg.example/a@{OLD}",)),
                  snapshot("b", "down.example/b:1", repo_digests=(f"down.example/b@{OLD}",)),
                  snapshot("c", "reg.example/c:1", repo_digests=(f"reg.example/c@{OLD}",))]
    registry = FakeRegistry({"reg.example/a:1": OLD, "reg.example/c:1": NEW,
                             "down.example/b:1": RegistryUnavailable("down.example is down")})
    results = {r.name: r for r in check(containers, registry)}
    assert results["b"].state is State.ERROR and results["b"].error == "down.example is down"
    assert results["b"].local_digest == OLD
    assert (results["a"].state, results["c"].state) == (State.UP_TO_DATE, State.UPDATE_AVAILABLE)


def test_watched_reports_bad_labels_and_filters_names() -> None:
    """Unreadable labels become error results; names narrow the selection."""
    containers = [snapshot("a", "x", {"updater.enable": "true"}),
                  snapshot("b", "x", {"updater.enable": "perhaps"}),
                  snapshot("c", "x", {"updater.enable": "true"})]
    chosen, errors = watched(containers, Settings(), ("a", "b"))
    assert [c.name for c in chosen] == ["a"]
    assert [(e.name, e.state) for e in errors] == [("b", State.ERROR)]


def test_not_found_is_an_error_row() -> None:
    """A tag the registry does not have is reported, not raised."""
    container = snapshot("gone", "reg.example/gone:1", repo_digests=(f"reg.example/gone@{OLD}",))
    registry = FakeRegistry({"reg.example/gone:1": ManifestNotFound("no such tag")})
    [result] = check([container], registry)
    assert (result.state, result.error) == (State.ERROR, "no such tag")


def test_own_container_id_from_mountinfo() -> None:
    """The updater finds its own container ID in the mounts Docker gives every container."""
    line = ("1046 1030 254:1 /var/lib/docker/containers/" + "c" * 64 +
            "/hostname /etc/hostname rw,relatime - ext4 /dev/vda1 rw\n")
    assert own_container_id("12 1 0:1 / / rw - overlay overlay rw\n" + line) == "c" * 64
    assert own_container_id("12 1 0:1 / / rw - ext4 /dev/vda1 rw\n") is None


def test_swarm_task_containers_are_left_to_their_service() -> None:
    """A task's container is the swarm's, even when labelled or when everything is watched."""
    task = snapshot("svc.1.abc", "r.io/a:1", {"updater.enable": "true",
                                              "com.docker.swarm.task.id": "abc"})
    plain = snapshot("plain", "r.io/a:1", {"updater.enable": "true"})
    for label_enable in (True, False):
        chosen, errors = watched([task, plain], Settings(label_enable=label_enable))
        assert [c.name for c in chosen] == ["plain"] and errors == []


def test_content_digest_stands_in_when_the_tag_moved_on_the_containerd_store() -> None:
    """An image left without names (its tag moved) on the containerd store is known by its ID,
    the digest it was pulled as: update-available, not "never pulled"."""
    moved = dataclasses.replace(snapshot("moved", "reg.example/app:1"), content_digest=OLD)
    results = {r.name: r for r in check([moved], FakeRegistry({"reg.example/app:1": NEW}))}
    assert (results["moved"].state, results["moved"].local_digest) == (State.UPDATE_AVAILABLE,
                                                                       OLD)


class _Indexes:
    """A registry that knows what each index names per platform."""

    def __init__(self, indexes: dict[str, dict[str, str]], failing: bool = False) -> None:
        self.indexes, self.failing = indexes, failing

    def platform_digest(self, ref: Reference, digest: str, platform: str) -> str | None:
        if self.failing:
            raise RegistryUnavailable("reg.example is down")
        return self.indexes[digest].get(platform)


def test_an_index_changed_only_for_other_platforms_changes_nothing() -> None:
    """Each platform asked for names the same image in the new index as in the old: the note
    says which; one that differs, or that the new index lacks, or a registry that cannot
    say, leaves it to the digests."""
    from updater.core.detect import unchanged_for

    ref = parse("reg.example/app:1")
    amd, arm, arm2, s390 = ("sha256:" + c * 64 for c in "1234")
    registry = _Indexes({"old": {"linux/amd64": amd, "linux/arm64": arm},
                         "arm-rebuilt": {"linux/amd64": amd, "linux/arm64": arm2},
                         "s390-added": {"linux/amd64": amd, "linux/arm64": arm,
                                        "linux/s390x": s390}})
    assert unchanged_for(registry, ref, ["old"], "arm-rebuilt", ["linux/amd64"], "web") == \
        "the tag's index changed, its linux/amd64 image did not"
    assert unchanged_for(registry, ref, ["old"], "s390-added", ["linux/arm64", "linux/amd64"],
                         "web") == ("the tag's index changed, its images for linux/amd64, "
                                    "linux/arm64 did not")
    assert unchanged_for(registry, ref, ["old"], "arm-rebuilt",
                         ["linux/amd64", "linux/arm64"], "web") is None
    assert unchanged_for(registry, ref, ["old"], "s390-added", ["linux/s390x"], "web") is None
    assert unchanged_for(registry, ref, ["old"], "arm-rebuilt", [], "web") is None
    failing = _Indexes(registry.indexes, failing=True)
    assert unchanged_for(failing, ref, ["old"], "arm-rebuilt", ["linux/amd64"], "web") is None


def test_an_unknown_name_is_not_watched() -> None:
    """A name that matches nothing is NotWatched (the API answers 404 for it, as for `POST
    /v1/approve?name=` without a digest), naming containers and services alike."""
    require_names(["web"], ["web", "db"])
    with pytest.raises(NotWatched, match="no watched container or service named nope"):
        require_names(["nope", "web"], ["web"])


class _Skipped:
    def decision(self, name: str, digest: str) -> str | None:
        return "skipped" if (name, digest) == ("web", "sha256:bad") else None


def test_a_skipped_digest_is_held_back_without_approvals_too() -> None:
    """`updater skip web --digest D` says D is never applied: that holds for an item without
    `approve` as well (held back for good), and only for D and that item."""
    import datetime

    from updater.core.policy import SeenInMemory, options, why_waiting

    rules = options({}, Settings(), None)
    now = datetime.datetime(2026, 12, 2, tzinfo=datetime.UTC)
    found = why_waiting(rules, "web", "reg/app", "sha256:bad", now, SeenInMemory(), _Skipped())
    assert found == (True, "skipped: this image was rejected with `updater skip`; a newer one "
                           "is applied as usual")
    assert why_waiting(rules, "web", "reg/app", "sha256:new", now, SeenInMemory(),
                       _Skipped()) is None
    assert why_waiting(rules, "db", "reg/app", "sha256:bad", now, SeenInMemory(),
                       _Skipped()) is None


class _Approvals:
    def __init__(self) -> None:
        self.approved: set[str] = set()

    def decision(self, name: str, digest: str) -> str | None:
        return "approved" if digest in self.approved else None


def test_the_minimum_age_counts_from_first_sight_not_from_the_approval() -> None:
    """With approvals and a minimum age, the clock starts when the digest is first seen (while
    it waits for approval): approved a day later, a 1h-old-enough image moves at once."""
    import datetime

    from updater.core.policy import SeenInMemory, options, why_waiting

    rules = options({"updater.approve": "true", "updater.min-age": "1h"}, Settings(), None)
    seen, decisions = SeenInMemory(), _Approvals()
    first = datetime.datetime(2026, 12, 2, tzinfo=datetime.UTC)
    waits = why_waiting(rules, "web", "reg/app", "sha256:new", first, seen, decisions)
    assert waits is not None and waits[1].startswith("waiting for approval")
    decisions.approved.add("sha256:new")
    later = first + datetime.timedelta(days=1)
    assert why_waiting(rules, "web", "reg/app", "sha256:new", later, seen, decisions) is None
