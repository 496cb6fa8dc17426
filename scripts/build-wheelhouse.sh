#!/usr/bin/env bash
# Collect the wheels the test hosts need for the MLflow virtualenv (about 150 MB) once, into
# a cache outside the repository, so no scenario downloads them again. The test images are
# Debian 12 with CPython 3.11, the controller's own version, so `pip wheel` here fits.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
list="$here/molecule/_shared/wheelhouse.txt"
cache=${MLFLOW_STACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlflow-stack}
pyver=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
out="$cache/wheelhouse/py$pyver"
stamp="$out/.requirements.sha256"
want=$(sha256sum "$list" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "==> wheelhouse $out up to date"
else
  echo "==> filling wheelhouse $out"
  mkdir -p "$out"
  pip wheel -q --disable-pip-version-check -w "$out" -r "$list"
  echo "$want" > "$stamp"
fi

# The previous release (the mlflow_server scenario's upgrade from N-1): its own three wheels only.
previous="$here/molecule/_shared/wheelhouse-previous.txt"
previous_stamp="$out/.previous.sha256"
want=$(cat "$list" "$previous" | sha256sum | cut -d' ' -f1)
if [ -f "$previous_stamp" ] && [ "$(cat "$previous_stamp")" = "$want" ]; then
  echo "==> previous MLflow release in $out up to date"
else
  echo "==> adding the previous MLflow release to $out"
  pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$out" -r "$previous"
  # Proves the wheelhouse alone installs it next to the same pinned packages (what the test host does).
  pip install -q --disable-pip-version-check --dry-run --ignore-installed --no-index --find-links "$out" \
    -r "$previous" $(grep -v -e '^#' -e '^mlflow==' "$list")
  echo "$want" > "$previous_stamp"
fi
ln -sfn "$out" "$cache/wheelhouse/current"
