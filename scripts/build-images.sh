#!/usr/bin/env bash
# Build the Molecule test-host images locally (no registry is reachable): debootstrap a
# Debian with systemd as PID 1, add the controller's CA bundle to its trust store (HTTPS
# here may pass through a proxy only that bundle trusts), and `docker import` it under a
# tag carrying a hash of the recipe. An image whose tag already exists is reused.
# Usage: build-images.sh [bookworm] [trixie]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
packages="systemd,systemd-sysv,dbus,libpam-systemd,python3,python3-apt,sudo,ca-certificates,procps,iproute2"
host_bundle=/etc/ssl/certs/ca-certificates.crt
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(bookworm trixie)

recipe_hash() {
  { cat "$0"; echo "$1" "$packages"; [ -f "$host_bundle" ] && cat "$host_bundle"; } | sha256sum | cut -c1-12
}

image_tag() {
  echo "mlflow-stack-test/debian-$1:$(recipe_hash "$1")"
}

build_one() {
  local suite=$1 tag rootfs
  tag=$(image_tag "$suite")
  if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "==> image $tag present, reusing"
  else
    command -v debootstrap >/dev/null || {
      echo "==> installing debootstrap"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
    rootfs=$(mktemp -d /var/tmp/mlflow-stack-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' RETURN
    echo "==> debootstrap $suite (about a minute)"
    debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" \
      http://deb.debian.org/debian >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; exit 1; }
    rm -f "$rootfs.log"
    if [ -f "$host_bundle" ]; then
      install -m 0644 "$host_bundle" "$rootfs/usr/local/share/ca-certificates/controller-bundle.crt"
      chroot "$rootfs" update-ca-certificates >/dev/null 2>&1 || true
    fi
    # A container has no getty to start, and apt caches only bloat the image.
    chroot "$rootfs" systemctl mask getty.target console-getty.service >/dev/null 2>&1 || true
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/*
    # Empty package lists must look stale, or `apt: cache_valid_time` skips the update on a
    # fresh host and then finds no packages.
    touch -d '2000-01-01' "$rootfs"/var/lib/apt/lists
    rm -f "$rootfs"/var/lib/apt/periodic/update-success-stamp
    tar -C "$rootfs" -c . | docker import \
      --change 'CMD ["/lib/systemd/systemd"]' --change 'ENV container=docker' \
      - "$tag" >/dev/null
    echo "==> built $tag"
  fi
  # A stable local alias so Molecule configs need no hash.
  docker tag "$tag" "mlflow-stack-test/debian-$suite:latest"
}

for s in "${suites[@]}"; do build_one "$s"; done
