"""End to end through the front door: a real MLflow client talks HTTPS + basic auth to nginx,
which proxies to MLflow, which keeps runs in PostgreSQL (verify-full) and artifacts in MinIO."""

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
import requests
import testinfra.utils.ansible_runner

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "_shared"))
from testinfra_helpers import restart_container, wait_until  # noqa: E402

testinfra_hosts = ["default-mlflow"]

ROOT = Path(__file__).resolve().parents[3]
INVENTORY_DIR = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory"
SECRETS = INVENTORY_DIR / ".secrets"
CA = INVENTORY_DIR / ".pki" / "ca.crt"
URL = "https://localhost:9443"
JOURNAL_UNITS = ["nginx.service", ("mlflow.service", "mlflow")]


def _secret(name):
    return (SECRETS / name).read_text().split()[0]


@pytest.fixture(scope="module")
def auth():
    return ("admin", _secret("nginx_admin_password"))


@pytest.fixture(scope="module")
def client_env(auth):
    env_file = SECRETS / "mlflow-client.env"
    assert env_file.is_file(), "the mlflow_server role did not write the client env file"
    env = dict(os.environ)
    for line in env_file.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key] = value
    # The stack publishes nginx on 9443 in this scenario; the file names the CA and the user,
    # and keeps artifact transfers on the tracking URL. Only the password comes from elsewhere.
    assert env["MLFLOW_TRACKING_URI"] == URL
    assert Path(env["MLFLOW_TRACKING_SERVER_CERT_PATH"]).read_text() == CA.read_text()
    assert env["MLFLOW_TRACKING_USERNAME"] == auth[0]
    assert env["MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD"] == "false"
    assert "PASSWORD" not in env_file.read_text()
    env["MLFLOW_TRACKING_PASSWORD"] = auth[1]
    return env


@pytest.fixture(scope="module")
def mlflow_client(client_env, monkeypatch_module):
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                "MLFLOW_TRACKING_SERVER_CERT_PATH"):
        monkeypatch_module.setenv(key, client_env[key])
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=URL)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _s3():
    ip = subprocess.check_output(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "default-s3"],
        text=True,
    ).strip()
    return boto3.client(
        "s3",
        endpoint_url=f"https://{ip}:9000", verify=str(CA),
        aws_access_key_id="mlflow-stack-admin",
        aws_secret_access_key=_secret("minio_root_password"),
        region_name="us-east-1",
    )


def test_ui_needs_credentials(auth):
    assert requests.get(f"{URL}/", verify=str(CA), timeout=10).status_code == 401
    assert requests.get(f"{URL}/", verify=str(CA), auth=(auth[0], "wrong-password"), timeout=10).status_code == 401
    page = requests.get(f"{URL}/", verify=str(CA), auth=auth, timeout=10)
    assert page.status_code == 200
    assert "MLflow" in page.text


def test_health_open_for_load_balancers():
    assert requests.get(f"{URL}/health", verify=str(CA), timeout=10).status_code == 200


def test_run_params_metrics_and_artifact_in_bucket(mlflow_client, tmp_path):
    experiment_id = mlflow_client.create_experiment(f"e2e-{uuid.uuid4().hex[:8]}")
    run = mlflow_client.create_run(experiment_id)
    run_id = run.info.run_id
    mlflow_client.log_param(run_id, "alpha", "0.5")
    for step, value in enumerate([0.9, 0.7, 0.4]):
        mlflow_client.log_metric(run_id, "loss", value, step=step)
    payload = os.urandom(256 * 1024)
    artifact = tmp_path / "weights.bin"
    artifact.write_bytes(payload)
    mlflow_client.log_artifact(run_id, str(artifact))
    mlflow_client.set_terminated(run_id)

    stored = mlflow_client.get_run(run_id)
    assert stored.data.params == {"alpha": "0.5"}
    assert [m.value for m in mlflow_client.get_metric_history(run_id, "loss")] == [0.9, 0.7, 0.4]

    objects = _s3().list_objects_v2(Bucket="mlflow", Prefix="artifacts/").get("Contents", [])
    matches = [o["Key"] for o in objects if run_id in o["Key"] and o["Key"].endswith("weights.bin")]
    assert matches, f"artifact of run {run_id} not found in the mlflow bucket; keys: {[o['Key'] for o in objects][:20]}"
    body = _s3().get_object(Bucket="mlflow", Key=matches[0])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_train_register_load_and_predict(client_env):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_elasticnet.py"), "--model-name", "e2e-elasticnet"],
        env=client_env, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["model_version"] >= 1
    assert len(result["predictions"]) == 5
    assert {"rmse", "mae", "r2"} <= set(result["metrics"])


def test_every_service_back_after_hosts_restart(host, mlflow_client, auth):
    name = f"survives-restart-{uuid.uuid4().hex[:8]}"
    experiment_id = mlflow_client.create_experiment(name)
    runner = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
    for hostname in ("default-db", "default-s3", "default-mlflow"):
        restart_container(runner.get_host(hostname))

    def api_answers():
        r = requests.get(f"{URL}/api/2.0/mlflow/experiments/get", params={"experiment_id": experiment_id},
                         verify=str(CA), auth=auth, timeout=10)
        return r.status_code == 200 and r.json()["experiment"]["name"] == name

    wait_until(api_answers, timeout=120, interval=2, what="MLflow to answer through nginx after the restart")
    assert requests.get(f"{URL}/health", verify=str(CA), timeout=10).status_code == 200
    # The artifact store is back too: a new artifact goes through the proxy into MinIO.
    run = mlflow_client.create_run(experiment_id)
    mlflow_client.log_text(run.info.run_id, "after restart", "note.txt")
    assert mlflow_client.list_artifacts(run.info.run_id)[0].path == "note.txt"
