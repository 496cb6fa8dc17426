#!/usr/bin/env bash
# Run Molecule scenarios one after another (two cores: their sum is the CI budget), keep
# going after a failure so one run reports every scenario, and print a wall-time table.
set -uo pipefail
[ $# -gt 0 ] || { echo "ERROR: no scenario given" >&2; exit 1; }
results=()
failed=0
for s in "$@"; do
  echo "==> molecule test -s $s"
  start=$(date +%s)
  if molecule test -s "$s"; then status=passed; else status=FAILED; failed=1; fi
  results+=("$(printf '%-16s %-7s %5ds' "$s" "$status" "$(( $(date +%s) - start ))")")
done
echo
echo "Molecule scenario      result   wall"
printf '%s\n' "${results[@]}"
exit "$failed"
