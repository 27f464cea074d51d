"""Benchmark of digest sharing: the swarm leader's updater serving N simulated nodes.

Starts a real registry (the test harness) with M repositories, then the leader's side as it
runs in `updater run` (the API listener, `GET /v1/digests`, the shared cache, the registry
client) in its own process, and N nodes asking it at once for their references (each node runs
K of the M, as the updater's client asks). Two passes: the first finds nothing cached, the
second everything. Prints the registry's requests (from its access log), the leader's peak RSS
and CPU time, and the answer times. Run as root from the repository:

    .venv/bin/python -m bench.fleet                 # 1000 nodes, 50 references, 10 each
    .venv/bin/python -m bench.fleet 200/50/10       # any N/M/K
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from harness.procs import free_port, port_open, wait_for
from harness.registry import Registry

FLEET, API = "bench-fleet-token", "bench-api-token"
CONCURRENT = 256  # nodes whose requests are in flight at once
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def publish(registry: str, repositories: list[str]) -> None:
    """One small image per repository under `latest`, through the registry's API."""
    with httpx.Client(base_url=f"http://{registry}", timeout=30) as http:
        for repository in repositories:
            config = json.dumps({"architecture": "amd64", "os": "linux",
                                 "rootfs": {"type": "layers", "diff_ids": []},
                                 "config": {"Labels": {"repo": repository}}}).encode()
            digest = "sha256:" + hashlib.sha256(config).hexdigest()
            location = http.post(f"/v2/{repository}/blobs/uploads/").headers["Location"]
            separator = "&" if "?" in location else "?"
            http.put(f"{location}{separator}digest={digest}", content=config,
                     headers={"Content-Type": "application/octet-stream"}).raise_for_status()
            manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                   "config": {"mediaType": "application/vnd.oci.image.config."
                                              "v1+json", "digest": digest,
                                              "size": len(config)}, "layers": []}).encode()
            http.put(f"/v2/{repository}/manifests/latest", content=manifest,
                     headers={"Content-Type": OCI_MANIFEST}).raise_for_status()


def leader(port: int, registry: str) -> None:
    """The leader's side, as `updater run` builds it (run in its own process)."""
    from updater.core.settings import RegistrySettings
    from updater.registry.client import RegistryClient
    from updater.registry.credentials import SettingsCredentials
    from updater.registry.fleet import DigestCache
    from updater.serve.api import ApiServer
    from updater.serve.fleet import FleetEndpoint

    settings = {registry: RegistrySettings(insecure=True)}
    client = RegistryClient(settings, SettingsCredentials(settings))
    cache = DigestCache(client)
    endpoint = FleetEndpoint(FLEET, cache, lambda: True, 3600.0)
    ApiServer(f"127.0.0.1:{port}", API, _NoControl(), fleet=endpoint).start()
    threading.Event().wait()


class _NoControl:
    def __getattr__(self, name: str) -> object:
        raise AttributeError(name)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def one_pass(port: int, wanted: list[list[str]]) -> tuple[list[float], Counter[str]]:
    """Every node asks once, CONCURRENT at a time, with the updater's own client."""
    from updater.core.reference import parse
    from updater.registry.fleet import FleetClient

    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    class NoRegistry:  # a node falling back would ask it: counted as a failure here
        def digest(self, reference: object) -> str:
            with lock:
                outcomes["fell back"] += 1
            raise RuntimeError("fallback")

        def tags(self, reference: object) -> list[str]:
            return []

        def platform_digest(self, *args: object) -> str | None:
            return None

    def node(refs: list[str]) -> float:
        client = FleetClient(NoRegistry(), FLEET, port, read_seconds=60)  # type: ignore[arg-type]
        started = time.perf_counter()
        try:
            answers = client.digests(["127.0.0.1"], [parse(r) for r in refs], 3600)
        except RuntimeError:
            return time.perf_counter() - started
        finally:
            client.close()
        with lock:
            outcomes["answered" if len(answers) == len(refs) else "short"] += 1
        return time.perf_counter() - started

    with ThreadPoolExecutor(CONCURRENT) as pool:
        times = list(pool.map(node, wanted))
    return times, outcomes


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main(argv: list[str]) -> int:
    if argv[:1] == ["leader"]:
        leader(int(argv[1]), argv[2])
        return 0
    nodes, references, each = (int(x) for x in (argv[0] if argv else "1000/50/10").split("/"))
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as directory:
        registry = Registry(Path(directory) / "registry").start()
        process = None
        try:
            repositories = [f"bench/app{i:03d}" for i in range(references)]
            publish(registry.host, repositories)
            refs = [f"{registry.host}/{r}:latest" for r in repositories]
            rng = random.Random(7)
            wanted = [rng.sample(refs, each) for _ in range(nodes)]
            port = free_port()
            process = subprocess.Popen([sys.executable, "-m", "bench.fleet", "leader",
                                        str(port), registry.host])
            wait_for(lambda: port_open(port), 30, "the leader's API")
            print(f"{nodes} nodes, {references} distinct references, {each} per node, "
                  f"{CONCURRENT} asking at once")
            for label in ("first pass (nothing cached)", "second pass (all cached)"):
                mark, cpu = registry.mark(), cpu_seconds(process.pid)
                started = time.perf_counter()
                times, outcomes = one_pass(port, wanted)
                wall = time.perf_counter() - started
                heads = [r for r in registry.requests(mark) if r.method == "HEAD"]
                print(f"{label}: registry HEADs {len(heads)}, leader CPU "
                      f"{cpu_seconds(process.pid) - cpu:.2f}s, wall {wall:.2f}s, answer p50 "
                      f"{percentile(times, 0.5) * 1000:.0f}ms p99 "
                      f"{percentile(times, 0.99) * 1000:.0f}ms, {dict(outcomes)}")
            print(f"leader peak RSS {peak_rss_kib(process.pid) / 1024:.1f} MiB")
        finally:
            if process is not None:
                process.kill()
                process.wait()
            registry.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
