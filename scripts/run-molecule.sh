#!/usr/bin/env bash
# Run Molecule scenarios, keep going after a failure so one run reports every scenario, and
# print a wall-time table.
# MOLECULE_JOBS (default 1) scenarios run at once: the first one given runs alone (the platform
# smoke test: if test hosts cannot start, nothing else is tried), the others share the slots in
# the order given (longest first, so the slots finish together). With more than one slot each
# scenario's output goes to a log that is printed whole when the scenario ends.
set -uo pipefail
[ $# -gt 0 ] || { echo "ERROR: no scenario given" >&2; exit 1; }
jobs=${MOLECULE_JOBS:-1}
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "ERROR: MOLECULE_JOBS must be a positive number (got '$jobs')" >&2; exit 1; }
logs=$(mktemp -d /tmp/molecule-logs.XXXXXX)
trap 'rm -rf "$logs"' EXIT
overall=$(date +%s)

run() {  # run SCENARIO: molecule test, then one result line in $logs/SCENARIO.result
  local s=$1 start status
  start=$(date +%s)
  if molecule test -s "$s"; then status=passed; else status=FAILED; fi
  printf '%-16s %-7s %5ds\n' "$s" "$status" "$(( $(date +%s) - start ))" > "$logs/$s.result"
}

finish() {  # print the log of every scenario that ended and has not been printed yet
  local f s
  for f in "$logs"/*.result; do
    [ -e "$f" ] || continue
    s=$(basename "$f" .result)
    [ -e "$logs/$s.printed" ] && continue
    if [ -e "$logs/$s.log" ]; then
      echo "==> molecule test -s $s ($(awk '{print $2}' "$f"))"
      cat "$logs/$s.log"
    fi
    touch "$logs/$s.printed"
  done
}

first=$1; shift
echo "==> molecule test -s $first"
run "$first"
touch "$logs/$first.printed"
for s in "$@"; do
  if [ "$jobs" -eq 1 ]; then
    echo "==> molecule test -s $s"
    run "$s"
    touch "$logs/$s.printed"
    continue
  fi
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n
    finish
  done
  echo "==> molecule test -s $s started (output when it ends)"
  run "$s" > "$logs/$s.log" 2>&1 &
done
wait
finish

echo
echo "Molecule scenario      result   wall"
failed=0
for s in "$first" "$@"; do
  if [ -e "$logs/$s.result" ]; then cat "$logs/$s.result"; else printf '%-16s %-7s\n' "$s" "MISSING"; failed=1; fi
  grep -q FAILED "$logs/$s.result" 2>/dev/null && failed=1
done
echo "Molecule wall time: $(( $(date +%s) - overall ))s with $jobs slot(s)"
exit "$failed"
