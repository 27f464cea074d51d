"""Memory of `updater run` over many passes: RSS after the first pass and after 1,000.

Starts its own dockerd and registry (20 containers on 4 references, nothing to update), runs
`updater run` with a zero interval and the HTTP API on loopback, and reads the process's
VmRSS from /proc at pass counts read from /v1/status.

    .venv/bin/python -m bench.soak [PASSES]
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from bench.pass_time import workload
from harness.dockerd import Dockerd
from harness.procs import free_port
from harness.registry import Registry

TOKEN = "soak-token-0123456789"
CHECKPOINTS = (1, 10, 100, 250, 500, 750, 1000)
TIME_LIMIT = 1800.0


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _passes(base: str) -> int:
    try:
        status = httpx.get(f"{base}/v1/status", headers={"Authorization": f"Bearer {TOKEN}"},
                           timeout=5).json()
        return int(status["passes"])
    except (httpx.HTTPError, ValueError, KeyError):
        return 0


def main(argv: list[str]) -> int:
    target = int(argv[0]) if argv else 1000
    root = Path(tempfile.mkdtemp(prefix="updater-soak.", dir="/var/tmp"))
    engine = Dockerd(root / "engine").start()
    registry = Registry(root / "registry").start()
    port = free_port()
    config = root / "run.yml"
    config.write_text(yaml.safe_dump({"interval": "0s", "state_dir": str(root / "state"),
                                      "log_level": "warning",
                                      "http_api": {"listen": f"127.0.0.1:{port}",
                                                   "token": TOKEN}}))
    readings: list[tuple[int, int, float]] = []
    try:
        workload(engine, registry.host, 20, 4)
        env = {**os.environ, "DOCKER_HOST": engine.host, "UPDATER_CONFIG": str(config),
               "HOME": str(root), "DOCKER_CONFIG": str(root / ".docker")}
        daemon = subprocess.Popen([sys.executable, "-m", "updater", "run"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = time.monotonic()
        base = f"http://127.0.0.1:{port}"
        pending = [c for c in CHECKPOINTS if c <= target]
        while pending and time.monotonic() - started < TIME_LIMIT:
            done = _passes(base)
            if done >= pending[0]:
                readings.append((done, _rss_kib(daemon.pid), time.monotonic() - started))
                pending.pop(0)
            time.sleep(0.05)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    finally:
        registry.stop()
        engine.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)
    print("| passes | RSS MiB | elapsed s |")
    print("| --- | --- | --- |")
    for passes, rss, elapsed in readings:
        print(f"| {passes} | {rss / 1024:.1f} | {elapsed:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
