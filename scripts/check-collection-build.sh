#!/usr/bin/env bash
# Build the collection artifact, prove build_ignore kept tests, molecule, inventories and
# caches out, install it into a scratch path and resolve its playbook by FQCN.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ansible-galaxy collection build --force --output-path "$work" . >/dev/null
artifact=$(ls "$work"/mlops-mlflow_stack-*.tar.gz)
echo "==> built $(basename "$artifact") ($(du -h "$artifact" | cut -f1))"
listing=$(tar -tzf "$artifact")
leaked=$(echo "$listing" | grep -E '^(\./)?(tests|molecule|inventories|scripts|\.venv|\.collections|\.ci)/' | head -5 || true)
if [ -n "$leaked" ]; then
  echo "ERROR: build_ignore let these into the artifact:" >&2
  echo "$leaked" >&2
  exit 1
fi
for must in playbooks/site.yml MANIFEST.json meta/runtime.yml; do
  grep -qx "$must" <<<"$listing" || { echo "ERROR: $must missing from the artifact" >&2; exit 1; }
done
# Install and resolve through the artifact only, not through the checkout's .collections link.
export -n ANSIBLE_CONFIG
export ANSIBLE_COLLECTIONS_PATH="$work/collections"
ansible-galaxy collection install --offline --force -p "$work/collections" "$artifact" >/dev/null
for playbook in site model_gate; do
  (cd "$work" && ansible-playbook --syntax-check -i localhost, "mlops.mlflow_stack.$playbook" >/dev/null 2>&1) || {
    echo "ERROR: the installed artifact does not resolve mlops.mlflow_stack.$playbook" >&2
    (cd "$work" && ansible-playbook --syntax-check -i localhost, "mlops.mlflow_stack.$playbook") >&2
    exit 1
  }
done
echo "==> the installed artifact resolves mlops.mlflow_stack.site and mlops.mlflow_stack.model_gate"
# The gate's module and its module_utils must both ship: ansible-doc imports neither, so run the
# module's argument parsing through the artifact (a missing required option fails before any request).
gate=$(cd "$work" && ansible localhost -m mlops.mlflow_stack.mlflow_model_gate -a 'name=x' 2>&1 || true)
grep -q "missing required arguments" <<<"$gate" || {
  echo "ERROR: mlops.mlflow_stack.mlflow_model_gate does not run from the installed artifact:" >&2
  echo "$gate" >&2
  exit 1
}
echo "==> the installed artifact runs mlops.mlflow_stack.mlflow_model_gate"
