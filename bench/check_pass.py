"""Benchmark of one `updater check` pass: wall time, registry requests, peak memory.

Starts its own dockerd and registry (the test harness), runs N containers on M distinct image
references, then times `python -m updater check --json` as a user would run it, reading the
registry's own access log for the requests it served. Run as root from the repository:

    .venv/bin/python -m bench.check_pass            # 20/4 and 200/50
    .venv/bin/python -m bench.check_pass 1000/200   # any N/M
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.pass_time import workload
from harness.dockerd import Dockerd
from harness.registry import Registry

PASSES = 3


def _run_check(engine: Dockerd, home: Path) -> tuple[float, int]:
    """One `updater check` pass: seconds and peak RSS in KiB of the process."""
    environment = {**os.environ, "DOCKER_HOST": engine.host, "HOME": str(home),
                   "DOCKER_CONFIG": str(home / ".docker"), "UPDATER_LOG_LEVEL": "warning"}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "bench.rss", sys.executable, "-m", "updater",
                             "check", "--json"], env=environment, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, check=False, timeout=600)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"updater check failed: {result.stderr}")
    rss = int(result.stderr.strip().splitlines()[-1].split()[-1])
    return elapsed, rss


def measure(containers: int, references: int) -> dict[str, str]:
    root = Path(tempfile.mkdtemp(prefix="updater-bench.", dir="/var/tmp"))
    engine = Dockerd(root / "engine").start()
    registry = Registry(root / "registry").start()
    try:
        workload(engine, registry.host, containers, references)
        results = []
        for _ in range(PASSES):
            mark = registry.mark()
            seconds, rss = _run_check(engine, root)
            served = Counter(f"{r.method} {'manifest' if '/manifests/' in r.uri else r.uri}"
                             for r in registry.requests(mark, agent="updater/"))
            results.append((seconds, rss, served))
    finally:
        registry.stop()
        engine.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)
    best = min(results, key=lambda r: r[0])
    return {"N/M": f"{containers}/{references}",
            "pass s (best of 3)": f"{best[0]:.2f}",
            "pass s (worst)": f"{max(r[0] for r in results):.2f}",
            "manifest HEAD": str(best[2]["HEAD manifest"]),
            "manifest GET": str(best[2]["GET manifest"]),
            "other requests": str(sum(best[2].values()) - best[2]["HEAD manifest"]
                                  - best[2]["GET manifest"]),
            "peak RSS MiB": f"{max(r[1] for r in results) / 1024:.1f}"}


def main(argv: list[str]) -> int:
    workloads = [tuple(int(x) for x in arg.split("/")) for arg in argv] or [(20, 4), (200, 50)]
    rows = [measure(n, m) for n, m in workloads]
    headers = list(rows[0])
    widths = [max(len(h), *(len(r[h]) for r in rows)) for h in headers]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in rows:
        print("  ".join(row[h].ljust(w) for h, w in zip(headers, widths, strict=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
