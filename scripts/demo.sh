#!/usr/bin/env bash
# `make demo`: on a fresh machine, set everything up, create three local systemd hosts
# (db, s3, mlflow+nginx), deploy the whole stack with the real site.yml and
# inventories/local, then train and register an ElasticNet model through nginx with TLS
# and basic auth. `make demo-destroy` tears it down.
# Usage: demo.sh [up|down] [--csv PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_CONFIG="$PWD/ansible.cfg" ANSIBLE_COLLECTIONS_PATH="$PWD/.collections"
inv=inventories/local
secrets="$inv/.secrets"
action=${1:-up}; shift || true
csv_args=()
[ "${1:-}" = "--csv" ] && csv_args=(--csv "$2")

t0=$(date +%s)
stage() { printf '\n[%4ss] == %s\n' "$(( $(date +%s) - t0 ))" "$*"; }

if [ "$action" = "down" ]; then
  stage "destroying the demo hosts"
  molecule destroy -s demo >/dev/null
  rm -rf "$secrets" "$inv/.pki"
  stage "demo removed"
  exit 0
fi

stage "1/4 set-up (venv, Docker, images, MinIO build, wheelhouse)"
make --no-print-directory setup

stage "2/4 local hosts demo-db, demo-s3, demo-mlflow"
molecule create -s demo >/dev/null

stage "3/4 deploy with: ansible-playbook site.yml -i $inv"
ansible-playbook site.yml -i "$inv"

stage "4/4 train an ElasticNet model through nginx (TLS + basic auth)"
set -a
# shellcheck disable=SC1091
. "$secrets/mlflow-client.env"
set +a
MLFLOW_TRACKING_PASSWORD=$(cat "$secrets/nginx_admin_password")
export MLFLOW_TRACKING_PASSWORD
python examples/train_elasticnet.py "${csv_args[@]}"

stage "done in $(( $(date +%s) - t0 ))s"
cat <<MSG
  MLflow UI and API : $MLFLOW_TRACKING_URI
  credentials       : user '$MLFLOW_TRACKING_USERNAME', password in $secrets/nginx_admin_password
  client env file   : $secrets/mlflow-client.env   (set -a; . $secrets/mlflow-client.env; set +a)
  CA certificate    : $MLFLOW_TRACKING_SERVER_CERT_PATH
  tear down         : make demo-destroy
MSG
