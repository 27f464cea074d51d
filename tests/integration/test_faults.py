"""Registry faults through a fault-injecting proxy in front of the real registry: in every case
the pass ends within its bound, the container behind the faulty path is reported and left
running untouched (or updated, where the fault is one a client should ride out), and the
container on the healthy path is updated in the same pass."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import images
from harness.dockerd import Dockerd
from harness.faultproxy import Fault, FaultProxy
from harness.registry import Registry
from tests.integration.helpers import ENABLED, run_updater, start

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


@pytest.mark.parametrize("case", list(CASES))
def test_registry_fault(engine: Dockerd, registry: Registry, proxy: FaultProxy, case: str,
                        unique: str, containers: list[str], tmp_path: Path) -> None:
    fault, expected = CASES[case]
    faulty_repo = f"faulty/{unique}"
    direct = f"{registry.host}/{faulty_repo}:latest"
    through_proxy = f"{proxy.host}/{faulty_repo}:latest"
    fine = f"{registry.host}/fine/{unique}:latest"
    images.release(engine.client, direct, "1", keep_local=False)
    engine.client.images.pull(through_proxy)
    images.release(engine.client, fine, "1")
    start(engine, through_proxy, f"{unique}-faulty", ENABLED, containers)
    start(engine, fine, f"{unique}-fine", ENABLED, containers)
    before = engine.client.containers.get(f"{unique}-faulty")
    images.release(engine.client, direct, "2", keep_local=False)
    images.release(engine.client, fine, "2", keep_local=False)
    proxy.set_rule(f"/v2/{faulty_repo}/manifests/", fault)
    mark = len(proxy.hits)

    started = time.monotonic()
    result = run_updater(["update", "--json"], engine, tmp_path,
                         {"state_dir": str(tmp_path / "state"), "registry_timeout": "2s"})
    took = time.monotonic() - started
    proxy.set_rule(f"/v2/{faulty_repo}/manifests/", None)

    assert "Traceback" not in result.stderr, result.stderr
    items: dict[str, Any] = {i["name"]: i for i in json.loads(result.stdout)["items"]}
    assert took < PASS_BOUND, f"{case}: the pass took {took:.1f}s"
    assert items[f"{unique}-fine"]["outcome"] == "updated", items
    faulty = items[f"{unique}-faulty"]
    assert faulty["outcome"] in expected, faulty
    after = engine.client.containers.get(f"{unique}-faulty")
    assert after.attrs["State"]["Running"]
    if "updated" not in expected:
        assert (after.id, after.attrs["Image"]) == (before.id, before.attrs["Image"])
        assert faulty["reason"], faulty  # and it says why
    if case == "429":
        hits = [h for h in proxy.hits[mark:]
                if h.method == "HEAD" and h.path.endswith(f"/{faulty_repo}/manifests/latest")]
        assert hits[0].fault == "status" and hits[1].fault is None
        assert hits[1].time - hits[0].time >= 2.0, "Retry-After: 2 was not honoured"
    print(f"{case}: {faulty['outcome']} in {took:.1f}s; {faulty['reason']}; "
          f"{[(round(i['seconds'], 1), i['name']) for i in items.values()]}")
