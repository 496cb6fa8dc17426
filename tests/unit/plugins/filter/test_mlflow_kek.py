"""What the mlflow_server role deploys as MLflow's KEK passphrase and version: a new passphrase raises
the version (MLflow derives the key from both), an unchanged one keeps it, an unset one never drops
a host to MLflow's default, and the env file's quoting is read back exactly as the template wrote it."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.mlops.mlflow_stack.plugins.filter.mlflow_kek import mlflow_kek  # noqa: E402

# As an earlier release wrote the env file: no KEK, so MLflow ran with its default.
BEFORE = 'MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://mlflow:pw@db/mlflow"\nMLFLOW_DISABLE_TELEMETRY=true\n'


def env(passphrase, version):
    quoted = passphrase.replace("\\", "\\\\").replace('"', '\\"')  # the template's q() macro
    return BEFORE + 'MLFLOW_CRYPTO_KEK_PASSPHRASE="%s"\nMLFLOW_CRYPTO_KEK_VERSION=%d\n' % (quoted, version)


def test_a_new_host_starts_at_version_1():
    kek = mlflow_kek(None, "first-passphrase-123456")
    assert (kek["passphrase"], kek["version"], kek["deployed"], kek["differs"]) == ("first-passphrase-123456", 1, False, True)


def test_first_set_on_a_host_that_ran_with_the_default_is_a_rotation_to_version_2():
    kek = mlflow_kek(BEFORE, "first-passphrase-123456")
    assert (kek["previous_passphrase"], kek["previous_version"]) == ("", 1)
    assert (kek["passphrase"], kek["version"], kek["differs"], kek["default"]) == ("first-passphrase-123456", 2, True, False)


def test_the_same_passphrase_changes_nothing():
    kek = mlflow_kek(env("first-passphrase-123456", 2), "first-passphrase-123456")
    assert (kek["version"], kek["differs"]) == (2, False)


def test_a_changed_passphrase_raises_the_version():
    kek = mlflow_kek(env("first-passphrase-123456", 2), "second-passphrase-7890")
    assert (kek["previous_passphrase"], kek["passphrase"], kek["version"], kek["differs"]) == (
        "first-passphrase-123456", "second-passphrase-7890", 3, True)


@pytest.mark.parametrize("deployed", [BEFORE, env("first-passphrase-123456", 2)])
def test_unset_keeps_what_the_host_has(deployed):
    kek = mlflow_kek(deployed, "")
    assert kek["passphrase"] == kek["previous_passphrase"] and kek["version"] == kek["previous_version"]
    assert not kek["differs"]
    assert kek["default"] == (deployed == BEFORE)


def test_quotes_backslashes_and_dollars_are_read_back_exactly():
    tricky = 'a"b\\c$d e#f=g\'h-1234567890'
    assert mlflow_kek(env(tricky, 4), tricky)["differs"] is False
    assert mlflow_kek(env(tricky, 4), "")["passphrase"] == tricky


def test_a_version_that_is_not_a_number_is_an_error():
    with pytest.raises(AnsibleFilterError, match="MLFLOW_CRYPTO_KEK_VERSION"):
        mlflow_kek(BEFORE + "MLFLOW_CRYPTO_KEK_VERSION=two\n", "x" * 20)
