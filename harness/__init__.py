"""The project's test harness: real dockerd engines, real registries, a token server and
busybox images, started and stopped by PID. Tests (via fixtures), the demo and the benchmarks
use it; nothing here is part of the installed product.
"""

from __future__ import annotations

import os
from pathlib import Path


def run_root() -> Path:
    """Where this run keeps engines and registries: `UT_ROOT`, else a folder per process; a
    subfolder per pytest-xdist worker, each worker starting engines and registries of its own."""
    root = Path(os.environ.get("UT_ROOT") or f"/var/tmp/updater-test/{os.getpid()}")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        root = root / worker
    root.mkdir(parents=True, exist_ok=True)
    return root
