#!/usr/bin/env bash
# Prints the path of dockerd 26.1 (Engine API 1.45) from Debian 13's docker.io package, fetched
# once through apt from the machine's own Debian mirror and unpacked into a cache folder. Its
# binary runs on Debian 12 with Debian 12's containerd and runc.
set -euo pipefail
cache=/var/cache/updater-test/docker-26
binary=$cache/root/usr/sbin/dockerd
if [ ! -x "$binary" ]; then
  mkdir -p "$cache/lists/partial"
  cd "$cache"
  uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  uri=${uri:-$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)}
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie main" > sources.list
  options=(-oDir::Etc::SourceList="$PWD/sources.list" -oDir::Etc::SourceParts=/dev/null
           -oDir::State::Lists="$PWD/lists")
  apt-get "${options[@]}" update -qq >&2
  rm -f docker.io_*.deb
  apt-get "${options[@]}" download docker.io >&2
  rm -rf root && dpkg -x docker.io_*.deb root
fi
echo "$binary"
