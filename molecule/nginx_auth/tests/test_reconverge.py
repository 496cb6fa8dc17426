"""Day-2 changes through the role itself: bad input stops in preflight while the running
nginx keeps serving, users come and go, and the other certificate sources work. Each test
re-runs converge.yml with ansible-playbook and extra vars (from a 0600 file, never the
command line), and the last one puts the scenario's own configuration back. That adding
users already present changes nothing is Molecule's idempotence step.

Runs after test_nginx_auth.py (file order) because it changes the host."""

import datetime
import hashlib
import os
import re
import shlex
import subprocess
import tempfile

import pytest
import testinfra.utils.ansible_runner
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts(
    "nginx_auth"
)

JOURNAL_UNITS = ["nginx.service"]

NAME = "mlflow.test"
SITE = "/etc/nginx/conf.d/nginx_auth.conf"
HTTPS = f"-k --resolve {NAME}:443:127.0.0.1 https://{NAME}"
CONVERGE = os.path.join(os.environ["MOLECULE_SCENARIO_DIRECTORY"], "converge.yml")


def converge(extra_vars=None, check=False):
    """Run the scenario's converge.yml; return (rc, output, changed count)."""
    cmd = ["ansible-playbook", "-i", os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"]), CONVERGE]
    if check:
        cmd += ["--check", "--diff"]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", dir=os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) as fh:
        os.chmod(fh.name, 0o600)
        if extra_vars:
            yaml.safe_dump(extra_vars, fh)
            fh.flush()
            cmd += ["-e", f"@{fh.name}"]
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    output = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    recap = re.search(r"nginx_auth-debian12\s*:\s*ok=\d+\s+changed=(\d+)", output)
    return proc.returncode, output, int(recap.group(1)) if recap else None


def status(host, args):
    return int(host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {args}"))


def auth(user, password):
    return "-u " + shlex.quote(f"{user}:{password}")


def served_certificate(host):
    pem = host.check_output(
        f"openssl s_client -connect 127.0.0.1:443 -servername {NAME} </dev/null 2>/dev/null | openssl x509"
    )
    return x509.load_pem_x509_certificate(pem.encode())


def nginx_state(host):
    """What must not move when preflight refuses a run: master PID, site file, served cert."""
    return (
        host.check_output("systemctl show -p MainPID --value nginx"),
        host.file(SITE).sha256sum,
        served_certificate(host).fingerprint(hashes.SHA256()),
    )


def users(host):
    return host.ansible.get_variables()["nginx_auth_users"]


def password(host, name):
    return next(u["password"] for u in users(host) if u["name"] == name)


def self_signed_pair(name):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


@pytest.mark.parametrize(
    "case",
    ["mismatched_key", "placeholder_password", "empty_upstreams", "gzip_level"],
)
def test_preflight_refuses_bad_input_and_nginx_keeps_serving(host, case):
    before = nginx_state(host)
    if case == "mismatched_key":
        cert_pem = served_certificate(host).public_bytes(serialization.Encoding.PEM).decode()
        _, other_key = self_signed_pair(NAME)
        extra = {"nginx_auth_tls_cert_content": cert_pem, "nginx_auth_tls_key_content": other_key}
        expected = "does NOT match"
    elif case == "placeholder_password":
        extra = {"nginx_auth_users": [{"name": "alice", "password": "vault_alice_password_x"}]}
        expected = "the password of alice is missing or a placeholder"
    elif case == "gzip_level":
        extra = {"nginx_auth_gzip_comp_level": 12}
        expected = "nginx_auth_gzip_comp_level must be 1 to 9 (got 12"
    else:
        extra = {"nginx_auth_upstreams": []}
        expected = "nginx_auth_upstreams must list the MLflow replicas"

    rc, output, _ = converge(extra)

    assert rc != 0
    assert expected in re.sub(r"\s+", " ", output), output[-3000:]
    assert "vault_alice_password_x" not in output
    assert "PRIVATE KEY" not in output
    assert nginx_state(host) == before
    assert status(host, f"{HTTPS}/health") == 200
    assert status(host, f"{auth('alice', password(host, 'alice'))} {HTTPS}/") == 200


def test_dry_run_reports_a_removal_without_making_it(host):
    before = host.file("/etc/nginx_auth/htpasswd").sha256sum
    rc, output, changed = converge(
        {
            "nginx_auth_users": [
                {"name": "alice", "password": password(host, "alice")},
                {"name": "bob", "state": "absent"},
            ]
        },
        check=True,
    )
    assert rc == 0, output[-3000:]
    assert changed > 0
    assert host.file("/etc/nginx_auth/htpasswd").sha256sum == before
    assert status(host, f"{auth('bob', password(host, 'bob'))} {HTTPS}/") == 200
    assert password(host, "alice") not in output


def test_removing_a_user_takes_effect_and_a_supplied_certificate_is_served(host):
    cert_pem, key_pem = self_signed_pair(NAME)
    extra = {
        "nginx_auth_users": [
            {"name": "alice", "password": password(host, "alice")},
            {"name": "bob", "state": "absent"},
        ],
        "nginx_auth_tls_cert_content": cert_pem,
        "nginx_auth_tls_key_content": key_pem,
        "nginx_auth_tls_dir": "/etc/nginx_auth/tls-supplied",
    }
    rc, output, changed = converge(extra)
    assert rc == 0, output[-3000:]
    assert changed > 0

    assert status(host, f"{auth('bob', password(host, 'bob'))} {HTTPS}/") == 401
    assert status(host, f"{auth('alice', password(host, 'alice'))} {HTTPS}/") == 200
    served = served_certificate(host)
    assert served == x509.load_pem_x509_certificate(cert_pem.encode())
    key = host.file("/etc/nginx_auth/tls-supplied/nginx_auth.key")
    assert key.mode == 0o600 and key.user == "root"
    assert hashlib.sha256(key_pem.encode()).hexdigest() == key.sha256sum


def test_selfsigned_issuer_and_a_user_added_back(host):
    rc, output, _ = converge(
        {"nginx_auth_tls_issuer": "selfsigned", "nginx_auth_tls_dir": "/etc/nginx_auth/tls-selfsigned"}
    )
    assert rc == 0, output[-3000:]
    assert status(host, f"{auth('bob', password(host, 'bob'))} {HTTPS}/") == 200
    served = served_certificate(host)
    assert served.issuer == served.subject
    assert served.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == NAME
    sans = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert sans == [NAME, "nginx_auth-debian12"]
    key = host.file("/etc/nginx_auth/tls-selfsigned/nginx_auth.key")
    assert key.mode == 0o600 and key.user == "root"


def test_back_to_the_private_ca_certificate(host):
    rc, output, changed = converge()
    assert rc == 0, output[-3000:]
    assert changed > 0
    assert status(host, f"{auth('alice', password(host, 'alice'))} {HTTPS}/") == 200
    ca = x509.load_pem_x509_certificate(host.file("/etc/nginx_auth/tls/ca.crt").content)
    assert served_certificate(host).issuer == ca.subject
