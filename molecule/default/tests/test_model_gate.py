"""The model gate as a CI pipeline runs it: the client env file's settings, the CI user's own
password, through nginx with TLS. Versions are registered with the real MLflow client as the CI
user; `ansible-playbook mlops.mlflow_stack.model_gate -e @gate.yml` runs on the controller and the
champion alias moves only for the better candidate."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

testinfra_hosts = ["default-mlflow"]

ROOT = Path(__file__).resolve().parents[3]
INVENTORY_DIR = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory"
SECRETS = INVENTORY_DIR / ".secrets"
JOURNAL_UNITS = ["nginx.service", ("mlflow.service", "mlflow")]
RULES = [{"metric": "rmse", "direction": "lower", "rel_tolerance": 0.02},
         {"metric": "r2", "direction": "higher", "abs_tolerance": 0.01}]


@pytest.fixture(scope="module")
def ci_env():
    """What a pipeline exports: the client env file, then the CI user and its password from the
    secret store (here: the password the local inventory generated for it)."""
    env_file = SECRETS / "mlflow-client.env"
    text = env_file.read_text()
    assert "MLFLOW_TRACKING_USERNAME=ci" in text, "the client env file does not tell pipelines to use the ci user"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("ANSIBLE_", "MLFLOW_", "MOLECULE_"))}
    for line in text.splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key] = value
    env["MLFLOW_TRACKING_USERNAME"] = "ci"
    env["MLFLOW_TRACKING_PASSWORD"] = (SECRETS / "nginx_ci_password").read_text().split()[0]
    assert env["MLFLOW_TRACKING_URI"].startswith("https://")
    assert Path(env["MLFLOW_TRACKING_SERVER_CERT_PATH"]).is_file()
    return env


@pytest.fixture(scope="module")
def client(ci_env):
    """The real MLflow client, as the CI user through nginx."""
    patch = pytest.MonkeyPatch()
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_SERVER_CERT_PATH",
                "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD"):
        if key in ci_env:
            patch.setenv(key, ci_env[key])
    from mlflow import MlflowClient

    yield MlflowClient(tracking_uri=ci_env["MLFLOW_TRACKING_URI"], registry_uri=ci_env["MLFLOW_TRACKING_URI"])
    patch.undo()


def register(client, model, **metrics):
    """A finished run that logged ``metrics`` and a small file, registered as the next version."""
    experiment = client.get_experiment_by_name("ci-gate") or client.get_experiment(client.create_experiment("ci-gate"))
    run_id = client.create_run(experiment.experiment_id).info.run_id
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    client.log_text(run_id, "trained by the model gate test", "model/README.txt")
    client.set_terminated(run_id)
    return client.create_model_version(model, "runs:/%s/model" % run_id, run_id=run_id).version


def champion(client, model):
    aliases = client.get_registered_model(model).aliases
    return aliases.get("champion")


def gate(ci_env, tmp_path, version, model, **env_overrides):
    gate_file = tmp_path / ("gate-%s.yml" % version)
    gate_file.write_text(yaml.safe_dump({"model_gate_name": model, "model_gate_candidate_version": int(version),
                                         "model_gate_rules": RULES, "model_gate_promote": True}))
    env = dict(ci_env, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"),
               ANSIBLE_CALLBACK_RESULT_FORMAT="json", **env_overrides)
    out = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "mlops.mlflow_stack.model_gate",
                          "-e", "@%s" % gate_file], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                         timeout=120)
    assert ci_env["MLFLOW_TRACKING_PASSWORD"] not in out.stdout + out.stderr, "the CI password leaked into the output"
    return out


def test_gate_promotes_only_the_better_model_through_nginx(host, ci_env, client, tmp_path):
    model = "ci-gate-" + uuid.uuid4().hex[:8]
    client.create_registered_model(model)

    first = register(client, model, rmse=50.0, r2=0.40)
    out = gate(ci_env, tmp_path, first, model)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "there is no baseline to compare against yet" in out.stdout
    assert champion(client, model) == first

    worse = register(client, model, rmse=55.0, r2=0.41)   # rmse 10 % worse, 2 % allowed
    out = gate(ci_env, tmp_path, worse, model)
    assert out.returncode != 0, out.stdout
    assert '"error_class": "regressed"' in out.stdout
    assert "rmse 55 vs 50 (lower is better): worse by 5" in out.stdout
    assert champion(client, model) == first, "the worse candidate moved the champion alias"

    better = register(client, model, rmse=45.0, r2=0.45)
    out = gate(ci_env, tmp_path, better, model)
    assert out.returncode == 0, out.stdout + out.stderr
    assert champion(client, model) == better
    tags = client.get_model_version(model, better).tags
    assert tags["mlflow_stack.gate.verdict"] == "passed" and tags["mlflow_stack.gate.baseline"] == first


def test_gate_with_a_wrong_password_is_an_auth_failure(host, ci_env, tmp_path):
    out = gate(ci_env, tmp_path, 1, "ci-gate-any", MLFLOW_TRACKING_PASSWORD="wrong-" + uuid.uuid4().hex)
    assert out.returncode != 0
    assert '"error_class": "auth"' in out.stdout, out.stdout
    assert "refused the credentials of user 'ci'" in out.stdout
