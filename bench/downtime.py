"""Downtime of one standalone update next to a bare `docker stop` + `docker start`.

A busybox httpd on the host network (loopback) is probed every 5 ms; downtime is the longest
gap between two answered probes while the operation runs. The update is the real
`updater update NAME` after a push; the bare restart is the same container stopped and started
through the engine API. Both stop gracefully (the server exits on SIGTERM at once).

    .venv/bin/python -m bench.downtime [RUNS]
"""

from __future__ import annotations

import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from harness import images
from harness.dockerd import Dockerd
from harness.procs import free_port
from harness.registry import Registry

PROBE_EVERY = 0.005


def _server_cmd(port: int) -> str:
    script = (f"httpd -f -p 127.0.0.1:{port} -h / & pid=$!; "
              "trap 'kill $pid; exit 0' TERM; wait")
    return f'["sh", "-c", "{script}"]'


def _outage(port: int, operation: Callable[[], None]) -> float:
    """Longest gap between answered probes while `operation` runs (plus a settle time)."""
    answered: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=0.2) as http:
            while not stop.is_set():
                try:
                    if http.get(f"http://127.0.0.1:{port}/version").status_code == 200:
                        answered.append(time.monotonic())
                except httpx.HTTPError:
                    pass
                time.sleep(PROBE_EVERY)

    prober = threading.Thread(target=probe)
    prober.start()
    time.sleep(0.3)
    operation()
    deadline = time.monotonic() + 10
    mark = time.monotonic()
    while time.monotonic() < deadline and not any(t > mark for t in answered):
        time.sleep(0.01)
    time.sleep(0.2)
    stop.set()
    prober.join()
    return max(b - a for a, b in itertools.pairwise(answered))


def main(argv: list[str]) -> int:
    runs = int(argv[0]) if argv else 5
    root = Path(tempfile.mkdtemp(prefix="updater-downtime.", dir="/var/tmp"))
    engine = Dockerd(root / "engine").start()
    registry = Registry(root / "registry").start()
    port = free_port()
    image = f"{registry.host}/web/downtime:latest"
    env = {**os.environ, "DOCKER_HOST": engine.host, "HOME": str(root),
           "DOCKER_CONFIG": str(root / ".docker"), "UPDATER_STATE_DIR": str(root / "state"),
           "UPDATER_LOG_LEVEL": "warning"}
    bare, updates = [], []
    try:
        images.release(engine.client, image, "0", cmd=_server_cmd(port))
        engine.client.containers.run(image, name="web", detach=True, network_mode="host",
                                     labels={"updater.enable": "true"})
        time.sleep(1)

        def restart() -> None:
            container = engine.client.containers.get("web")
            container.stop()
            container.start()

        for run in range(runs):
            bare.append(_outage(port, restart))
            images.release(engine.client, image, str(run + 1), cmd=_server_cmd(port),
                           keep_local=False)
            updates.append(_outage(port, lambda: subprocess.run(
                [sys.executable, "-m", "updater", "update", "web"], env=env, check=True,
                stdout=subprocess.DEVNULL, timeout=300)))
    finally:
        registry.stop()
        engine.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)
    bare_median, update_median = statistics.median(bare), statistics.median(updates)
    print("| operation | runs | median downtime s | min | max |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| bare docker stop + start | {runs} | {bare_median:.3f} | {min(bare):.3f} | "
          f"{max(bare):.3f} |")
    print(f"| updater update | {runs} | {update_median:.3f} | {min(updates):.3f} | "
          f"{max(updates):.3f} |")
    print(f"\nratio updater / bare: {update_median / bare_median:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
