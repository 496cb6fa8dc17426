#!/usr/bin/env bash
# Molecule scenarios in the order CI runs them: the platform smoke test first, roles next,
# the full stack last.
set -euo pipefail
cd "$(dirname "$0")/../molecule"
order=(smoke postgresql minio minio_cluster nginx_auth mlflow_server default)
seen=" "
for s in "${order[@]}"; do
  [ -f "$s/molecule.yml" ] && { printf '%s ' "$s"; seen+="$s "; }
done
for d in */; do
  s=${d%/}
  [ "$s" = demo ] && continue   # the demo's hosts, not a test
  [ -f "$s/molecule.yml" ] && [[ "$seen" != *" $s "* ]] && printf '%s ' "$s"
done
echo
