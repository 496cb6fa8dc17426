"""The stack's CA key, protected by a passphrase the inventory sets for the host, reaches the pki
role that postgresql includes without passing it; a run without the passphrase stops before
anything changes, naming the fix, and never replaces the CA (ca.key and ca.crt stay byte for byte
as they were)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

HOST = "postgresql-debian12"
PASSPHRASE = b"molecule-ca-Passphrase-1"  # molecule.yml
PKI_DIR = Path(os.environ.get("MOLECULE_INVENTORY_FILE", "/nonexistent")).parent / ".pki"


def ca_files():
    return {name: (PKI_DIR / name).read_bytes() for name in ("ca.key", "ca.crt")}


def test_the_inventory_passphrase_encrypts_the_ca_key():
    key = (PKI_DIR / "ca.key").read_bytes()
    with pytest.raises(TypeError):  # encrypted: it does not load without a password
        serialization.load_pem_private_key(key, None)
    serialization.load_pem_private_key(key, PASSPHRASE)


def test_a_run_without_the_passphrase_stops_and_keeps_the_ca(host, tmp_path):
    before = ca_files()
    server_cert = host.file("/etc/postgresql-tls/postgresql.crt").content_string
    playbook = tmp_path / "converge.yml"
    playbook.write_text("- hosts: %s\n  roles:\n    - role: mlops.mlflow_stack.postgresql\n" % HOST)
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({"pki_ca_passphrase": ""}))
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", os.environ["MOLECULE_INVENTORY_FILE"],
         "-e", "@" + str(extra), str(playbook)],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, ANSIBLE_FORCE_COLOR="0"))
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0
    assert "it is protected by a passphrase and pki_ca_passphrase is empty" in out, out[-3000:]
    assert "The key was not regenerated" in out
    assert ca_files() == before
    assert host.file("/etc/postgresql-tls/postgresql.crt").content_string == server_cert
