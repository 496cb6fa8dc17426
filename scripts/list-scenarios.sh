#!/usr/bin/env bash
# Molecule scenarios in the order CI runs them: the platform smoke test first (alone), then the
# longest first, so that the slots of scripts/run-molecule.sh (MOLECULE_JOBS) finish together.
set -euo pipefail
cd "$(dirname "$0")/../molecule"
order=(smoke default mlflow_server postgresql minio_cluster nginx_auth minio)
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
