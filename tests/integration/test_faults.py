"""Registry faults through a fault-injecting proxy in front of the real registry: in every case
the pass ends within its bound, the container behind the faulty path is reported and left
running untouched (or updated, where the fault is one a client should ride out), and the
container on the healthy path is updated in the same pass."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import images
from harness.dockerd import Dockerd
from harness.faultproxy import Fault, FaultProxy
from harness.registry import Registry
from tests.integration.helpers import ENABLED, run_updater, start, start_daemon, wait_until

pytestmark = [pytest.mark.engine]
PASS_BOUND = 40.0  # 4 attempts x 2 s timeout x up to 3 reads + backoff 1+2+4 s, with margin


@pytest.fixture(scope="module")
def proxy(registry: Registry) -> Iterator[FaultProxy]:
    server = FaultProxy(registry.port).start()
    try:
        yield server
    finally:
        server.stop()


CASES: dict[str, tuple[Fault, set[str]]] = {
    "latency": (Fault("latency", delay=0.3), {"updated"}),
    "reset": (Fault("reset"), {"error"}),
    "stall": (Fault("stall", delay=30), {"error"}),
    "500": (Fault("status", status=500), {"error"}),
    "503": (Fault("status", status=503), {"error"}),
    "429": (Fault("status", status=429, retry_after="2", times=1), {"updated"}),
    "truncated": (Fault("truncate"), {"error"}),
    "oversized": (Fault("oversize"), {"error"}),
    # A HEAD digest cannot be checked without the manifest: the pull of that digest fails,
    # before anything is stopped.
    "wrong-digest": (Fault("wrong-digest"), {"error", "failed"}),
}


def test_every_registry_fault_in_one_pass(engine: Dockerd, registry: Registry,
                                          proxy: FaultProxy, unique: str, containers: list[str],
                                          tmp_path: Path) -> None:
    """Nine containers behind nine faults and one on the healthy path, in one pass (their
    registry lookups run side by side, as in production)."""
    fine = f"{registry.host}/fine/{unique}:latest"
    images.release(engine.client, fine, "1")
    start(engine, fine, f"{unique}-fine", ENABLED, containers)
    before = {}
    for case in CASES:
        repository = f"faulty/{unique}-{case}"
        images.release(engine.client, f"{registry.host}/{repository}:latest", "1",
                       keep_local=False)
        engine.client.images.pull(f"{proxy.host}/{repository}:latest")
        start(engine, f"{proxy.host}/{repository}:latest", f"{unique}-{case}", ENABLED,
              containers)
        before[case] = engine.client.containers.get(f"{unique}-{case}")
        images.release(engine.client, f"{registry.host}/{repository}:latest", "2",
                       keep_local=False)
    images.release(engine.client, fine, "2", keep_local=False)
    mark = len(proxy.hits)
    for case, (fault, _) in CASES.items():
        proxy.set_rule(f"/v2/faulty/{unique}-{case}/manifests/", fault)

    started = time.monotonic()
    result = run_updater(["update", "--json"], engine, tmp_path,
                         {"state_dir": str(tmp_path / "state"), "registry_timeout": "2s"})
    took = time.monotonic() - started
    for case in CASES:
        proxy.set_rule(f"/v2/faulty/{unique}-{case}/manifests/", None)

    assert "Traceback" not in result.stderr, result.stderr
    items: dict[str, Any] = {i["name"]: i for i in json.loads(result.stdout)["items"]}
    print(f"\none pass over {len(CASES)} faults + 1 healthy path: {took:.1f}s")
    for case in CASES:
        item = items[f"{unique}-{case}"]
        print(f"  {case}: {item['outcome']} ({item['reason'] or 'no error'})")
    assert took < PASS_BOUND, f"the pass took {took:.1f}s"
    assert items[f"{unique}-fine"]["outcome"] == "updated", items
    for case, (_, expected) in CASES.items():
        item = items[f"{unique}-{case}"]
        assert item["outcome"] in expected, (case, item)
        after = engine.client.containers.get(f"{unique}-{case}")
        assert after.attrs["State"]["Running"], case
        if "updated" not in expected:
            old = before[case]
            assert (after.id, after.attrs["Image"]) == (old.id, old.attrs["Image"]), case
            assert item["reason"], item  # and it says why
    hits = [h for h in proxy.hits[mark:]
            if h.method == "HEAD" and h.path.endswith(f"/{unique}-429/manifests/latest")]
    assert hits[0].fault == "status" and hits[1].fault is None
    assert hits[1].time - hits[0].time >= 2.0, "Retry-After: 2 was not honoured"


@pytest.mark.parametrize("status", [404, 405])
def test_a_registry_refusing_head_is_read_by_get(engine: Dockerd, registry: Registry,
                                                 unique: str, containers: list[str],
                                                 tmp_path: Path, status: int) -> None:
    """A proxy answering HEAD with 404 or 405 (Nexus, some proxies) where GET works: the new
    release is found by GET and applied; the requests say so."""
    refusing = FaultProxy(registry.port).start()
    try:
        repository = f"nohead/{unique}-{status}"
        images.release(engine.client, f"{registry.host}/{repository}:latest", "1",
                       keep_local=False)
        engine.client.images.pull(f"{refusing.host}/{repository}:latest")
        name = f"{unique}-{status}"
        start(engine, f"{refusing.host}/{repository}:latest", name, ENABLED, containers)
        old = engine.client.containers.get(name).attrs["Image"]
        images.release(engine.client, f"{registry.host}/{repository}:latest", "2",
                       keep_local=False)
        refusing.set_rule("/manifests/", Fault("status", status=status, method="HEAD"))
        mark = len(refusing.hits)
        result = run_updater(["update", "--json", name], engine, tmp_path,
                             {"state_dir": str(tmp_path / "state")})
        hits = [(h.method, h.fault) for h in refusing.hits[mark:] if "/manifests/" in h.path]
    finally:
        refusing.stop()
    assert result.returncode == 0, result.stderr
    [item] = json.loads(result.stdout)["items"]
    assert item["outcome"] == "updated", item
    assert engine.client.containers.get(name).attrs["Image"] != old
    assert ("HEAD", "status") in hits and ("GET", None) in hits, hits
    assert "refuses HEAD for manifests" in result.stderr


@pytest.mark.slow
def test_sigterm_during_a_registry_backoff_stops_the_daemon_at_once(
        engine: Dockerd, registry: Registry, proxy: FaultProxy, unique: str,
        containers: list[str], tmp_path: Path) -> None:
    """The registry answers 503 with `Retry-After: 50`: the daemon waits in the backoff, and a
    SIGTERM then ends it within 2 s (before, it slept the backoff out first)."""
    repository = f"faulty/{unique}-backoff"
    images.release(engine.client, f"{registry.host}/{repository}:latest", "1")
    image = f"{proxy.host}/{repository}:latest"
    engine.client.images.pull(image)
    start(engine, image, unique, ENABLED, containers)
    path = f"/v2/{repository}/manifests/"
    proxy.set_rule(path, Fault("status", status=503, retry_after="50"))
    pulled = len(proxy.hits_for(path))  # the pull above, not the daemon's request
    daemon = start_daemon(engine, tmp_path, {"interval": "1h", "update_on_start": True,
                                             "state_dir": str(tmp_path / "state")})
    try:
        wait_until(lambda: len(proxy.hits_for(path)) > pulled, 60,
                   lambda: "the daemon never asked the registry")
        time.sleep(1)  # well into the 50 s backoff
        started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        proxy.set_rule(path, None)
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=30)
    output = daemon.stdout.read() if daemon.stdout else ""
    print(f"exit {elapsed:.2f} s after SIGTERM")
    assert code == 0, output
    assert elapsed < 2, output
    assert [hit.fault for hit in proxy.hits_for(path)].count("status") == 1, output
