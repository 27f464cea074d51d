"""Pass time, registry requests and Docker API calls of a pass with nothing to update, over a
link with added latency, beside ouroboros-cli on the same workload.

Starts its own dockerd and registry (the test harness) with a latency proxy in front of the
registry; runs N labelled containers on M distinct references; then measures
- the updater's pass in-process, cold (new registry client: new connections, the /v2/ ping) and
  warm (the daemon's case: connections kept alive, tokens cached), best of 3 each;
- the `updater check` command as a user runs it (a whole process);
- `ouroboros --run-once` (HARNESS.md; installed in its own venv, given as --ouroboros PATH).
The physical limit for a cold pass is (ceil(M/8) + 2) round trips: 8 connections per registry,
plus connection set-up and the auth challenge.

    .venv/bin/python -m bench.pass_time --rtt 0.05 20/4 200/50 \\
        [--ouroboros /var/tmp/ouroboros-venv/bin/ouroboros]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness import images
from harness.dockerd import Dockerd
from harness.procs import free_port
from harness.proxy import LatencyProxy
from harness.registry import Registry
from updater.core.detect import check, watched
from updater.core.settings import Settings
from updater.engine.adapter import Engine
from updater.registry.client import RegistryClient
from updater.registry.credentials import SettingsCredentials

REPEATS = 3


def workload(engine: Dockerd, host: str, containers: int, references: int) -> None:
    names = [f"{host}/bench/r{i}:latest" for i in range(references)]
    for i, image in enumerate(names):
        images.release(engine.client, image, f"bench-{i}")

    def run(index: int) -> None:
        engine.client.containers.run(names[index % references], name=f"bench-{index}",
                                     detach=True, labels={"updater.enable": "true"})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(run, range(containers)))


def _in_process_pass(engine_host: str, client: RegistryClient) -> tuple[float, int]:
    """One detection pass as the daemon runs it; seconds and Docker API calls."""
    calls = Counter[str]()
    started = time.perf_counter()
    engine = Engine.connect(engine_host)
    engine._api.hooks["response"].append(lambda r, *a, **k: calls.update([r.request.method]))
    chosen, _ = watched(engine.containers(), Settings())
    results = check(chosen, client)
    elapsed = time.perf_counter() - started
    engine.close()
    if any(r.state.value != "up-to-date" for r in results):
        raise RuntimeError("benchmark expects nothing to update")
    return elapsed, sum(calls.values()) + 1  # +1: the version negotiation before the hook


def _served(registry: Registry, mark: int, agent: str) -> Counter[str]:
    return Counter(f"{r.method} {'manifest' if '/manifests/' in r.uri else 'other'}"
                   for r in registry.requests(mark, agent=agent))


def _updater_cold_and_warm(engine: Dockerd, registry: Registry) -> dict[str, Any]:
    cold, warm = [], []
    requests: Counter[str] = Counter()
    for _ in range(REPEATS):
        with RegistryClient({}, SettingsCredentials({})) as client:
            mark = registry.mark()
            seconds, api_calls = _in_process_pass(engine.host, client)
            requests = _served(registry, mark, "updater/")
            cold.append(seconds)
            warm.append(_in_process_pass(engine.host, client)[0])
    return {"cold": min(cold), "warm": min(warm), "requests": requests, "api": api_calls}


def _command(argv: list[str], engine: Dockerd, home: Path, repeats: int = REPEATS) -> float:
    env = {**os.environ, "DOCKER_HOST": engine.host, "HOME": str(home),
           "DOCKER_CONFIG": str(home / ".docker"), "UPDATER_LOG_LEVEL": "warning"}
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True, timeout=1800)
        best = min(best, time.perf_counter() - started)
    return best


def measure(containers: int, references: int, rtt: float, ouroboros: str | None) -> dict[str, str]:
    root = Path(tempfile.mkdtemp(prefix="updater-bench.", dir="/var/tmp"))
    engine = Dockerd(root / "engine").start()
    registry = Registry(root / "registry").start()
    proxy = LatencyProxy(free_port(), registry.port).start()
    host = f"127.0.0.1:{proxy.listen_port}"
    try:
        workload(engine, host, containers, references)
        proxy.rtt = rtt
        ours = _updater_cold_and_warm(engine, registry)
        command = _command([sys.executable, "-m", "updater", "check"], engine, root)
        peer_seconds, peer_requests = None, Counter[str]()
        if ouroboros:
            mark = registry.mark()
            peer_seconds = _command([ouroboros, "-d", engine.host, "--run-once", "-l", "error"],
                                    engine, root, repeats=1)
            peer_requests = _served(registry, mark, "docker/")
    finally:
        proxy.stop()
        registry.stop()
        engine.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)
    limit = (math.ceil(references / 8) + 2) * rtt
    row = {"N/M": f"{containers}/{references}", "RTT ms": f"{rtt * 1000:.0f}",
           "limit s": f"{limit:.2f}", "cold pass s": f"{ours['cold']:.2f}",
           "x limit": f"{ours['cold'] / limit:.2f}" if limit else "-",
           "warm pass s": f"{ours['warm']:.2f}", "check cmd s": f"{command:.2f}",
           "HEAD": str(ours["requests"]["HEAD manifest"]),
           "GET": str(ours["requests"]["GET manifest"]),
           "other req": str(sum(ours["requests"].values()) - ours["requests"]["HEAD manifest"]
                            - ours["requests"]["GET manifest"]),
           "API calls": str(ours["api"])}
    if ouroboros:
        row["ouroboros s"] = f"{peer_seconds:.2f}" if peer_seconds else "-"
        row["ouroboros requests"] = " ".join(f"{k}={v}" for k, v in sorted(peer_requests.items()))
    return row


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("workloads", nargs="*", default=["20/4", "200/50"])
    parser.add_argument("--rtt", type=float, default=0.05, help="round trip in seconds")
    parser.add_argument("--ouroboros", help="path of the ouroboros command, to compare")
    arguments = parser.parse_args(argv)
    rows = []
    for spec in arguments.workloads:
        n, m = (int(x) for x in spec.split("/"))
        rows.append(measure(n, m, arguments.rtt, arguments.ouroboros))
        print(rows[-1], flush=True, file=sys.stderr)
    headers = list(rows[0])
    print("| " + " | ".join(headers) + " |")
    print("|" + " --- |" * len(headers))
    for row in rows:
        print("| " + " | ".join(row.get(h, "") for h in headers) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
