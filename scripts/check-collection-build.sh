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
leaked=$(tar -tzf "$artifact" | grep -E '^(\./)?(tests|molecule|inventories|scripts|\.venv|\.collections|\.ci)/' | head -5 || true)
if [ -n "$leaked" ]; then
  echo "ERROR: build_ignore let these into the artifact:" >&2
  echo "$leaked" >&2
  exit 1
fi
for must in playbooks/site.yml galaxy.yml meta/runtime.yml; do
  tar -tzf "$artifact" | grep -qx "$must" || { echo "ERROR: $must missing from the artifact" >&2; exit 1; }
done
ansible-galaxy collection install --offline -p "$work/collections" "$artifact" >/dev/null
# Resolve the playbook and every role through the installed artifact only.
(cd "$work" && ANSIBLE_CONFIG=/dev/null ANSIBLE_COLLECTIONS_PATH="$work/collections" \
  ansible-playbook --syntax-check -i localhost, mlops.mlflow_stack.site >/dev/null)
echo "==> the installed artifact resolves mlops.mlflow_stack.site"
