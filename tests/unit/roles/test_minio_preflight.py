"""The minio role's preflight stops bad input before any host changes, names the variable
and the fix, and never prints the secret it refused. Runs the role with --tags
minio_preflight against the controller itself (asserts only; nothing is installed)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
GOOD = {
    "minio_install_method": "url",
    "minio_binary_url": "https://mirror.example.invalid/minio",
    "minio_binary_sha256": "a" * 64,
    "minio_root_user": "stack-root",
    "minio_root_password": "Xq7-long-enough-root-pass",
    "minio_buckets": [{"name": "mlflow"}],
    "minio_users": [{"access_key": "mlflow", "secret_key": "Xq7-long-enough-user-key", "buckets": ["mlflow"]}],
}


def run_preflight(tmp_path, **overrides):
    playbook = tmp_path / "play.yml"
    playbook.write_text("- hosts: localhost\n  gather_facts: false\n  roles: [mlops.mlflow_stack.minio]\n")
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps(dict(GOOD, **overrides)))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    proc = subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local", "--tags", "minio_preflight",
                           "-e", "ansible_python_interpreter=%s" % sys.executable, "-e", "@%s" % extra, str(playbook)], env=env, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def test_good_settings_pass(tmp_path):
    rc, out = run_preflight(tmp_path)
    assert rc == 0, out


@pytest.mark.parametrize("overrides, names", [
    ({"minio_root_user": "minioadmin", "minio_root_password": "minioadmin"}, "minio_root_user"),
    ({"minio_root_password": "short-pass"}, "minio_root_password"),
    ({"minio_root_password": "CHANGE_ME_please_now"}, "minio_root_password"),
    ({"minio_binary_sha256": ""}, "minio_binary_sha256"),
    ({"minio_install_method": "local", "minio_local_binary": "/nonexistent/minio"}, "minio_local_binary"),
    ({"minio_users": [{"access_key": "mlflow", "secret_key": "changeme", "buckets": ["mlflow"]}]}, "secret_key"),
    ({"minio_users": [{"access_key": "mlflow", "secret_key": "Xq7-long-enough-user-key", "buckets": ["typo"]}]},
     "typo"),
    ({"minio_cluster_hosts": ["minio1"]}, "minio_cluster_hosts"),
])
def test_bad_settings_stop_with_a_message(tmp_path, overrides, names):
    rc, out = run_preflight(tmp_path, **overrides)
    assert rc != 0
    assert names in out
    for secret in ("short-pass", "CHANGE_ME_please_now", "Xq7-long-enough-root-pass", "Xq7-long-enough-user-key"):
        if secret in json.dumps(overrides) or secret in json.dumps(GOOD):
            assert secret not in out, "preflight printed a secret"
