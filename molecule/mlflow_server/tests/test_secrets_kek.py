"""MLflow's stored gateway secrets (LLM provider API keys) are encrypted under the operator's KEK
passphrase, not MLflow's public default, and survive a change of it: a secret stored through the
REST API is still readable by MLflow, with the env file the server runs with, after a converge with
a new passphrase. The passphrase lives in the 0600 env file only: not in `ps`, the journal (sudo's
log of command lines included) or the output of a -vvv converge.

Runs after test_mlflow_server.py (file order), so the rotation converge is the scenario's last."""

import json
import os
import shlex
import subprocess
import sys
import uuid

import pytest
import requests
import testinfra.utils.ansible_runner
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "_shared"))
from testinfra_helpers import container_name, user_systemctl, wait_until  # noqa: E402

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("mlflow_server")

USER = "mlflow"
ENV_FILE = f"/home/{USER}/.config/mlflow/mlflow.env"
NETWORK = "mlflow_server-net"
SCENARIO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOURNAL_UNITS = [("mlflow.service", USER)]

with open(os.path.join(SCENARIO_DIR, "vars", "scenario.yml")) as fh:
    SCENARIO = yaml.safe_load(fh)
FIRST = SCENARIO["scenario_kek_passphrase"]
SECOND = 'kek-two "Wx8-second" \\ passphrase'

# Run on the MLflow host as the service user: load the env file as systemd hands it to the server,
# then let MLflow's own store decrypt the secret.
READ_SECRET = """
import os, shlex, sys
for line in open(sys.argv[1]):
    line = line.strip()
    if line and not line.startswith('#') and '=' in line:
        name, value = shlex.split(line)[0].split('=', 1)
        os.environ[name] = value
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
store = SqlAlchemyStore(os.environ['MLFLOW_BACKEND_STORE_URI'], '/tmp')
print(store._get_decrypted_secret(sys.argv[2])['api_key'])
"""


def forms(secret):
    """The secret as text and as it would appear inside JSON output."""
    return {secret, json.dumps(secret)[1:-1]}


def leaked(text):
    return [s for s in forms(FIRST) | forms(SECOND) if s in text]


def env_values(host):
    values = {}
    for line in host.file(ENV_FILE).content_string.splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, value = shlex.split(line)[0].split("=", 1)
            values[name] = value
    return values


@pytest.fixture(scope="module")
def base_url(host):
    out = subprocess.run(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", container_name(host)],
                         check=True, capture_output=True, text=True).stdout
    return "http://%s:5000" % json.loads(out)[NETWORK]["IPAddress"]


def serving(base_url):
    try:
        return requests.get(f"{base_url}/api/3.0/mlflow/gateway/secrets/list", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def venv_python(host):
    exec_start = user_systemctl(host, USER, "show -p ExecStart --value mlflow.service").stdout
    mlflow_bin = exec_start.split("path=", 1)[1].split(";", 1)[0].strip()
    return os.path.join(os.path.dirname(mlflow_bin), "python")


def read_secret(host, secret_id):
    run = host.run("runuser -u %s -- env HOME=%s %s -c %s %s %s", USER, f"/home/{USER}", venv_python(host), READ_SECRET,
                   ENV_FILE, secret_id)
    assert run.rc == 0, run.stderr[-2000:]
    return run.stdout.strip().splitlines()[-1]


def stored_row(secret_name):
    sql = "SELECT encode(wrapped_dek, 'hex'), kek_version FROM secrets WHERE secret_name = '%s'" % secret_name
    out = subprocess.run(["docker", "exec", "mlflow_server-db", "runuser", "-u", "postgres", "--", "psql", "-d",
                          SCENARIO["scenario_db_name"], "-Atc", sql], check=True, capture_output=True, text=True)
    wrapped, version = out.stdout.strip().split("|")
    return bytes.fromhex(wrapped), int(version)


def unwraps(wrapped, passphrase, version):
    from mlflow.utils import crypto

    try:
        crypto.unwrap_dek(wrapped, crypto.KEKManager(passphrase=passphrase, kek_version=version).get_kek())
        return True
    except Exception:
        return False


def converge(tmp_path, *args, **extra_vars):
    project = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.path.dirname(os.path.dirname(SCENARIO_DIR)))
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0")
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", os.path.join(project, ".collections"))
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps(extra_vars))
    run = subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], os.path.join(SCENARIO_DIR, "converge.yml"),
         "-e", f"@{extra}", *args],
        capture_output=True, text=True, env=env, timeout=900)
    return run.returncode, run.stdout + run.stderr


def test_the_passphrase_is_in_the_0600_env_file_only(host):
    env = host.file(ENV_FILE)
    assert (env.user, env.mode) == (USER, 0o600)
    values = env_values(host)
    assert (values["MLFLOW_CRYPTO_KEK_PASSPHRASE"], values["MLFLOW_CRYPTO_KEK_VERSION"]) == (FIRST, "1")
    assert not leaked(host.file(f"/home/{USER}/.config/systemd/user/mlflow.service").content_string)
    assert not leaked(host.check_output("ps -eo args="))


def test_a_stored_secret_survives_a_new_passphrase(host, base_url, tmp_path):
    wait_until(lambda: serving(base_url), timeout=60, what="MLflow's gateway API answering")
    name, value = "kek-probe-%s" % uuid.uuid4().hex[:8], "sk-probe-%s" % uuid.uuid4().hex
    created = requests.post(f"{base_url}/api/3.0/mlflow/gateway/secrets/create", timeout=30,
                            json={"secret_name": name, "secret_value": {"api_key": value}, "provider": "openai"})
    assert created.status_code == 200, created.text
    secret_id = created.json()["secret"]["secret_id"]

    # Stored under the operator's passphrase: MLflow's public default does not open it.
    wrapped, version = stored_row(name)
    assert version == 1
    assert unwraps(wrapped, FIRST, 1) and not unwraps(wrapped, "", 1)
    assert read_secret(host, secret_id) == value

    rc, out = converge(tmp_path, "-vvv", mlflow_server_crypto_kek_passphrase=SECOND)
    assert rc == 0, out[-4000:]
    assert "Re-wrap the keys of the stored gateway secrets" in out
    assert not leaked(out), "a KEK passphrase in the output of a -vvv converge"

    values = env_values(host)
    assert (values["MLFLOW_CRYPTO_KEK_PASSPHRASE"], values["MLFLOW_CRYPTO_KEK_VERSION"]) == (SECOND, "2")
    wrapped, version = stored_row(name)
    assert version == 2 and unwraps(wrapped, SECOND, 2) and not unwraps(wrapped, FIRST, 1)
    assert read_secret(host, secret_id) == value
    wait_until(lambda: serving(base_url), timeout=60, what="MLflow serving after the new passphrase")
    listed = requests.get(f"{base_url}/api/3.0/mlflow/gateway/secrets/list", timeout=10).json()["secrets"]
    assert name in [secret["secret_name"] for secret in listed]

    assert not leaked(host.check_output("ps -eo args="))
    assert not leaked(host.check_output("journalctl --no-pager -o cat")), "a KEK passphrase in the journal"
