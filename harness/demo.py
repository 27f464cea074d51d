"""The demo: a throwaway engine and registry, a labelled container on v1, then an "upstream
release" v2 pushed under the same tag; the real `updater check` sees it and `updater run`
replaces the container. Everything it starts is stopped and removed at the end."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import images
from harness.dockerd import Dockerd
from harness.procs import port_open
from harness.registry import Registry


def _updater(args: list[str], engine: Dockerd, home: Path) -> None:
    environment = {**os.environ, "DOCKER_HOST": engine.host, "HOME": str(home),
                   "DOCKER_CONFIG": str(home / ".docker"),
                   "UPDATER_STATE_DIR": str(home / "state")}
    command = ["updater", *args]
    print(f"\n$ DOCKER_HOST={engine.host} {' '.join(command)}", flush=True)
    subprocess.run([sys.executable, "-m", "updater", *args], env=environment, check=True,
                   timeout=120)


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="updater-demo.", dir="/var/tmp"))
    print(f"== starting a throwaway dockerd and registry under {root}", flush=True)
    engine = Dockerd(root / "engine").start()
    registry = Registry(root / "registry", port=None if port_open(5000) else 5000).start()
    image = f"{registry.host}/demo/app:latest"
    try:
        print(f"== dockerd {engine.version()}; pushing {image} (VERSION=1) and running it as "
              "'demo' with the label updater.enable=true", flush=True)
        images.release(engine.client, image, "1")
        engine.client.containers.run(image, name="demo", detach=True,
                                     labels={"updater.enable": "true"})
        _updater(["check"], engine, root)
        print(f"\n== upstream releases VERSION=2 under the same tag {image}", flush=True)
        images.release(engine.client, image, "2", keep_local=False)
        _updater(["check"], engine, root)
        print("\n== the main job, one pass: updater run --run-once", flush=True)
        _updater(["run", "--run-once"], engine, root)
        demo = engine.client.api.inspect_container("demo")
        version = engine.client.api.exec_start(
            engine.client.api.exec_create("demo", ["cat", "/version"])["Id"]).decode().strip()
        print(f"\n== 'demo' is {demo['State']['Status']} on image {demo['Image'][7:19]}, "
              f"VERSION={version}", flush=True)
        _updater(["check"], engine, root)
    finally:
        print("\n== stopping the demo engine and registry", flush=True)
        registry.stop()
        engine.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
