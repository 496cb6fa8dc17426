"""The pki role's check_supplied entry point, which the postgresql and nginx_auth preflights
call, refuses a supplied pair that cannot work and says which of the caller's variables to
fix, without ever printing the key. Runs on the controller only (the checks read, nothing else)."""

import datetime

import pytest
from controller_play import run_on_controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)
NEXT_MONTH = NOW + datetime.timedelta(days=30)


def new_key():
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def self_signed(key, names, valid_until):
    """A PEM certificate for ``key`` naming ``names``, valid from sixty days ago until ``valid_until``."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    builder = x509.CertificateBuilder(
        issuer_name=subject, subject_name=subject, public_key=key.public_key(), serial_number=x509.random_serial_number(),
        not_valid_before=NOW - datetime.timedelta(days=60), not_valid_after=valid_until,
        extensions=[x509.Extension(x509.SubjectAlternativeName.oid, False,
                                   x509.SubjectAlternativeName([x509.DNSName(n) for n in names]))])
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def run_check(tmp_path, **check_vars):
    return run_on_controller(
        tmp_path,
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.include_role:\n        name: mlops.mlflow_stack.pki\n        tasks_from: check_supplied\n",
        dict({"pki_check_var_prefix": "svc_tls"}, **check_vars))


def test_a_matching_current_pair_that_names_the_hosts_passes(tmp_path):
    key = new_key()
    (tmp_path / "svc.crt").write_text(self_signed(key, ["db1.example.org", "*.db.example.org"], NEXT_MONTH))
    rc, out = run_check(tmp_path, pki_check_cert_src=str(tmp_path / "svc.crt"), pki_check_key_content=key_pem(key),
                        pki_check_required_names=["db1.example.org", "replica.db.example.org"])
    assert rc == 0, out
    assert "PRIVATE KEY" not in out


@pytest.mark.parametrize("case, expected", [
    ("other_key", ["does NOT match", "The key in svc_tls_key_content does not match the supplied certificate"]),
    ("expired", ["already expired", "supply a current one in svc_tls_cert_content"]),
    ("unnamed", ["The certificate is missing db2.example.org", "every name in svc_tls_required_names"]),
    ("key_only", ["set svc_tls_cert_content or svc_tls_cert_src", "Or leave all four empty"]),
    ("both_ways", ["set svc_tls_cert_content or svc_tls_cert_src"]),
])
def test_an_unusable_pair_is_refused_naming_the_callers_variables(tmp_path, case, expected):
    key = new_key()
    cert = self_signed(key, ["db1.example.org"], NOW - datetime.timedelta(days=1) if case == "expired" else NEXT_MONTH)
    (tmp_path / "svc.crt").write_text(cert)
    check = {"pki_check_cert_content": cert, "pki_check_key_content": key_pem(key)}
    if case == "other_key":
        check["pki_check_key_content"] = key_pem(new_key())
    elif case == "unnamed":
        check.update(pki_check_required_names=["db1.example.org", "db2.example.org"],
                     pki_check_required_names_var="svc_tls_required_names")
    elif case == "key_only":
        del check["pki_check_cert_content"]
    elif case == "both_ways":
        check["pki_check_cert_src"] = str(tmp_path / "svc.crt")
    rc, out = run_check(tmp_path, **check)
    assert rc != 0
    for phrase in expected:
        assert phrase in out, out[-3000:]
    assert "PRIVATE KEY" not in out
