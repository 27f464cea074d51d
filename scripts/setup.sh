# Sourced by the other scripts: installs what updater, its tests and its demo need on Debian.
# Debian packages: the engine (dockerd 20.10 with containerd and runc), the CNCF registry,
# busybox for test images, Prometheus (the metrics scrape test), debootstrap (the local base of
# the updater's own image in the tests); then the venv in .venv.
set -euo pipefail

PACKAGES=(docker.io docker-registry busybox-static iproute2 ca-certificates prometheus python3 python3-venv
          chromium chromium-driver
          python3-pip debootstrap)

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "updater: this script starts dockerd and installs Debian packages; run it as root" >&2
    exit 2
  fi
}

install_packages() {
  local missing=()
  for package in "${PACKAGES[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

make_venv() {
  if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
  fi
  .venv/bin/pip install -q --disable-pip-version-check -e ".[test]"
}
