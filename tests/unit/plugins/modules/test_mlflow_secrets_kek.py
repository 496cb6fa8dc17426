"""mlflow_secrets_kek against a real SQLite store holding secrets that MLflow's own crypto encrypted:
after a re-wrap MLflow reads every secret with the new passphrase and version (and no longer with
the old one), a secret no passphrase unwraps leaves the store untouched, check mode writes nothing."""

import json
import sqlite3
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible.module_utils.testing import patch_module_args  # noqa: E402
from ansible_collections.mlops.mlflow_stack.plugins.modules import mlflow_secrets_kek  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.utils import crypto  # noqa: E402

OLD = "previous-passphrase-0123456789abcdef"
NEW = "the-new-passphrase-fedcba9876543210"
# One cache for the whole module: each key derivation is 600,000 PBKDF2 rounds.
KEK = mlflow_secrets_kek.KeyCache()


def manager(passphrase, version):
    """A KEKManager for (passphrase, version) whose key comes from the shared cache."""
    managed = crypto.KEKManager.__new__(crypto.KEKManager)
    managed._kek_version = version
    managed._using_default_passphrase = not passphrase
    managed._kek = KEK(passphrase, version)
    return managed


def add_secret(path, name, value, passphrase, version):
    secret_id = str(uuid.uuid4())
    encrypted = crypto._encrypt_secret({"api_key": value}, manager(passphrase, version), secret_id, name)
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO secrets (secret_id, secret_name, encrypted_value, wrapped_dek, kek_version) "
                   "VALUES (?, ?, ?, ?, ?)", (secret_id, name, encrypted.encrypted_value, encrypted.wrapped_dek,
                                              encrypted.kek_version))
    return secret_id


def read_secret(path, secret_id, passphrase, version):
    with sqlite3.connect(path) as db:
        name, value, dek = db.execute("SELECT secret_name, encrypted_value, wrapped_dek FROM secrets WHERE secret_id = ?",
                                      (secret_id,)).fetchone()
    return crypto._decrypt_secret(value, dek, manager(passphrase, version), secret_id, name)["api_key"]


def rows(path):
    with sqlite3.connect(path) as db:
        return db.execute("SELECT secret_id, wrapped_dek, kek_version FROM secrets ORDER BY secret_id").fetchall()


@pytest.fixture()
def store(tmp_path):
    path = tmp_path / "mlflow.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE secrets (secret_id VARCHAR(36) PRIMARY KEY, secret_name VARCHAR(255) UNIQUE, "
                   "encrypted_value BLOB NOT NULL, wrapped_dek BLOB NOT NULL, kek_version INTEGER NOT NULL)")
    return path


def run_module(capsys, check_mode=False, **args):
    if check_mode:
        args["_ansible_check_mode"] = True
    with patch_module_args(args), pytest.raises(SystemExit):
        mlflow_secrets_kek.main()
    return json.loads(capsys.readouterr().out)


def test_secrets_under_the_default_and_the_old_passphrase_become_readable_with_the_new_one(store):
    under_default = add_secret(store, "openai", "sk-default-0000", "", 1)
    under_old = add_secret(store, "anthropic", "sk-old-1111", OLD, 1)

    result, unreadable = mlflow_secrets_kek.rewrap("sqlite:///%s" % store, NEW, 2, [OLD], False, kek=KEK)

    assert (result, unreadable) == ({"secrets": 2, "rewrapped": 2}, [])
    assert read_secret(store, under_default, NEW, 2) == "sk-default-0000"
    assert read_secret(store, under_old, NEW, 2) == "sk-old-1111"
    assert {version for _, _, version in rows(store)} == {2}
    with pytest.raises(MlflowException):
        read_secret(store, under_default, "", 1)


def test_a_second_run_changes_nothing(store):
    add_secret(store, "openai", "sk-default-0000", "", 1)
    mlflow_secrets_kek.rewrap("sqlite:///%s" % store, NEW, 2, [OLD], False, kek=KEK)
    before = rows(store)
    result, _ = mlflow_secrets_kek.rewrap("sqlite:///%s" % store, NEW, 2, [OLD], False, kek=KEK)
    assert result == {"secrets": 1, "rewrapped": 0}
    assert rows(store) == before


def test_the_version_is_the_one_the_server_runs_with(store):
    """A store re-wrapped at version 2 and a host set up again at version 1 (its env file lost):
    the secrets are wrapped again for version 1, which is what that server derives its KEK from."""
    secret = add_secret(store, "openai", "sk-v2-2222", NEW, 2)
    result, _ = mlflow_secrets_kek.rewrap("sqlite:///%s" % store, NEW, 1, [], False, kek=KEK)
    assert result["rewrapped"] == 1
    assert read_secret(store, secret, NEW, 1) == "sk-v2-2222"


def test_one_unknown_passphrase_changes_nothing_and_names_the_secret(store, capsys):
    add_secret(store, "openai", "sk-default-0000", "", 1)
    add_secret(store, "lost", "sk-lost-3333", "a-passphrase-nobody-remembers", 1)
    before = rows(store)

    out = run_module(capsys, backend_store_uri="sqlite:///%s" % store, passphrase=NEW, version=2,
                     previous_passphrases=[OLD])

    assert out["failed"] and out["error_class"] == "unreadable_secrets"
    assert out["unreadable"] == ["lost"] and "lost" in out["msg"] and "Nothing was changed" in out["msg"]
    assert rows(store) == before


def test_check_mode_reports_and_writes_nothing(store, capsys):
    add_secret(store, "openai", "sk-default-0000", "", 1)
    before = rows(store)
    out = run_module(capsys, check_mode=True, backend_store_uri="sqlite:///%s" % store, passphrase=NEW, version=2)
    assert out["changed"] and out["rewrapped"] == 1
    assert rows(store) == before


def test_a_store_not_yet_migrated_has_nothing_to_rewrap(tmp_path, capsys):
    out = run_module(capsys, backend_store_uri="sqlite:///%s" % (tmp_path / "empty.db"), passphrase=NEW, version=1)
    assert not out["changed"] and out["secrets"] == 0


def test_an_unreachable_store_fails_without_showing_the_uri(capsys):
    uri = "postgresql+psycopg2://mlflow:Secret-pw-123@127.0.0.1:1/mlflow?connect_timeout=2"
    out = run_module(capsys, backend_store_uri=uri, passphrase=NEW, version=1)
    assert out["failed"] and out["error_class"] == "backend_store"
    assert "Secret-pw-123" not in json.dumps(out) and NEW not in json.dumps(out)
