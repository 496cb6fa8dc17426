"""The weak_secret test refuses every value any role refused before it was the one rule
(empty, short, placeholder words, CHANGE_ME / vault_ leftovers, line breaks, non-strings),
lets real secrets through, and resolves by its full name from a playbook, vaulted values included."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.mlops.mlflow_stack.plugins.test import weak_secret as plugin  # noqa: E402

weak_secret = plugin.TestModule().tests()["weak_secret"]

STRONG = [
    "Xq7-long-enough-root-pass",
    "molecule-root-password-1f3a9c",  # a placeholder word inside a longer secret is fine
    "Test-db:pa55/w@rd%?&",
    "scenario-root-Pa55word",
    "  padded but long enough  ",
    "exactly12chr",
]

WEAK = [
    None,
    "",
    "            ",
    "short-pw1",
    "elevenchars",
    "password",
    "PASSWORD",
    "Passw0rd",
    "changeme",
    "change-me",
    "Change_Me",
    "secret",
    "minioadmin",
    "example",
    "Password123!",
    "secret-secret-2024",
    "changeme_changeme",
    "CHANGE_ME",
    "CHANGE_ME_before_prod",
    "change_me_later_please",
    "Changeme-for-production",
    "replace_me_with_the_real_one",
    "vault_alice_password_x",
    "VAULT_mlflow_stack_db_password",
    "long-enough-but\nsplit",
    "long-enough-with-a-cr\r",
    "tab\tinside-a-long-secret",
    123456789012345,
    True,
    ["a-list-of-long-secrets"],
]


@pytest.mark.parametrize("value", STRONG)
def test_real_secrets_pass(value):
    assert weak_secret(value) is False


@pytest.mark.parametrize("value", WEAK, ids=[repr(v)[:30] for v in WEAK])
def test_weak_or_placeholder_values_are_refused(value):
    assert weak_secret(value) is True


def test_min_length_lowers_only_the_length_rule():
    assert weak_secret("stack-root", min_length=3) is False
    assert weak_secret("ab", min_length=3) is True
    assert weak_secret("minioadmin", min_length=3) is True
    assert weak_secret("vault_minio_root_user", min_length=3) is True
    assert weak_secret("a" * 20, min_length="24") is True


def test_a_min_length_that_is_not_a_number_is_an_error():
    with pytest.raises(AnsibleFilterError, match="min_length"):
        weak_secret("Xq7-long-enough-root-pass", min_length="twelve")


def test_playbooks_reach_it_by_its_full_name_and_it_judges_vaulted_values(tmp_path):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    bindir = Path(sys.executable).parent
    password_file = tmp_path / "vault-password"
    password_file.write_text("unit-test-vault-password\n")
    vars_file = tmp_path / "vars.yml"
    for name, value in (("vaulted_strong", STRONG[0]), ("vaulted_weak", "changeme")):
        encrypted = subprocess.run(
            [str(bindir / "ansible-vault"), "encrypt_string", "--vault-password-file", str(password_file),
             "--name", name, value], env=env, capture_output=True, text=True, check=True).stdout
        with vars_file.open("a") as fh:
            fh.write(encrypted + "\n")
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.assert:\n        quiet: true\n        that:\n"
        "          - plain_weak is mlops.mlflow_stack.weak_secret\n"
        "          - plain_strong is not mlops.mlflow_stack.weak_secret\n"
        "          - vaulted_weak is mlops.mlflow_stack.weak_secret\n"
        "          - vaulted_strong is not mlops.mlflow_stack.weak_secret\n"
        "          - \"['', 'CHANGE_ME', plain_strong] | select('mlops.mlflow_stack.weak_secret') | list | length == 2\"\n")
    proc = subprocess.run(
        [str(bindir / "ansible-playbook"), "-i", "localhost,", "-c", "local", "--vault-password-file", str(password_file),
         "-e", "@" + str(vars_file), "-e", json.dumps({"plain_weak": "CHANGE_ME", "plain_strong": STRONG[1]}),
         str(playbook)],
        env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "changeme" not in proc.stdout and STRONG[0] not in proc.stdout


def test_documentation_parses_and_describes_the_arguments():
    doc = yaml.safe_load(plugin.DOCUMENTATION)
    assert doc["name"] == "weak_secret"
    assert set(doc["options"]) == {"_input", "min_length"}
    assert doc["options"]["min_length"]["default"] == weak_secret.__defaults__[0]
    assert all(isinstance(line, str) for line in doc["description"])
    assert yaml.safe_load(plugin.RETURN)["_value"]["type"] == "boolean"
    assert all("weak_secret" in str(example) for example in yaml.safe_load(plugin.EXAMPLES))
