"""mlflow_secrets_kek against a real PostgreSQL (TLS, on loopback) holding MLflow's own schema, with
gateway secrets stored through MLflow's store: after the re-wrap MLflow reads every one of them with
the new passphrase and version, a second run changes nothing, and a secret that no passphrase opens
leaves the store as it was."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "postgresql"))

from ansible.module_utils.testing import patch_module_args  # noqa: E402
from ansible_collections.mlops.mlflow_stack.plugins.modules import mlflow_secrets_kek  # noqa: E402
from tls_server import PASSWORD, TlsPostgres, find_bindir  # noqa: E402

OLD = 'kek-old "first" \\ passphrase'
NEW = 'kek-new "second" \\ passphrase'


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries absent and not installable here")
    server = TlsPostgres(bindir).start()
    try:
        yield "postgresql+psycopg2://app:%s@localhost:%d/appdb?sslmode=verify-full&sslrootcert=%s" % (
            PASSWORD, server.port, server.ca_file)
    finally:
        server.stop()


def store_with(monkeypatch, uri, passphrase, version):
    """MLflow's own store, as a server with this passphrase and version in its environment runs it."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    if passphrase:
        monkeypatch.setenv("MLFLOW_CRYPTO_KEK_PASSPHRASE", passphrase)
    else:
        monkeypatch.delenv("MLFLOW_CRYPTO_KEK_PASSPHRASE", raising=False)
    monkeypatch.setenv("MLFLOW_CRYPTO_KEK_VERSION", str(version))
    return SqlAlchemyStore(uri, "/tmp/mlflow-artifacts-unused")


def run_module(capsys, **args):
    with patch_module_args(args), pytest.raises(SystemExit):
        mlflow_secrets_kek.main()
    return json.loads(capsys.readouterr().out)


def test_secrets_stored_by_mlflow_stay_readable_by_mlflow_after_the_rewrap(uri, monkeypatch, capsys):
    stored = {}
    for name, passphrase in (("under-default", ""), ("under-old", OLD)):
        store = store_with(monkeypatch, uri, passphrase, 1)
        stored[store.create_gateway_secret(secret_name=name, secret_value={"api_key": "sk-%s-0123456789" % name},
                                           provider="openai").secret_id] = "sk-%s-0123456789" % name

    out = run_module(capsys, backend_store_uri=uri, passphrase=NEW, version=2, previous_passphrases=[OLD])
    assert (out["changed"], out["secrets"], out["rewrapped"]) == (True, 2, 2), out
    assert PASSWORD not in json.dumps(out) and NEW not in json.dumps(out)

    store = store_with(monkeypatch, uri, NEW, 2)
    assert {secret_id: store._get_decrypted_secret(secret_id)["api_key"] for secret_id in stored} == stored

    again = run_module(capsys, backend_store_uri=uri, passphrase=NEW, version=2, previous_passphrases=[OLD])
    assert (again["changed"], again["rewrapped"]) == (False, 0)

    # A passphrase nobody gives: the module refuses and MLflow still reads every secret.
    refused = run_module(capsys, backend_store_uri=uri, passphrase="kek-third-passphrase-0000", version=3)
    assert refused["failed"] and refused["error_class"] == "unreadable_secrets"
    assert sorted(refused["unreadable"]) == ["under-default", "under-old"]
    store = store_with(monkeypatch, uri, NEW, 2)
    assert {secret_id: store._get_decrypted_secret(secret_id)["api_key"] for secret_id in stored} == stored
