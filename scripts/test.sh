#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine (as root): installs what it needs, lints,
# type-checks, runs every test against a real dockerd 20.10 (API 1.41), then the engine-matrix
# tests against dockerd 28.5 (API 1.51) with the containerd image store (the default of fresh
# Docker 29 installs), from Debian forky's docker.io, containerd 2.1 and docker-compose packages.
# Compose v2 from those packages also runs the repository's compose.yml (test_compose.py).
# Engines and registries are started by the tests on their own sockets, bridges and loopback
# ports, and stopped at the end, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
need_root
install_packages
make_venv

FORKY=$(bash scripts/fetch-docker-forky.sh)
export UT_COMPOSE=$FORKY/usr/libexec/docker/cli-plugins/docker-compose

export UT_ROOT
UT_ROOT=$(mktemp -d /var/tmp/updater-test.XXXXXX)
cleanup() {
  # Stop only what this run started: the PIDs in the pidfiles under its own root.
  local pidfile
  while IFS= read -r pidfile; do
    kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
  done < <(find "$UT_ROOT" -name '*.pid' 2>/dev/null)
  sleep 1
  # Each engine's own bridge (harness/dockerd.py) is named in a file `bridge` in its folder.
  find "$UT_ROOT" -name bridge -type f -exec cat {} + 2>/dev/null |
    xargs -r -n1 ip link del 2>/dev/null || true
  # Network namespaces of test swarms are named ut<pid>s<n>hub / ut<pid>s<n>n<i> (harness/swarm.py).
  ip netns list 2>/dev/null | awk '/^ut[0-9]+s[0-9]+(hub|n[0-9]+)/ {print $1}' |
    xargs -r -n1 ip netns del 2>/dev/null || true
  grep -o " $UT_ROOT[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$UT_ROOT"
}
trap cleanup EXIT

echo "== ruff"
.venv/bin/ruff check .
echo "== mypy --strict"
.venv/bin/mypy
echo "== import contracts (the layering in pyproject.toml)"
.venv/bin/lint-imports

# pytest-xdist workers, a test file each at a time (a file's module fixtures, such as its swarm,
# start once); each worker starts engines and registries of its own (harness.run_root). The
# tests mostly wait on engines, so four workers keep two cores busy: about 2.5 times faster.
WORKERS=(-n "${UT_WORKERS:-4}" --dist loadfile)

# pytest exits 5 when it ran no test: with `set -e` that fails the run, as it should.
echo "== the whole suite on dockerd $(dockerd --version | cut -d' ' -f3 | tr -d ,)"
.venv/bin/pytest "${WORKERS[@]}" "$@"
echo "== engine matrix on dockerd $("$FORKY/usr/sbin/dockerd" --version | cut -d' ' -f3 | tr -d ,)" \
     "with the containerd image store"
UT_DOCKER_ROOT="$FORKY" UT_CONTAINERD_STORE=1 .venv/bin/pytest -m matrix "${WORKERS[@]}" "$@"
