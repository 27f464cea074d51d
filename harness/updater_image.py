"""The updater's own image, built by the project's Dockerfile from a LOCAL base (nothing can be
pulled here): a Debian rootfs made by `debootstrap --variant=minbase` with python3 from the
machine's own Debian mirror, imported with `docker import`. The rootfs tarball is built once
and cached; the project and its dependencies go in as wheels, so the build is offline.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import docker
import docker.errors

REPOSITORY = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("UT_CACHE", "/var/cache/updater-test"))
SUITE = "bookworm"
BASE_TAG = f"updater-test-base:{SUITE}-python3"
BASE_PACKAGES = ("python3", "python3-venv")
_TRIM = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
         "usr/share/info", "usr/share/locale")


def mirror() -> str:
    """The Debian mirror apt on this machine uses (deb822 or one-line sources)."""
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if deb822.exists():
        found = re.search(r"^URIs:\s*(\S+)", deb822.read_text(), re.MULTILINE)
        if found:
            return found.group(1)
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        found = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+" + SUITE, legacy.read_text(),
                          re.MULTILINE)
        if found:
            return found.group(1)
    return "http://deb.debian.org/debian"


def base_tarball() -> Path:
    """The rootfs tarball, made with debootstrap on first use and kept in the cache."""
    tarball = CACHE / "base" / f"{SUITE}-python3.tar"
    if tarball.exists():
        return tarball
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap not found: apt-get install debootstrap")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    # Parallel test workers: one makes it, the others wait for it and use it.
    with open(tarball.parent / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tarball.exists():
            _debootstrap(tarball)
    return tarball


def _debootstrap(tarball: Path) -> None:
    with tempfile.TemporaryDirectory(dir=tarball.parent) as work:
        rootfs = Path(work) / "rootfs"
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES), SUITE,
             str(rootfs), mirror()], capture_output=True, text=True, timeout=900, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"debootstrap failed: {result.stdout[-1500:]}{result.stderr}")
        for trimmed in _TRIM:
            for entry in (rootfs / trimmed).glob("*"):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        partial = Path(work) / "base.tar"
        subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."],
                       check=True, timeout=300)
        partial.replace(tarball)


def base_image(client: docker.DockerClient) -> str:
    """The local base image in this engine (imported from the cached rootfs if missing)."""
    try:
        client.images.get(BASE_TAG)
        return BASE_TAG
    except docker.errors.ImageNotFound:
        pass
    repository, _, tag = BASE_TAG.partition(":")
    client.api.import_image_from_file(str(base_tarball()), repository=repository, tag=tag,
                                      changes=['CMD ["python3"]'])
    return BASE_TAG


def wheels(directory: Path) -> Path:
    """The project and every dependency as wheels (pip's cache makes repeats cheap)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
                    "-w", str(directory), str(REPOSITORY)], check=True, timeout=600,
                   capture_output=True)
    return directory


def context(directory: Path) -> Path:
    """A build context as a user's clone gives it, plus wheels/ for an offline install."""
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        shutil.copy2(REPOSITORY / name, directory / name)
    shutil.copytree(REPOSITORY / "updater", directory / "updater",
                    ignore=shutil.ignore_patterns("__pycache__"))
    wheels(directory / "wheels")
    return directory


def build(client: docker.DockerClient, tag: str, build_context: Path,
          version: str = "test") -> str:
    """Build the updater image from `build_context` on the local base; returns its ID."""
    base = base_image(client)
    image, _ = client.images.build(path=str(build_context), tag=tag, rm=True, forcerm=True,
                                   buildargs={"BASE": base, "VERSION": version},
                                   labels={"harness.nonce": uuid.uuid4().hex})
    return str(image.id)
