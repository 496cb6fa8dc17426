"""Backups that lose nothing: runs logged through nginx with the real MLflow client are backed up,
the database and the bucket are destroyed, and restore.yml brings back every run, metric and
artifact byte for byte. Then health.yml passes and the scheduled backup runs.

The tests run in file order and share the recorded runs in STATE. They destroy and restore the
stack's database and bucket, so conftest.py runs this file after every other one of the scenario."""

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

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "_shared"))
from testinfra_helpers import user_systemctl, wait_until  # noqa: E402

testinfra_hosts = ["default-mlflow"]

ROOT = Path(__file__).resolve().parents[3]
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
INVENTORY_DIR = EPHEMERAL / "inventory"
SECRETS = INVENTORY_DIR / ".secrets"
CA = INVENTORY_DIR / ".pki" / "ca.crt"
URL = "https://localhost:9443"
EXTRA_VARS = ["-e", "mlflow_stack_public_port=9443"]
N_RUNS = 5
JOURNAL_UNITS = ["mlflow-stack-backup.service", ("mlflow.service", "mlflow")]
STATE = {}


def _secret(name):
    return (SECRETS / name).read_text().split()[0]


def playbook(name, *args):
    """Run one of the collection's playbooks against this scenario's hosts, as an operator would."""
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(EPHEMERAL / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".collections"),
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
    })
    path = Path(name) if os.path.isabs(name) else ROOT / "playbooks" / name
    cmd = ["ansible-playbook", "-i", os.environ.get("MOLECULE_INVENTORY_FILE", str(INVENTORY_DIR / "ansible_inventory.yml")),
           str(path), *EXTRA_VARS, *args]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    return out.returncode, out.stdout + out.stderr


@pytest.fixture(scope="module")
def auth():
    return ("admin", _secret("nginx_admin_password"))


@pytest.fixture(scope="module")
def client(auth):
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_USERNAME", auth[0])
    mp.setenv("MLFLOW_TRACKING_PASSWORD", auth[1])
    mp.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(CA))
    mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    from mlflow.tracking import MlflowClient

    yield MlflowClient(tracking_uri=URL)
    mp.undo()


def _s3():
    ip = subprocess.check_output(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "default-s3"], text=True,
    ).strip()
    return boto3.client("s3", endpoint_url=f"https://{ip}:9000", verify=str(CA),
                        aws_access_key_id="mlflow-stack-admin", aws_secret_access_key=_secret("minio_root_password"),
                        region_name="us-east-1")


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _artifact_files(client, run_id, path=None):
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            yield from _artifact_files(client, run_id, info.path)
        else:
            yield info.path


def _snapshot(client, auth, run_id):
    """Everything a user would look at in a run: params, tags we set, every metric's history, artifact checksums
    (each artifact downloaded through nginx the way the UI does)."""
    run = client.get_run(run_id)
    metrics = {key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)] for key in run.data.metrics}
    artifacts = {}
    for path in _artifact_files(client, run_id):
        r = requests.get(f"{URL}/get-artifact", params={"path": path, "run_uuid": run_id}, auth=auth,
                         verify=str(CA), timeout=60)
        assert r.status_code == 200, f"{path} of run {run_id}: HTTP {r.status_code}"
        artifacts[path] = _sha(r.content)
    return {
        "name": run.info.run_name,
        "status": run.info.status,
        "params": dict(run.data.params),
        "tags": {k: v for k, v in run.data.tags.items() if k.startswith("backup.")},
        "metrics": metrics,
        "artifacts": artifacts,
    }


def test_log_runs_with_metrics_and_artifacts(host, client, auth, tmp_path):
    experiment_id = client.create_experiment(f"backup-{uuid.uuid4().hex[:8]}")
    runs = {}
    for i in range(N_RUNS):
        run_id = client.create_run(experiment_id, run_name=f"run-{i}", tags={"backup.index": str(i)}).info.run_id
        client.log_param(run_id, "alpha", str(0.1 * i))
        client.log_param(run_id, "layers", str(i + 1))
        for step in range(4):
            client.log_metric(run_id, "loss", 1.0 / (step + i + 1), step=step)
            client.log_metric(run_id, "accuracy", 0.5 + step * 0.1 + i * 0.01, step=step)
        weights = tmp_path / f"weights-{i}.bin"
        weights.write_bytes(os.urandom(64 * 1024 * (i + 1)))
        client.log_artifact(run_id, str(weights), artifact_path="model")
        client.log_text(run_id, f"run {i} notes\n", "notes/readme.txt")
        client.set_terminated(run_id)
        runs[run_id] = _snapshot(client, auth, run_id)
        assert len(runs[run_id]["artifacts"]) == 2
    STATE.update(experiment_id=experiment_id, runs=runs)


def test_backup_playbook_takes_a_backup(host):
    rc, out = playbook("backup.yml")
    assert rc == 0, out[-4000:]
    listing = json.loads(host.check_output("mlflow-stack-backup list").splitlines()[-1])
    assert listing["backups"], "backup.yml reported success but no backup is listed"
    backup = listing["backups"][-1]
    assert backup["what"] == ["database", "artifacts"]
    assert backup["artifacts_count"] >= 2 * N_RUNS
    # The result callback wraps long messages; compare with the whitespace collapsed.
    assert f"-e backup_id={backup['id']}" in " ".join(out.split())
    STATE["backup_id"] = backup["id"]


def test_backups_and_secrets_are_root_only(host):
    assert host.file("/var/backups/mlflow-stack").mode == 0o700
    env = host.file("/etc/mlflow-stack-backup/backup.env")
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)
    assert _secret("db_password") in env.content_string
    # The running backup takes everything from that file, nothing from its command line.
    unit = host.file("/etc/systemd/system/mlflow-stack-backup.service").content_string
    assert _secret("db_password") not in unit and _secret("s3_secret_key") not in unit


def test_destroy_database_and_bucket(host, client):
    db = subprocess.run(
        ["docker", "exec", "-i", "-u", "postgres", "default-db", "psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", "mlflow"],
        input="SELECT format('DROP TABLE IF EXISTS public.%I CASCADE', tablename) FROM pg_tables "
              "WHERE schemaname = 'public' \\gexec\n",
        capture_output=True, text=True,
    )
    assert db.returncode == 0, db.stderr
    left = subprocess.check_output(
        ["docker", "exec", "-u", "postgres", "default-db", "psql", "-XtA", "-d", "mlflow", "-c",
         "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"], text=True).strip()
    assert left == "0"

    s3 = _s3()
    for page in s3.get_paginator("list_object_versions").paginate(Bucket="mlflow"):
        for version in page.get("Versions", []) + page.get("DeleteMarkers", []):
            s3.delete_object(Bucket="mlflow", Key=version["Key"], VersionId=version["VersionId"])
    assert s3.list_objects_v2(Bucket="mlflow").get("KeyCount", 0) == 0

    run_id = next(iter(STATE["runs"]))
    with pytest.raises(Exception):
        client.get_run(run_id)


def test_restore_refuses_without_a_backup_id(host):
    rc, out = playbook("restore.yml")
    assert rc != 0
    assert "Name the backup to restore" in out
    assert STATE["backup_id"] in out, "the refusal should list the backups that exist"
    # Refused before anything was stopped.
    assert user_systemctl(host, "mlflow", "is-active mlflow.service").stdout.strip() == "active"


def test_restore_brings_back_database_and_artifacts(host):
    rc, out = playbook("restore.yml", "-e", f"backup_id={STATE['backup_id']}")
    assert rc == 0, out[-4000:]
    assert "is replaced by the dump" in out and "objects are written back" in out
    assert user_systemctl(host, "mlflow", "is-active mlflow.service").stdout.strip() == "active"


def test_every_run_metric_and_artifact_matches(host, client, auth):
    assert STATE.get("runs"), "no runs were recorded"
    restored = {run_id: _snapshot(client, auth, run_id) for run_id in STATE["runs"]}
    for run_id, before in STATE["runs"].items():
        assert restored[run_id] == before, f"run {run_id} differs after the restore"
    listed = client.search_runs([STATE["experiment_id"]], max_results=100)
    assert {r.info.run_id for r in listed} == set(STATE["runs"])


def test_health_playbook_passes(host):
    rc, out = playbook("health.yml")
    assert rc == 0, out[-4000:]
    assert "checks passed" in out
    assert "FAIL " not in out


def test_health_playbook_fails_when_mlflow_is_down(host):
    assert user_systemctl(host, "mlflow", "stop mlflow.service").rc == 0
    try:
        rc, out = playbook("health.yml")
    finally:
        assert user_systemctl(host, "mlflow", "start mlflow.service").rc == 0
    wait_until(lambda: requests.get(f"{URL}/health", verify=str(CA), timeout=5).status_code == 200,
               timeout=180, interval=2, what="MLflow back after the health test")
    assert rc != 0
    assert "FAIL default-mlflow mlflow: /health" in out, out[-3000:]


def test_backup_timer_scheduled_and_its_run_succeeds(host):
    timer = host.service("mlflow-stack-backup.timer")
    assert timer.is_enabled and timer.is_running
    before = json.loads(host.check_output("mlflow-stack-backup list").splitlines()[-1])["backups"]
    start = host.run("systemctl start mlflow-stack-backup.service")
    assert start.rc == 0, start.stderr
    show = host.check_output("systemctl show mlflow-stack-backup.service -p Result -p ExecMainStatus")
    assert "Result=success" in show and "ExecMainStatus=0" in show, show
    after = json.loads(host.check_output("mlflow-stack-backup list").splitlines()[-1])["backups"]
    assert len(after) == len(before) + 1
    assert after[-1]["artifacts_count"] == before[-1]["artifacts_count"]


def test_database_entry_point_used_by_the_upgrades_works_on_the_db_host(host):
    """upgrade_postgresql.yml includes tasks_from: database on postgresql[0]; prove it there."""
    rc, out = playbook(str(Path(__file__).resolve().parents[1] / "database_backup_on_db_host.yml"))
    assert rc == 0, out[-4000:]
    db_host = host.get_host("ansible://default-db", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])
    listing = json.loads(db_host.check_output("mlflow-stack-backup list").splitlines()[-1])
    assert [b["what"] for b in listing["backups"]] == [["database"]]
    dump = db_host.run(f"pg_restore --list /var/backups/mlflow-stack/{listing['backups'][0]['id']}/database.dump")
    assert dump.rc == 0 and "TABLE public runs" in dump.stdout
    assert not db_host.package("python3-boto3").is_installed, "a database-only backup needs no S3 client"
