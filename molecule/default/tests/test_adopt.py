"""Adopting an MLflow 2.x deployment (tests/fixtures/mlflow29_direct_s3: clients wrote to s3://legacy-mlflow/
themselves) into the running stack with playbooks/adopt.yml, as an operator would:

  the old objects are put in an old bucket on the stack's MinIO and the old database is dumped with
  `pg_dump --format=custom` -> `adopt.yml --check` lists what it would change and changes nothing ->
  `adopt.yml` replaces the stack's database and moves the artifacts behind the proxy -> a client holding only
  the stack's client env file (no AWS_* at all) reads every old artifact byte for byte, loads the old model by
  its alias and logs into an old experiment -> `adopt.yml` again with the same dump stops and changes nothing.

It replaces the stack's database, so conftest.py runs it last, after test_backup.py. The tests run in file order
and share STATE."""

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "_shared"))
from testinfra_helpers import user_systemctl  # noqa: E402

testinfra_hosts = ["default-mlflow"]

ROOT = Path(__file__).resolve().parents[3]
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
INVENTORY_DIR = EPHEMERAL / "inventory"
INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE", str(INVENTORY_DIR / "ansible_inventory.yml"))
SECRETS = INVENTORY_DIR / ".secrets"
CA = INVENTORY_DIR / ".pki" / "ca.crt"
# inventories/local writes the client env file next to the secrets (mlflow_stack_client_dir).
CLIENT_ENV_FILE = SECRETS / "mlflow-client.env"
URL = "https://localhost:9443"
EXTRA_VARS = ["-e", "mlflow_stack_public_port=9443"]
FIXTURE = ROOT / "tests" / "fixtures" / "mlflow29_direct_s3"
SUMMARY = json.loads((FIXTURE / "summary.json").read_text())
OBJECTS = {k: base64.b64decode(v) for k, v in json.loads((FIXTURE / "objects.json").read_text()).items()}
OLD_BUCKET = SUMMARY["bucket"]
STACK_BUCKET, PREFIX = "mlflow", "artifacts"
REPLICAS = ["default-mlflow", "default-mlflow2"]
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
JOURNAL_UNITS = [("mlflow.service", "mlflow")]
STATE = {}


def _secret(name):
    return (SECRETS / name).read_text().split()[0]


def _sha(data):
    return hashlib.sha256(data).hexdigest()


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
    cmd = ["ansible-playbook", "-i", INVENTORY, str(ROOT / "playbooks" / name), *EXTRA_VARS, *args]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    return out.returncode, out.stdout + out.stderr


def _flat(out):
    """The result callback wraps long messages: compare with the whitespace collapsed."""
    return " ".join(out.split())


def _s3():
    ip = subprocess.check_output(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "default-s3"], text=True,
    ).strip()
    return boto3.client("s3", endpoint_url=f"https://{ip}:9000", verify=str(CA),
                        aws_access_key_id="mlflow-stack-admin", aws_secret_access_key=_secret("minio_root_password"),
                        region_name="us-east-1")


def _psql(sql, db="mlflow", stdin=None):
    """psql as postgres on the database host; returns stdout (tuples only, unaligned)."""
    cmd = ["docker", "exec", "-i", "-u", "postgres", "default-db", "psql", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1",
           "-d", db]
    if sql is not None:
        cmd += ["-c", sql]
    out = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _experiments():
    return _psql("SELECT experiment_id || ':' || name FROM experiments ORDER BY experiment_id").splitlines()


def _stack_keys_of_old_runs():
    s3 = _s3()
    keys = []
    for run_id, meta in SUMMARY["runs"].items():
        prefix = "%s/%s/%s/" % (PREFIX, SUMMARY["experiments"][meta["experiment"]], run_id)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=STACK_BUCKET, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
    return sorted(keys)


def _main_pids(host):
    """MainPID of mlflow.service on each replica: a stop or restart changes it."""
    pids = {}
    for name in REPLICAS:
        replica = host.get_host(f"ansible://{name}", ansible_inventory=INVENTORY)
        out = user_systemctl(replica, "mlflow", "show mlflow.service -p MainPID --value")
        assert out.rc == 0, out.stderr
        pids[name] = out.stdout.strip()
    assert all(pid not in ("", "0") for pid in pids.values()), pids
    return pids


def _recap(out):
    return {h: (int(c), int(u), int(f)) for h, c, u, f in RECAP.findall(out)}


@pytest.fixture(scope="module")
def adopt_vars(tmp_path_factory):
    """The old store and the dump, passed the way secrets are: a 0600 vars file (-e @file), never argv.
    The old bucket is on the stack's MinIO; the stack's own key may read only the stack's bucket, so the
    old store is read with the MinIO root key (an operator would give a read-only key of the old store)."""
    work = tmp_path_factory.mktemp("adopt")
    assert "dump" in STATE, "the dump was not made (test_old_store_and_dump failed)"
    path = work / "adopt-vars.yml"
    path.touch(mode=0o600)
    path.write_text(json.dumps({
        "adopt_dump": str(STATE["dump"]),
        "adopt_source_buckets": [OLD_BUCKET],
        "adopt_source_s3": {"endpoint_url": "https://default-s3:9000", "access_key": "mlflow-stack-admin",
                            "secret_key": _secret("minio_root_password")},
    }))
    assert path.stat().st_mode & 0o777 == 0o600
    return ["-e", f"@{path}"]


def test_old_store_and_dump(tmp_path_factory):
    """The old deployment: its objects in their own bucket, its database as `pg_dump --format=custom`."""
    s3 = _s3()
    existing = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    if OLD_BUCKET not in existing:
        s3.create_bucket(Bucket=OLD_BUCKET)
    for key, body in OBJECTS.items():
        s3.put_object(Bucket=OLD_BUCKET, Key=key, Body=body)
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=OLD_BUCKET).get("Contents", [])]
    assert sorted(listed) == sorted(OBJECTS)

    # Load the 2.x database into a scratch database on the database host and dump it from there. The
    # \restrict lines of a recent pg_dump are left out: an older psql does not know them.
    sql = "".join(line for line in (FIXTURE / "mlflow2.sql").read_text().splitlines(keepends=True)
                  if not line.startswith(("\\restrict", "\\unrestrict")))
    _psql("DROP DATABASE IF EXISTS adopt_fixture", db="postgres")
    _psql("CREATE DATABASE adopt_fixture", db="postgres")
    try:
        _psql(None, db="adopt_fixture", stdin=sql)
        # Streamed out of the container: `docker cp` cannot read the test host's tmpfs /tmp.
        local = tmp_path_factory.mktemp("dump") / "mlflow2.dump"
        with open(local, "wb") as out:
            dump = subprocess.run(["docker", "exec", "-u", "postgres", "default-db", "pg_dump", "--format=custom",
                                   "adopt_fixture"], stdout=out, stderr=subprocess.PIPE, timeout=120)
        assert dump.returncode == 0, dump.stderr.decode(errors="replace")
    finally:
        _psql("DROP DATABASE IF EXISTS adopt_fixture", db="postgres")
    assert local.read_bytes()[:5] == b"PGDMP", "not a custom-format archive"
    STATE["dump"] = local


def test_dry_run_lists_the_changes_and_changes_nothing(host, adopt_vars):
    experiments, pids = _experiments(), _main_pids(host)
    assert experiments and not any(e.split(":", 1)[1] == "churn" for e in experiments), experiments
    rc, out = playbook("adopt.yml", "--check", *adopt_vars)
    assert rc == 0, out[-4000:]
    flat = _flat(out)
    for column, count in (("experiments.artifact_location", 3), ("runs.artifact_uri", 3),
                          ("model_versions.source", 2), ("model_versions.storage_location", 2)):
        assert re.search(r"%s\W+%d\b" % (re.escape(column), count), flat), f"{column}: {count} not listed"
    assert f"Objects: {len(OBJECTS)} to copy" in flat, flat[-3000:]
    assert "Dry run: nothing was changed." in flat
    assert _secret("minio_root_password") not in out
    assert _experiments() == experiments, "--check changed the stack's database"
    assert _stack_keys_of_old_runs() == [], "--check copied objects"
    assert _main_pids(host) == pids, "--check stopped MLflow"


def test_adopt(host, adopt_vars):
    rc, out = playbook("adopt.yml", *adopt_vars)
    assert rc == 0, out[-6000:]
    assert _secret("minio_root_password") not in out and _secret("db_password") not in out
    assert re.search(r"copied %d objects" % len(OBJECTS), _flat(out)), _flat(out)[-3000:]
    assert "through nginx: HTTP 200" in _flat(out), _flat(out)[-3000:]
    assert _stack_keys_of_old_runs() == sorted(f"{PREFIX}/{key}" for key in OBJECTS)
    names = {e.split(":", 1)[1]: e.split(":", 1)[0] for e in _experiments()}
    assert names == {"Default": "0", **SUMMARY["experiments"]}, names
    # The originals stay where they were.
    left = [o["Key"] for o in _s3().list_objects_v2(Bucket=OLD_BUCKET).get("Contents", [])]
    assert sorted(left) == sorted(OBJECTS)


# Runs in a fresh interpreter whose environment holds the stack's client env file and no AWS_* / MLFLOW_*
# of its own: every byte must come through nginx.
CLIENT = r'''
import hashlib, json, os, sys, tempfile
import pandas as pd
import mlflow
from mlflow import MlflowClient

summary = json.loads(sys.argv[1])
expected = json.loads(os.environ.pop("EXPECTED"))
assert not any(k.startswith("AWS_") for k in os.environ)
client = MlflowClient()
read = {}
for run_id, meta in summary["runs"].items():
    run = client.get_run(run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
    assert run.data.tags["stage"] == "legacy" and len(client.get_metric_history(run_id, "loss")) == 5
    exp_id = summary["experiments"][meta["experiment"]]
    listed = [f.path for f in client.list_artifacts(run_id)]
    assert "notes.txt" in listed and "plots" in listed, listed
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="", dst_path=tmp)
        for dirpath, _, files in os.walk(local):
            for name in files:
                path = os.path.join(dirpath, name)
                key = "%s/%s/artifacts/%s" % (exp_id, run_id, os.path.relpath(path, local))
                with open(path, "rb") as fh:
                    read[key] = hashlib.sha256(fh.read()).hexdigest()
assert read == expected, sorted(set(read.items()) ^ set(expected.items()))

champion = mlflow.pyfunc.load_model("models:/%s@%s" % (summary["model"]["name"], summary["model"]["alias"]))
predictions = champion.predict(pd.DataFrame({"x": [1.0, 2.0]}))["x"].tolist()

mlflow.set_experiment("churn")
with mlflow.start_run() as run:
    mlflow.log_metric("loss", 0.01)
    mlflow.log_text("written after adoption\n", "after.txt")
text = open(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="after.txt")).read()
print(json.dumps({"artifacts_read": len(read), "predictions": predictions, "new_run_artifact": text,
                  "new_run_experiment": run.info.experiment_id}))
'''


def test_a_client_with_only_the_client_env_file_reads_loads_and_logs(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    for line in CLIENT_ENV_FILE.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key] = value
    assert not any(k.startswith("AWS_") for k in env)
    assert env["MLFLOW_TRACKING_URI"] == URL and env["MLFLOW_TRACKING_SERVER_CERT_PATH"]
    # The file names the user; the password is the user's own (test_stack.py checks the file holds none).
    env["MLFLOW_TRACKING_PASSWORD"] = _secret("nginx_admin_password")
    env["EXPECTED"] = json.dumps({k: _sha(v) for k, v in OBJECTS.items()})
    proc = subprocess.run([sys.executable, "-c", CLIENT, json.dumps(SUMMARY)], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["artifacts_read"] == len(OBJECTS)
    # The champion multiplies by the factor of the run its version was logged from.
    source = SUMMARY["model"]["sources"][SUMMARY["model"]["alias_version"]]
    factor = next(meta["factor"] for run_id, meta in SUMMARY["runs"].items() if f"/{run_id}/" in source)
    assert report["predictions"] == [1.0 * factor, 2.0 * factor]
    assert report["new_run_artifact"] == "written after adoption\n"
    assert report["new_run_experiment"] == SUMMARY["experiments"]["churn"]


def test_adopting_the_same_dump_again_stops_and_changes_nothing(host, adopt_vars):
    experiments, pids = _experiments(), _main_pids(host)
    rc, out = playbook("adopt.yml", *adopt_vars)
    assert rc == 0, out[-4000:]
    assert "was adopted already" in _flat(out)
    recap = _recap(out)
    assert recap and all(changed == 0 and failed == 0 for changed, _, failed in recap.values()), (recap, out[-4000:])
    assert _main_pids(host) == pids, "MLflow was restarted"
    assert _experiments() == experiments
