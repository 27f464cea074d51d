"""Benchmark of the registry cost of swarm services: S services on M distinct references on a
one-node swarm, the registry behind a latency proxy; one `updater check` and one `updater update`
pass (nothing to update) as a user runs them, timed, with the manifest requests the registry
served to the updater read from its access log.

    .venv/bin/python -m bench.services_pass            # 20/4 at 50 ms
    .venv/bin/python -m bench.services_pass --rtt 0.05 20/4 40/8
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from harness import images
from harness.dockerd import Dockerd
from harness.procs import free_port
from harness.proxy import LatencyProxy
from harness.registry import Registry

REPEATS = 3
CONVERGE_SECONDS = 180.0


def _services(engine: Dockerd, host: str, services: int, references: int) -> None:
    engine.client.swarm.init(advertise_addr="127.0.0.1", listen_addr=f"127.0.0.1:{free_port()}")
    names = [f"{host}/bench/s{i}:latest" for i in range(references)]
    # Pinned as `docker service create` pins them: repo:tag@digest.
    pinned = [f"{image}@{images.release(engine.client, image, f'bench-{i}')}"
              for i, image in enumerate(names)]
    for index in range(services):
        engine.client.services.create(pinned[index % references], name=f"svc-{index}",
                                      labels={"updater.enable": "true"})
    deadline = time.monotonic() + CONVERGE_SECONDS
    while time.monotonic() < deadline:
        running = [t for t in engine.client.api.tasks(filters={"desired-state": "running"})
                   if t["Status"]["State"] == "running"]
        if len(running) >= services:
            return
        time.sleep(1)
    raise RuntimeError(f"the {services} services did not all run within {CONVERGE_SECONDS}s")


def _pass(command: str, engine: Dockerd, root: Path,
          registry: Registry) -> tuple[float, Counter[str]]:
    env = {**os.environ, "DOCKER_HOST": engine.host, "HOME": str(root),
           "DOCKER_CONFIG": str(root / ".docker"), "UPDATER_LOG_LEVEL": "warning",
           "UPDATER_STATE_DIR": str(root / "state")}
    mark = registry.mark()
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "updater", command, "--json"], env=env,
                            capture_output=True, text=True, check=False, timeout=1800)
    elapsed = time.perf_counter() - started
    if result.returncode != 0 or "up-to-date" not in result.stdout:
        raise RuntimeError(f"updater {command} failed: {result.stdout[-2000:]} "
                           f"{result.stderr[-2000:]}")
    served = Counter(f"{r.method} {'manifest' if '/manifests/' in r.uri else r.uri}"
                     for r in registry.requests(mark, agent="updater/"))
    return elapsed, served


def measure(services: int, references: int, rtt: float) -> list[dict[str, str]]:
    root = Path(tempfile.mkdtemp(prefix="updater-bench.", dir="/var/tmp"))
    engine = Dockerd(root / "engine").start()
    registry = Registry(root / "registry").start()
    proxy = LatencyProxy(free_port(), registry.port).start()
    rows = []
    try:
        _services(engine, f"127.0.0.1:{proxy.listen_port}", services, references)
        proxy.rtt = rtt
        for command in ("check", "update"):
            runs = [_pass(command, engine, root, registry) for _ in range(REPEATS)]
            best = min(runs, key=lambda run: run[0])
            rows.append({"command": command, "S/M": f"{services}/{references}",
                         "RTT ms": f"{rtt * 1000:.0f}",
                         "pass s (best of 3)": f"{best[0]:.2f}",
                         "pass s (worst)": f"{max(run[0] for run in runs):.2f}",
                         "manifest HEAD": str(best[1]["HEAD manifest"]),
                         "manifest GET": str(best[1]["GET manifest"]),
                         "other requests": str(sum(best[1].values()) - best[1]["HEAD manifest"]
                                               - best[1]["GET manifest"])})
    finally:
        proxy.stop()
        registry.stop()
        engine.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("workloads", nargs="*", default=["20/4"])
    parser.add_argument("--rtt", type=float, default=0.05, help="round trip in seconds")
    arguments = parser.parse_args(argv)
    rows = []
    for spec in arguments.workloads:
        services, references = (int(x) for x in spec.split("/"))
        rows += measure(services, references, arguments.rtt)
    headers = list(rows[0])
    print("| " + " | ".join(headers) + " |")
    print("|" + " --- |" * len(headers))
    for row in rows:
        print("| " + " | ".join(row[h] for h in headers) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
