#!/usr/bin/env bash
# The demo, from a fresh Debian 12 machine (as root): installs what it needs, starts a throwaway
# dockerd and registry, runs a labelled container, pushes a new version under its tag and shows
# `updater check` seeing it; then stops and removes everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
need_root
install_packages
make_venv
exec .venv/bin/python -m harness.demo
