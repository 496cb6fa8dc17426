#!/usr/bin/env bash
# Make sure a Docker engine answers. Never assume a daemon: when none answers and we are
# root, install Debian's docker.io and start dockerd in the background; otherwise say
# what to install.
set -euo pipefail

if docker info >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "ERROR: no Docker engine answers 'docker info' and we are not root." >&2
  echo "Fix: install Docker (Debian: 'sudo apt-get install docker.io'), start it" >&2
  echo "('sudo systemctl start docker'), and add yourself to the docker group." >&2
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
  echo "==> installing Debian's docker.io"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
  echo "==> starting dockerd in the background (log: /var/log/dockerd.log)"
  nohup dockerd >/var/log/dockerd.log 2>&1 &
fi

for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    echo "==> Docker engine is up"
    exit 0
  fi
  sleep 1
done
echo "ERROR: dockerd did not answer within 60 s; see /var/log/dockerd.log" >&2
tail -n 20 /var/log/dockerd.log >&2 || true
exit 1
