#!/usr/bin/env bash
# Build the pinned MinIO server and mc from source through the Go module proxy.
# dl.min.io answers 410 for community binaries and the repositories are archived, so a
# source build is the way to get them. Pinned by commit (MinIO's RELEASE.* tags are not
# semver and resolve to pseudo-versions). Output goes to a cache outside the repository,
# reused when present, with a sha256 recorded next to each binary.
# Prints the cache directory on its last line.
set -euo pipefail

# The final commit of the archived minio/minio repository (2026-02-12); it contains the
# RELEASE.2025-10-15T17-29-55Z security fixes. The proxy here serves this pseudo-version.
MINIO_VERSION=${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}
MC_VERSION=${MC_VERSION:-v0.0.0-20250313080218-cf909e1063a9}

cache=${MLFLOW_STACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlflow-stack}
out="$cache/minio/${MINIO_VERSION}_${MC_VERSION}"
mkdir -p "$out"

build() {
  local name=$1 module=$2 version=$3
  if [ -x "$out/$name" ] && [ -f "$out/$name.sha256" ] \
     && (cd "$out" && sha256sum -c --quiet "$name.sha256" 2>/dev/null); then
    echo "==> $name $version present in $out, reusing" >&2
    return
  fi
  command -v go >/dev/null || { echo "ERROR: go is needed to build $name (install golang)" >&2; exit 1; }
  echo "==> building $name $version from source (several minutes the first time)" >&2
  local gobin
  gobin=$(mktemp -d)
  CGO_ENABLED=0 GOBIN="$gobin" GOFLAGS=-trimpath \
    go install -ldflags "-s -w" "$module@$version" >&2
  mv "$gobin/$name" "$out/$name"
  rmdir "$gobin"
  (cd "$out" && sha256sum "$name" > "$name.sha256")
  echo "==> built $name: $(cut -d' ' -f1 "$out/$name.sha256")" >&2
}

build minio github.com/minio/minio "$MINIO_VERSION"
build mc github.com/minio/mc "$MC_VERSION"
ln -sfn "$out" "$cache/minio/current"
echo "$cache/minio/current"
