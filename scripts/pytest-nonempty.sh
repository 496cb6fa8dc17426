#!/usr/bin/env bash
# Run pytest and refuse to pass when it collected nothing: exit code 5 ("no tests ran")
# must never look like success.
set -uo pipefail
pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "ERROR: pytest collected no tests in: $*" >&2
  exit 1
fi
exit "$rc"
