"""Adopting a database written by MLflow 2.x in direct-S3 mode (tests/fixtures/mlflow29_direct_s3, made by a
real MLflow 2.9.2), the way playbooks/adopt.yml does it, against real PostgreSQL (TLS) and MinIO on loopback:

  pg_dump custom format of the 2.x database -> the backup script's adopt-dump into a database that already
  holds a 3.17 schema -> `mlflow db upgrade` (this venv's MLflow) -> mlflow_artifact_uris (check mode, then for
  real, then again) -> `mlflow server` with --artifacts-destination s3://<stack bucket>/<prefix> -> a client
  without S3 credentials reads every old artifact, loads the old model by alias, and logs into an old experiment.

The old objects sit in another bucket (uploaded from the fixture), so the copy path runs."""

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg2
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "postgresql"))
from minio_server import ROOT, MinioServer, free_port, minio_binary  # noqa: E402
from tls_server import PASSWORD, TlsPostgres, find_bindir  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "mlflow29_direct_s3"
MODULE = ROOT / "plugins" / "modules" / "mlflow_artifact_uris.py"
BACKUP_SCRIPT = ROOT / "roles" / "backup" / "files" / "mlflow-stack-backup"
BIN = Path(sys.executable).parent
STACK_BUCKET, PREFIX = "mlflow", "artifacts"
SUMMARY = json.loads((FIXTURE / "summary.json").read_text())
OBJECTS = dict((k, base64.b64decode(v)) for k, v in json.loads((FIXTURE / "objects.json").read_text()).items())
OLD_BUCKET = SUMMARY["bucket"]
CLIENT_ENV_DROP = ("AWS_", "MLFLOW_S3_", "MLFLOW_TRACKING_")

pytestmark = [
    pytest.mark.skipif(not (BIN / "mlflow").exists(), reason="no mlflow next to the test's Python (make venv)"),
    pytest.mark.skipif(find_bindir() is None, reason="no PostgreSQL server binaries"),
    pytest.mark.skipif(minio_binary() is None, reason="no MinIO binary (make minio-bin)"),
]


def clean_env(**extra):
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith(CLIENT_ENV_DROP))
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("adopt")
    pg = TlsPostgres(find_bindir()).start()
    minio = None
    try:
        minio = MinioServer(minio_binary(), work / "minio").start()
        s3, _ = minio.clients()
        s3.make_bucket(STACK_BUCKET)
        s3.make_bucket(OLD_BUCKET)
        import io
        for key, body in OBJECTS.items():
            s3.put_object(OLD_BUCKET, key, io.BytesIO(body), len(body))
        # The user's dump: the 2.x database loaded into a scratch database, dumped in custom format.
        pg.psql("CREATE DATABASE legacy")
        pg._as_owner([os.path.join(pg.bindir, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", pg.sockdir,
                      "-p", str(pg.port), "-d", "legacy", "-f", str(FIXTURE / "mlflow2.sql")])
        dump = Path(pg.base) / "mlflow2.dump"
        pg._as_owner([os.path.join(pg.bindir, "pg_dump"), "-h", pg.sockdir, "-p", str(pg.port), "--format=custom",
                      "--file", str(dump), "legacy"])
        uri = "postgresql+psycopg2://app:%s@localhost:%d/appdb?sslmode=verify-full&sslrootcert=%s" % (PASSWORD, pg.port, pg.ca_file)
        env_file = work / "backup.env"
        env_file.write_text("PGHOST=localhost\nPGPORT=%d\nPGDATABASE=appdb\nPGUSER=app\nPGPASSWORD=%s\n"
                            "PGSSLMODE=verify-full\nPGSSLROOTCERT=%s\nBACKUP_DIR=%s\n"
                            % (pg.port, PASSWORD, pg.ca_file, work / "backups"))
        env_file.chmod(0o600)
        yield dict(pg=pg, minio=minio, s3=s3, dump=dump, uri=uri, env_file=env_file, work=work)
    finally:
        if minio:
            minio.stop()
        pg.stop()


def backup_script(stack, *args):
    proc = subprocess.run([sys.executable, str(BACKUP_SCRIPT), "--env-file", str(stack["env_file"])] + list(args),
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


def db_upgrade(stack):
    proc = subprocess.run([str(BIN / "mlflow"), "db", "upgrade", stack["uri"]], env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def run_module(stack, check_mode=False, **overrides):
    minio = stack["minio"]
    s3 = dict(endpoint_url=minio.url, access_key=minio.root_user, secret_key=minio.root_password)
    args = dict(host="localhost", port=stack["pg"].port, dbname="appdb", user="app", password=PASSWORD,
                sslrootcert=stack["pg"].ca_file, artifacts_destination="s3://%s/%s" % (STACK_BUCKET, PREFIX),
                s3=s3, source_s3=dict(s3), source_buckets=[OLD_BUCKET], sample_size=50)
    args.update(overrides)
    if check_mode:
        args["_ansible_check_mode"] = True
    args_file = stack["work"] / ("args-%s.json" % uuid.uuid4().hex[:6])
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    proc = subprocess.run([sys.executable, str(MODULE), str(args_file)], capture_output=True, text=True, timeout=300,
                          env=clean_env(PYTHONPATH=str(ROOT / ".collections")))
    args_file.unlink()
    out = proc.stdout + proc.stderr
    assert PASSWORD not in out and minio.root_password not in out, "a secret leaked into the module's output"
    return json.loads(proc.stdout)


def uri_columns(stack):
    with psycopg2.connect(host="localhost", port=stack["pg"].port, dbname="appdb", user="app", password=PASSWORD,
                          sslmode="verify-full", sslrootcert=stack["pg"].ca_file) as conn, conn.cursor() as cur:
        cur.execute("SELECT artifact_location FROM experiments UNION ALL SELECT artifact_uri FROM runs "
                    "UNION ALL SELECT source FROM model_versions UNION ALL SELECT storage_location FROM model_versions")
        values = sorted(v for (v,) in cur.fetchall())
    conn.close()
    return values


def stack_objects(stack):
    return sorted(o.object_name for o in stack["s3"].list_objects(STACK_BUCKET, prefix=PREFIX + "/", recursive=True))


EXPECTED_COUNTS = {"experiments.artifact_location": 3, "runs.artifact_uri": 3,
                   "model_versions.source": 2, "model_versions.storage_location": 2}


def test_a_bad_dump_is_refused_before_anything_changes(stack, tmp_path):
    not_a_dump = tmp_path / "mlflow.sql"
    not_a_dump.write_text("-- plain SQL\n")
    code, result = backup_script(stack, "adopt-dump", "--file", str(not_a_dump))
    assert code == 1 and "pg_dump --format=custom" in result["msg"]
    code, result = backup_script(stack, "inspect-dump", "--file", str(tmp_path / "missing.dump"))
    assert code == 1 and "does not exist" in result["msg"]


def test_the_dry_run_from_the_dump_lists_what_adoption_changes(stack):
    result = run_module(stack, check_mode=True, dump=str(stack["dump"]), host=None, dbname=None, user=None)
    assert not result.get("failed"), result
    assert result["changed"] is False
    assert result["counts"] == EXPECTED_COUNTS
    assert result["objects_copied"] == len(OBJECTS) and result["source_buckets"] == [OLD_BUCKET]
    wrong = run_module(stack, check_mode=True, dump=str(stack["dump"]), host=None, dbname=None, user=None,
                       source_buckets=["mlflow-artifactz"])
    assert wrong["failed"] and wrong["error_class"] == "source_bucket" and "mlflow-artifactz" in wrong["msg"]


def test_adopt_migrate_rewrite_then_a_client_without_s3_keys_reads_everything(stack):
    started = time.monotonic()
    # The stack's database already holds a (newer, empty) schema: the adoption must replace it whole.
    init = subprocess.run([sys.executable, "-c", "import sys; from mlflow.store.tracking.sqlalchemy_store import "
                           "SqlAlchemyStore; SqlAlchemyStore(sys.stdin.read(), 'mlflow-artifacts:/')"],
                          input=stack["uri"], env=clean_env(), capture_output=True, text=True, timeout=300)
    assert init.returncode == 0, init.stderr[-3000:]
    code, result = backup_script(stack, "adopt-dump", "--file", str(stack["dump"]))
    assert code == 0, result
    db_upgrade(stack)
    before = uri_columns(stack)
    assert all(v.startswith("s3://%s/" % OLD_BUCKET) for v in before)

    dry = run_module(stack, check_mode=True)
    assert not dry.get("failed"), dry
    assert dry["counts"] == EXPECTED_COUNTS and dry["objects_copied"] == len(OBJECTS)
    assert uri_columns(stack) == before and stack_objects(stack) == [], "check mode changed something"

    done = run_module(stack)
    assert not done.get("failed"), done
    assert done["changed"] is True and done["counts"] == EXPECTED_COUNTS
    assert done["objects_copied"] == len(OBJECTS) and done["bytes_copied"] == sum(map(len, OBJECTS.values()))
    after = uri_columns(stack)
    assert all(v.startswith("mlflow-artifacts:/") for v in after), after
    assert stack_objects(stack) == sorted("%s/%s" % (PREFIX, k) for k in OBJECTS)
    old_left = sorted(o.object_name for o in stack["s3"].list_objects(OLD_BUCKET, recursive=True))
    assert old_left == sorted(OBJECTS), "the originals must stay"

    again = run_module(stack)
    assert again["changed"] is False and again["counts"] == {} and again["objects_copied"] == 0
    assert uri_columns(stack) == after

    server = start_server(stack)
    try:
        proc = subprocess.run([sys.executable, "-c", CLIENT, json.dumps(SUMMARY)], capture_output=True, text=True,
                              timeout=300, cwd=str(stack["work"]),
                              env=clean_env(MLFLOW_TRACKING_URI=server["url"],
                                            EXPECTED=json.dumps(dict((k, hashlib.sha256(v).hexdigest())
                                                                     for k, v in OBJECTS.items()))))
        assert proc.returncode == 0, "client failed:\n%s\nserver log:\n%s" % (proc.stderr[-4000:],
                                                                              server["log"].read_text()[-3000:])
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        # The requests playbooks/adopt.yml makes through nginx to prove an old artifact readable.
        run_uri = next(r["new"] for r in done["sample"] if r["table"] == "runs")
        path = run_uri[len("mlflow-artifacts:/"):]
        listing = json.load(urllib.request.urlopen("%s/api/2.0/mlflow-artifacts/artifacts?path=%s" % (server["url"], path)))
        first = next(f for f in listing["files"] if not f.get("is_dir"))
        body = urllib.request.urlopen("%s/api/2.0/mlflow-artifacts/artifacts/%s/%s"
                                      % (server["url"], path, first["path"])).read()
        assert body == OBJECTS["%s/%s" % (path, first["path"])]
    finally:
        os.killpg(server["proc"].pid, signal.SIGTERM)
        server["proc"].wait(30)
    assert report["artifacts_read"] == len(OBJECTS)
    assert report["predictions"] == {"1": [2.0, 4.0], "champion": [3.0, 6.0]}
    assert report["new_run_artifact"] == "written after adoption\n"
    print("adoption end to end: %.1f s" % (time.monotonic() - started))


def alembic_version(stack):
    with psycopg2.connect(host="localhost", port=stack["pg"].port, dbname="appdb", user="app", password=PASSWORD,
                          sslmode="verify-full", sslrootcert=stack["pg"].ca_file) as conn, conn.cursor() as cur:
        cur.execute("SELECT version_num FROM alembic_version")
        (version,) = cur.fetchone()
    conn.close()
    return version


def test_a_backup_from_before_an_upgrade_restores_over_the_upgraded_schema(stack):
    """restore.yml after an upgrade: the backup lacks the newer tables and constraints, which must not survive
    (pg_restore --clean leaves them and cannot drop their parents); the database then says it is behind."""
    code, result = backup_script(stack, "adopt-dump", "--file", str(stack["dump"]))
    assert code == 0, result
    old = alembic_version(stack)
    code, backup = backup_script(stack, "backup", "--what", "database")
    assert code == 0, backup
    db_upgrade(stack)
    head = alembic_version(stack)
    assert head != old
    code, result = backup_script(stack, "restore", "--id", backup["id"], "--what", "database")
    assert code == 0, result
    assert result["database"] == "restored"
    assert alembic_version(stack) == old
    db_upgrade(stack)
    assert alembic_version(stack) == head


def start_server(stack):
    minio = stack["minio"]
    port = free_port()
    log = stack["work"] / "mlflow-server.log"
    env = clean_env(MLFLOW_BACKEND_STORE_URI=stack["uri"], MLFLOW_S3_ENDPOINT_URL=minio.url,
                    AWS_ACCESS_KEY_ID=minio.root_user, AWS_SECRET_ACCESS_KEY=minio.root_password)
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--artifacts-destination", "s3://%s/%s" % (STACK_BUCKET, PREFIX), "--default-artifact-root",
         "mlflow-artifacts:/"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = "http://127.0.0.1:%d" % port
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            return dict(proc=proc, url=url, log=log)
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise AssertionError("mlflow server did not answer /health:\n" + log.read_text()[-3000:])


# Runs in a fresh interpreter with no AWS_* / MLFLOW_S3_* variables: everything must come through the server.
CLIENT = r'''
import hashlib, json, os, sys, tempfile
import pandas as pd
import mlflow
from mlflow import MlflowClient

summary = json.loads(sys.argv[1])
expected = json.loads(os.environ["EXPECTED"])
assert not any(k.startswith("AWS_") for k in os.environ)
client = MlflowClient()
read = 0
for run_id, meta in summary["runs"].items():
    run = client.get_run(run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
    assert run.data.params["depth"] and run.data.tags["stage"] == "legacy"
    assert len(client.get_metric_history(run_id, "loss")) == 5
    exp_id = summary["experiments"][meta["experiment"]]
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="", dst_path=tmp)
        for dirpath, _, files in os.walk(local):
            for name in files:
                path = os.path.join(dirpath, name)
                key = "%s/%s/artifacts/%s" % (exp_id, run_id, os.path.relpath(path, local))
                with open(path, "rb") as fh:
                    assert hashlib.sha256(fh.read()).hexdigest() == expected[key], key
                read += 1
    listed = [f.path for f in client.list_artifacts(run_id)]
    assert "notes.txt" in listed and "plots" in listed, listed

frame = pd.DataFrame({"x": [1.0, 2.0]})
predictions = {}
for ref, label in (("models:/churn-model/1", "1"), ("models:/churn-model@champion", "champion")):
    predictions[label] = mlflow.pyfunc.load_model(ref).predict(frame)["x"].tolist()

mlflow.set_experiment("churn")
with mlflow.start_run() as run:
    mlflow.log_metric("loss", 0.01)
    mlflow.log_text("written after adoption\n", "after.txt")
new_text = open(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="after.txt")).read()
assert run.info.experiment_id == summary["experiments"]["churn"]
print(json.dumps({"artifacts_read": read, "predictions": predictions, "new_run_artifact": new_text}))
'''
