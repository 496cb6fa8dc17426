"""The private CA is the stack's trust anchor: once ca.key exists the pki role never regenerates
it. A key that does not load (garbled, vault-encrypted, passphrase missing or wrong) stops the
play with the cause and the fix, and ca.key and ca.crt stay byte for byte as they were. With
pki_ca_passphrase the key is written encrypted and every signature uses the passphrase.
Runs the role's main entry point on the controller only (the CA never leaves it)."""

import json

import pytest
from controller_play import run_on_controller
from cryptography.hazmat.primitives import serialization

PASSPHRASE = "unit-test-ca-Passphrase-7"


def run_ca(tmp_path, **role_vars):
    """Run tasks_from: main with pki_ca_dir in tmp_path; play_passphrase becomes the play variable pki_ca_passphrase."""
    passphrase = role_vars.pop("play_passphrase", None)
    play_vars = "  vars:\n    pki_ca_passphrase: %s\n" % json.dumps(passphrase) if passphrase is not None else ""
    return run_on_controller(
        tmp_path,
        "- hosts: localhost\n  gather_facts: false\n" + play_vars + "  tasks:\n"
        "    - ansible.builtin.include_role:\n        name: mlops.mlflow_stack.pki\n",
        dict({"pki_ca_dir": str(tmp_path / "pki")}, **role_vars))


def ca_files(tmp_path):
    return {name: (tmp_path / "pki" / name).read_bytes() for name in ("ca.key", "ca.crt")}


@pytest.fixture
def plain_ca(tmp_path):
    rc, out = run_ca(tmp_path)
    assert rc == 0, out
    return ca_files(tmp_path)


@pytest.fixture
def encrypted_ca(tmp_path):
    rc, out = run_ca(tmp_path, play_passphrase=PASSPHRASE)
    assert rc == 0, out
    return ca_files(tmp_path)


def test_a_passphrase_encrypts_the_key_and_a_rerun_with_it_changes_nothing(tmp_path, encrypted_ca):
    assert b"ENCRYPTED" in encrypted_ca["ca.key"]
    serialization.load_pem_private_key(encrypted_ca["ca.key"], PASSPHRASE.encode())
    rc, out = run_ca(tmp_path, play_passphrase=PASSPHRASE)
    assert rc == 0, out
    assert "changed=0" in out
    assert PASSPHRASE not in out
    assert ca_files(tmp_path) == encrypted_ca


def test_without_a_passphrase_the_key_stays_unencrypted(plain_ca):
    serialization.load_pem_private_key(plain_ca["ca.key"], None)


@pytest.mark.parametrize("case, expected", [
    ("no_passphrase", "it is protected by a passphrase and pki_ca_passphrase is empty"),
    ("wrong_passphrase", "pki_ca_passphrase is not the passphrase of ca.key"),
])
def test_an_encrypted_key_without_its_passphrase_stops_the_play_unchanged(tmp_path, encrypted_ca, case, expected):
    extra = {"play_passphrase": "not-the-Passphrase-of-it"} if case == "wrong_passphrase" else {}
    rc, out = run_ca(tmp_path, **extra)
    assert rc != 0
    assert expected in out, out
    assert "The key was not regenerated" in out
    assert ca_files(tmp_path) == encrypted_ca


@pytest.mark.parametrize("case, expected", [
    ("garbled", "it is not a readable PEM private key (damaged, truncated or replaced"),
    ("vaulted", "it is encrypted with Ansible Vault, which the crypto modules do not decrypt"),
    ("passphrase_for_plain_key", "the key is not encrypted but pki_ca_passphrase is set"),
])
def test_a_key_that_does_not_load_stops_the_play_unchanged(tmp_path, plain_ca, case, expected):
    key = tmp_path / "pki" / "ca.key"
    if case == "garbled":
        key.write_bytes(plain_ca["ca.key"][:40] + b"\x00garbage\n" + plain_ca["ca.key"][60:])
    elif case == "vaulted":
        key.write_text("$ANSIBLE_VAULT;1.1;AES256\n3361623...\n")
    before = ca_files(tmp_path)
    rc, out = run_ca(tmp_path, **({"play_passphrase": PASSPHRASE} if case == "passphrase_for_plain_key" else {}))
    assert rc != 0
    assert expected in out, out
    assert ca_files(tmp_path) == before


def test_a_certificate_without_its_key_is_not_given_a_new_key(tmp_path, plain_ca):
    (tmp_path / "pki" / "ca.key").unlink()
    rc, out = run_ca(tmp_path)
    assert rc != 0
    assert "ca.crt exists but" in out and "Restore ca.key from your backup" in out, out
    assert not (tmp_path / "pki" / "ca.key").exists()
    assert (tmp_path / "pki" / "ca.crt").read_bytes() == plain_ca["ca.crt"]


def test_a_placeholder_passphrase_is_refused_before_a_key_is_made(tmp_path):
    rc, out = run_ca(tmp_path, play_passphrase="CHANGE_ME_ca_passphrase")
    assert rc != 0
    assert "pki_ca_passphrase is set but looks like a placeholder" in out, out
    assert "CHANGE_ME_ca_passphrase" not in out
    assert not (tmp_path / "pki" / "ca.key").exists()
