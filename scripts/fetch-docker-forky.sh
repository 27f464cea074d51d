#!/usr/bin/env bash
# Prints the path of a root holding Debian forky's docker.io (dockerd 28.5, Engine API 1.51),
# containerd (2.1) and docker-compose (Compose v2, 2.40), fetched once through apt from the
# machine's own Debian mirror and unpacked with `dpkg -x` into one folder. dockerd runs on
# Debian 12 with Debian 12's runc; with the root's usr/bin first in its PATH it starts forky's
# containerd as its managed containerd (harness/dockerd.py). Compose is
# <root>/usr/libexec/docker/cli-plugins/docker-compose, a standalone binary.
set -euo pipefail
cache=/var/cache/updater-test/docker-forky
root=$cache/root
dockerd=$root/usr/sbin/dockerd
containerd=$root/usr/bin/containerd
compose=$root/usr/libexec/docker/cli-plugins/docker-compose
packages=(docker.io docker-compose containerd)
if [ ! -x "$dockerd" ] || [ ! -x "$containerd" ] || [ ! -x "$compose" ]; then
  mkdir -p "$cache/lists/partial" "$cache/debs"
  cd "$cache"
  uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  uri=${uri:-$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)}
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri forky main" > sources.list
  options=(-oDir::Etc::SourceList="$PWD/sources.list" -oDir::Etc::SourceParts=/dev/null
           -oDir::State::Lists="$PWD/lists")
  apt-get "${options[@]}" update -qq >&2
  rm -f debs/*.deb
  (cd debs && apt-get "${options[@]}" download "${packages[@]}" >&2)
  # Unpack into a fresh folder and swap it in whole, so a run cut short never leaves half a root.
  rm -rf root.new
  for deb in debs/*.deb; do
    dpkg -x "$deb" root.new
  done
  rm -rf root && mv root.new root
fi
echo "$root"
