"""Preflight stops bad input before the host changes, and says what to fix.

Runs the role with --tags postgresql_preflight against the converged Debian 12 host with a
supplied certificate and key made here: a key that belongs to another certificate, a
certificate that does not name the host, and a placeholder-length password. Nothing on the
host changes; the server keeps running as converged.
"""

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "postgresql-debian12"


def _cert(names):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def run_preflight(tmp_path, extra_vars):
    playbook = tmp_path / "preflight.yml"
    playbook.write_text("- hosts: %s\n  gather_facts: false\n  roles:\n    - role: mlops.mlflow_stack.postgresql\n" % HOST)
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(extra_vars))
    ansible_playbook = str(Path(sys.executable).parent / "ansible-playbook")
    proc = subprocess.run(
        [ansible_playbook, "-i", os.environ["MOLECULE_INVENTORY_FILE"], "--tags", "postgresql_preflight",
         "-e", "@" + str(vars_file), str(playbook)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, ANSIBLE_FORCE_COLOR="0"))
    return proc.returncode, proc.stdout + proc.stderr


def test_key_that_does_not_match_the_certificate_is_refused(tmp_path):
    cert, _ = _cert([HOST])
    _, other_key = _cert([HOST])
    rc, out = run_preflight(tmp_path, {"postgresql_tls_cert_content": cert, "postgresql_tls_key_content": other_key})
    assert rc != 0
    assert "does not match the supplied certificate" in out
    assert other_key.splitlines()[1] not in out  # the key never reaches the output


def test_certificate_that_does_not_name_the_host_is_refused(tmp_path):
    cert, key = _cert(["db.elsewhere.example"])
    rc, out = run_preflight(tmp_path, {"postgresql_tls_cert_content": cert, "postgresql_tls_key_content": key})
    assert rc != 0
    assert "missing " + HOST in out
    assert "postgresql_tls_required_names" in out


def test_matching_certificate_passes_preflight(tmp_path):
    cert, key = _cert([HOST, "db.example"])
    # Self-signed, so it is its own CA; the scenario publishes the CA, which needs one.
    rc, out = run_preflight(tmp_path, {"postgresql_tls_cert_content": cert, "postgresql_tls_key_content": key,
                                       "postgresql_tls_ca_content": cert})
    assert rc == 0, out[-3000:]


def test_publishing_without_the_ca_of_a_supplied_certificate_is_refused(tmp_path):
    cert, key = _cert([HOST])
    rc, out = run_preflight(tmp_path, {"postgresql_tls_cert_content": cert, "postgresql_tls_key_content": key})
    assert rc != 0
    assert "also set postgresql_tls_ca_content or postgresql_tls_ca_src" in out


@pytest.mark.parametrize("password", ["short-pw1", "CHANGE_ME_before_prod"])
def test_placeholder_password_is_refused_without_echoing_it(tmp_path, password):
    rc, out = run_preflight(tmp_path, {"postgresql_users": [{"name": "mlflow", "password": password}],
                                       "postgresql_databases": [{"name": "mlflow", "owner": "mlflow"}]})
    assert rc != 0
    assert "postgresql_users entries ['mlflow'] have a missing or placeholder password" in out
    assert password not in out
