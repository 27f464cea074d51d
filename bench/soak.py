"""Memory of `updater run` over many passes: RSS after the first pass and after 1,000; or, with
`--minutes M`, a soak at a 1 s interval for M minutes: RSS every 5 minutes, passes, errors.

Starts its own dockerd and registry (20 containers on 4 references, nothing to update), runs
`updater run` with the HTTP API on loopback, and reads the process's VmRSS from /proc at pass
counts read from /v1/status; errors are the log lines at level ERROR or above.

    .venv/bin/python -m bench.soak [PASSES]
    .venv/bin/python -m bench.soak --minutes 30
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


def rss_kib(pid: int) -> int:
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
    minutes = float(argv[1]) if argv[:1] == ["--minutes"] else None
    target = int(argv[0]) if argv and minutes is None else 1000
    root = Path(tempfile.mkdtemp(prefix="updater-soak.", dir="/var/tmp"))
    engine = Dockerd(root / "engine").start()
    registry = Registry(root / "registry").start()
    port = free_port()
    config = root / "run.yml"
    config.write_text(yaml.safe_dump({"interval": "1s" if minutes else "0s",
                                      "state_dir": str(root / "state"),
                                      "log_level": "warning",
                                      "http_api": {"listen": f"127.0.0.1:{port}",
                                                   "token": TOKEN}}))
    readings: list[tuple[int, int, float]] = []
    try:
        workload(engine, registry.host, 20, 4)
        env = {**os.environ, "DOCKER_HOST": engine.host, "UPDATER_CONFIG": str(config),
               "HOME": str(root), "DOCKER_CONFIG": str(root / ".docker")}
        log = (root / "daemon.log").open("w")
        daemon = subprocess.Popen([sys.executable, "-m", "updater", "run"], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
        started = time.monotonic()
        base = f"http://127.0.0.1:{port}"
        if minutes is not None:
            return _soak(daemon, base, minutes, root / "daemon.log", started)
        pending = [c for c in CHECKPOINTS if c <= target]
        while pending and time.monotonic() - started < TIME_LIMIT:
            done = _passes(base)
            if done >= pending[0]:
                readings.append((done, rss_kib(daemon.pid), time.monotonic() - started))
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


def _soak(daemon: subprocess.Popen[bytes], base: str, minutes: float, log: Path,
          started: float) -> int:
    while _passes(base) < 1:
        time.sleep(0.1)
    readings = [(_passes(base), rss_kib(daemon.pid), time.monotonic() - started)]
    end = started + minutes * 60
    while time.monotonic() < end and daemon.poll() is None:
        time.sleep(min(300.0, max(0.0, end - time.monotonic())))
        readings.append((_passes(base), rss_kib(daemon.pid), time.monotonic() - started))
    alive = daemon.poll() is None
    daemon.send_signal(signal.SIGTERM)
    code = daemon.wait(timeout=60)
    errors = [line for line in log.read_text().splitlines()
              if " ERROR " in line or " CRITICAL " in line or "Traceback" in line]
    print(f"soak: {minutes:g} min at a 1 s interval over 20 containers; alive to the end: "
          f"{alive}; exit {code}; errors: {len(errors)}")
    print("| minute | passes | RSS MiB |")
    print("| --- | --- | --- |")
    for passes, rss, elapsed in readings:
        print(f"| {elapsed / 60:.0f} | {passes} | {rss / 1024:.1f} |")
    for line in errors[:10]:
        print(line)
    return 0 if alive and not errors else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
