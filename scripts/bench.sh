#!/usr/bin/env bash
# `make bench`: load the deployed stack and the guides' plain `mlflow server` side by side.
#
# Runs against hosts that already exist (the demo's by default; `make demo` first) and deploys
# nothing: on the MLflow host it starts the plain server for the length of the run (a transient
# unit on 127.0.0.1:5001 with MLflow's defaults, on the same database and bucket), runs
# scripts/bench/loadgen.py there with the MLflow virtualenv's Python, stops the plain server and
# prints the table. Traffic stays on that host's loopback.
#
#   make bench                 about 9 minutes: 6 operations x 8/32/64 clients x 3 targets, 4 rounds of 2 s
#   make bench QUICK=1         under a minute: 32 clients, 1 s a cell, one round, a 10 MB artifact
#   BENCH_HOST=default-mlflow BENCH_INVENTORY=<dir> scripts/bench.sh   another stack (the default scenario)
# Results: bench-results/bench-<time>.json (and the table on stdout).
set -euo pipefail
cd "$(dirname "$0")/.."

host=${BENCH_HOST:-demo-mlflow}
inventory=${BENCH_INVENTORY:-inventories/local}
service_user=${BENCH_SERVICE_USER:-mlflow}
out_dir=${BENCH_OUT:-bench-results}
plain_port=5001
if [ "${QUICK:-0}" = 1 ]; then
  args=(--clients 32 --duration 1 --rounds 1 --artifact-mb 10 --artifact-reps 1)
else
  args=(--clients "${BENCH_CLIENTS:-8,32,64}" --duration "${BENCH_DURATION:-2}" --rounds "${BENCH_ROUNDS:-4}")
fi

die() { echo "bench: $*" >&2; exit 1; }
docker inspect -f '{{.State.Running}}' "$host" 2>/dev/null | grep -q true \
  || die "host '$host' is not running: start the demo stack with 'make demo' (or set BENCH_HOST)"
[ -s "$inventory/.secrets/nginx_admin_password" ] || die "no $inventory/.secrets/nginx_admin_password: deploy the stack first"
[ -s "$inventory/.pki/ca.crt" ] || die "no $inventory/.pki/ca.crt: deploy the stack first"

on_host() { docker exec "$host" "$@"; }
home=$(on_host getent passwd "$service_user" | cut -d: -f6)
venv=$home/venvs/current
env_file=$home/.config/mlflow/mlflow.env
unit_file=$home/.config/systemd/user/mlflow.service
on_host test -x "$venv/bin/mlflow" || die "no MLflow virtualenv at $host:$venv"
destination=$(on_host sed -n 's/.*--artifacts-destination \([^ ]*\).*/\1/p' "$unit_file")
[ -n "$destination" ] || die "MLflow on $host does not proxy artifacts (--artifacts-destination missing)"
bucket=$(echo "$destination" | sed -E 's#^s3://([^/]+).*#\1#')
nginx_port=$(on_host sed -n 's/^ *listen \([0-9]*\) ssl.*/\1/p' /etc/nginx/conf.d/nginx_auth.conf | head -1)
direct=$(on_host sed -n 's/.*--host \([^ ]*\).*/\1/p' "$unit_file"):$(on_host sed -n 's/.*--port \([0-9]*\).*/\1/p' "$unit_file")
direct=${direct/0.0.0.0/127.0.0.1}
server_name=$(on_host sed -n 's/^ *server_name \([^ ;]*\).*/\1/p' /etc/nginx/conf.d/nginx_auth.conf | head -1)

work=/var/tmp/mlflow-bench
# The guides' server: `mlflow server` with nothing but the stores, so MLflow's defaults for
# workers, pool and job runner apply. RuntimeMaxSec bounds it even if this script is killed.
cleanup() {
  on_host systemctl stop mlflow-bench-plain.service >/dev/null 2>&1 || true
  on_host rm -rf "$work"
}
trap cleanup EXIT
on_host systemctl stop mlflow-bench-plain.service >/dev/null 2>&1 || true
on_host systemd-run --quiet --collect --unit mlflow-bench-plain --uid "$service_user" \
  --working-directory "$home" -p EnvironmentFile="$env_file" -p RuntimeMaxSec=1800 \
  /usr/bin/env -u MLFLOW_SQLALCHEMYSTORE_POOL_SIZE -u MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW \
  -u MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE -u MLFLOW_SERVER_ENABLE_JOB_EXECUTION -u MLFLOW_STACK_SERVER_THREADS \
  "$venv/bin/mlflow" server --host 127.0.0.1 --port "$plain_port" --artifacts-destination "$destination"
on_host mkdir -p "$work"
docker cp scripts/bench/loadgen.py "$host:$work/loadgen.py" >/dev/null
docker cp "$inventory/.pki/ca.crt" "$host:$work/ca.crt" >/dev/null
docker cp "$inventory/.secrets/nginx_admin_password" "$host:$work/password" >/dev/null
on_host chmod 0600 "$work/password"

echo "==> waiting for the plain mlflow server on $host:127.0.0.1:$plain_port"
for _ in $(seq 1 120); do
  on_host "$venv/bin/python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$plain_port/health', timeout=2)" \
    >/dev/null 2>&1 && break
  sleep 1
done
on_host "$venv/bin/python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$plain_port/health', timeout=2)" \
  >/dev/null 2>&1 || { on_host journalctl -u mlflow-bench-plain --no-pager -n 30 >&2; die "the plain server did not start"; }

stamp=$(date +%Y%m%d-%H%M%S)
echo "==> load on $host: deployed http://$direct, nginx https://$server_name:$nginx_port, plain http://127.0.0.1:$plain_port"
on_host "$venv/bin/python" "$work/loadgen.py" \
  --direct "http://$direct" --nginx "https://$server_name:$nginx_port" --plain "http://127.0.0.1:$plain_port" \
  --ca "$work/ca.crt" --password-file "$work/password" --server-env "$env_file" --bucket "$bucket" \
  --json "$work/result.json" "${args[@]}" ${BENCH_ARGS:-}
mkdir -p "$out_dir"
docker cp "$host:$work/result.json" "$out_dir/bench-$stamp.json" >/dev/null
echo
echo "JSON: $out_dir/bench-$stamp.json"
