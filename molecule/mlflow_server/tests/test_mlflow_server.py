"""The mlflow_server role keeps its promises on a real host: MLflow runs as an ordinary user from a
systemd user unit kept alive by linger, talks to PostgreSQL over verify-full and stores artifacts
in MinIO, survives crashes and reboots, and refuses a wrong CA before touching the running server.
The scenario converges on the role's release in a versioned virtualenv; upgrades from the previous
release (a version that cannot install, the migration, the two virtualenvs kept, a restored
pre-upgrade backup) are the default scenario's, through the upgrade playbook operators run.

The client side is real: the controller's MLflow client, boto3 against the bucket, and more
ansible-playbook runs for what the role must refuse or withstand: a wrong CA, a CA over plain http
without a checksum, a plain-http S3 endpoint on another host, a login account as the service user
without the opt-in (with it, the account keeps its shell, password and groups), and symlinks the
service user plants where the role writes. Every refusal names the fix and leaves the server alone."""

import datetime
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
import warnings

import boto3
import pytest
import requests
import testinfra.utils.ansible_runner
import yaml
from botocore.config import Config

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "_shared"))
from testinfra_helpers import container_name, restart_container, user_systemctl, wait_until  # noqa: E402

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("mlflow_server")

USER = "mlflow"
HOME = f"/home/{USER}"
VENVS = f"{HOME}/venvs"
DB_CONTAINER = "mlflow_server-db"
NETWORK = "mlflow_server-net"
SCENARIO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOURNAL_UNITS = [("mlflow.service", USER)]
# The target is 15 s on a host with its CPUs to itself (a restart costs about 9 s of CPU: the
# `mlflow server` CLI, then each uvicorn worker importing MLflow). A timed target is reported,
# not asserted, so a busy machine cannot flake the run: the test fails only when systemd does not
# bring the server back at all within the hard limit, and warns with the number past the target.
RESTART_TARGET = 15.0
RESTART_BUDGET = float(os.environ.get("MLFLOW_STACK_RESTART_BUDGET", "60"))

with open(os.path.join(SCENARIO_DIR, "vars", "scenario.yml")) as fh:
    SCENARIO = yaml.safe_load(fh)
# The role's release, which the scenario converges on.
with open(os.path.join(SCENARIO_DIR, "..", "..", "roles", "mlflow_server", "defaults", "main.yml")) as fh:
    VERSION = yaml.safe_load(fh)["mlflow_server_version"]


def container_ip(name):
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", name],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)[NETWORK]["IPAddress"]


@pytest.fixture(scope="module")
def base_url(host):
    return f"http://{container_ip(container_name(host))}:5000"


@pytest.fixture(scope="module")
def client(base_url):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=base_url)


@pytest.fixture(scope="module")
def s3():
    # MinIO runs with TLS from the scenario's CA; its certificate names the container's address.
    endpoint = f"https://{container_ip('mlflow_server-s3')}:{SCENARIO['scenario_s3_port']}"
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        verify=os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "pki", "ca.crt"),
        aws_access_key_id=SCENARIO["scenario_s3_root_user"],
        aws_secret_access_key=SCENARIO["scenario_s3_root_password"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def main_pid(host):
    out = user_systemctl(host, USER, "show -p MainPID --value mlflow.service").stdout.strip()
    return int(out or 0)


def serving(base_url):
    """The server answers /health and a real backend-store call."""
    try:
        health = requests.get(f"{base_url}/health", timeout=3)
        search = requests.post(f"{base_url}/api/2.0/mlflow/experiments/search",
                               json={"max_results": 1}, timeout=5)
    except requests.RequestException:
        return False
    return health.status_code == 200 and search.status_code == 200


def link(host, name):
    """Where a link in the virtualenvs directory points, as the role wrote it."""
    return host.run("readlink %s", f"{VENVS}/{name}").stdout.strip()


def psql(sql):
    return subprocess.run(["docker", "exec", "-u", "postgres", DB_CONTAINER, "psql", "-d", SCENARIO["scenario_db_name"],
                           "-Atc", sql], check=True, capture_output=True, text=True).stdout.strip()


def schema_revision():
    return psql("SELECT version_num FROM alembic_version")


def head_revision():
    """The schema of N, from the controller's MLflow (the same release)."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    import mlflow
    assert mlflow.__version__ == VERSION
    return _get_latest_schema_revision()


def test_converged_from_a_versioned_virtualenv(host, base_url):
    assert requests.get(f"{base_url}/version", timeout=5).text.strip() == VERSION
    assert os.path.basename(link(host, "current")).startswith(f"mlflow-{VERSION}-")
    unit = host.file(f"{HOME}/.config/systemd/user/mlflow.service").content_string
    assert f"ExecStart={VENVS}/current/bin/mlflow server" in unit
    assert f"ExecStart={VENVS}/current/bin/python" in host.file(f"{HOME}/.config/systemd/user/mlflow-gc.service").content_string
    assert not host.file(f"{HOME}/.config/mlflow/schema.stamp").exists
    # The database decides the migration: the first converge brought the new database to N's schema.
    assert schema_revision() == head_revision()


def test_a_new_virtualenv_failing_its_gate_is_switched_back(host, base_url, tmp_path):
    """A package set whose server cannot start (--expose-prometheus without its exporter): the
    replica goes back to the virtualenv it ran, serves again, and the play names the failed gate."""
    with open(os.path.join(SCENARIO_DIR, "..", "..", "roles", "mlflow_server", "defaults", "main.yml")) as fh:
        packages = yaml.safe_load(fh)["mlflow_server_pip_packages"]
    current = link(host, "current")
    rc, out = converge(tmp_path, mlflow_server_health_timeout=20,
                       mlflow_server_pip_packages=[p for p in packages if not p.startswith("prometheus-flask-exporter")])
    assert rc != 0
    assert "failed its gate (Wait for /health) on" in out, out[-3000:]
    assert f"back to {current} and restarted it; it answers /health again" in out, out[-3000:]
    assert link(host, "current") == current
    wait_until(lambda: serving(base_url), timeout=60, what="MLflow serving after the switch back")
    assert requests.get(f"{base_url}/version", timeout=5).text.strip() == VERSION


def test_unit_active_under_service_user_with_linger(host):
    assert user_systemctl(host, USER, "is-active mlflow.service").stdout.strip() == "active"
    assert user_systemctl(host, USER, "is-enabled mlflow.service").stdout.strip() == "enabled"
    assert host.file(f"/var/lib/systemd/linger/{USER}").exists


def test_no_mlflow_process_runs_as_root(host):
    procs = [line.split(None, 1) for line in host.check_output("ps -eo user:32=,args=").splitlines()]
    mlflow_procs = [(user, args) for user, args in procs
                    if "mlflow server" in args or "uvicorn" in args]
    assert mlflow_procs, "no MLflow process found"
    assert {user for user, _ in mlflow_procs} == {USER}, mlflow_procs


def test_secrets_only_in_the_0600_env_file(host):
    env = host.file(f"{HOME}/.config/mlflow/mlflow.env")
    assert (env.user, env.mode) == (USER, 0o600)
    assert "sslmode=verify-full" in env.content_string
    # URL-encoded, so the special characters of the password cannot break the URI.
    assert "Test-db%3Apa55%2Fw%40rd%25%3F%26" in env.content_string
    unit = host.file(f"{HOME}/.config/systemd/user/mlflow.service").content_string
    assert SCENARIO["scenario_s3_secret_key"] not in unit
    assert "Test-db" not in unit
    args = host.check_output("ps -eo args=")
    assert SCENARIO["scenario_s3_secret_key"] not in args and "Test-db" not in args


def test_cas_installed_0600(host):
    for path in (f"{HOME}/.postgresql/root.crt", f"{HOME}/.config/mlflow/s3-ca.pem"):
        ca = host.file(path)
        assert (ca.user, ca.mode) == (USER, 0o600), path
        assert "BEGIN CERTIFICATE" in ca.content_string, path
    env = host.file(f"{HOME}/.config/mlflow/mlflow.env").content_string
    assert f'AWS_CA_BUNDLE="{HOME}/.config/mlflow/s3-ca.pem"' in env


def test_unit_runs_uvicorn_with_the_promised_options(host):
    unit = host.file(f"{HOME}/.config/systemd/user/mlflow.service").content_string
    for expected in ("Restart=on-failure", "--timeout-keep-alive 75", "--allowed-hosts",
                     "--cors-allowed-origins", "--expose-prometheus", "ExecStartPre=/bin/rm -rf",
                     "--artifacts-destination s3://mlflow-artifacts/artifacts"):
        assert expected in unit
    assert "--gunicorn-opts" not in unit
    assert "uvicorn" in host.check_output("ps -eo args=")
    # MLflow's own app through the stack's wrapper, which bounds each worker's request threads.
    assert "--app-name mlflow-stack" in unit
    assert "mlflow_stack_server:app" in host.check_output("ps -eo args=")


def test_pool_serves_every_request_thread_twice(host):
    env = host.file(f"{HOME}/.config/mlflow/mlflow.env").content_string
    settings = dict(line.split("=", 1) for line in env.splitlines() if "=" in line and not line.startswith("#"))
    threads = int(settings["MLFLOW_STACK_SERVER_THREADS"])
    assert threads == 4
    assert int(settings["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"]) + int(settings["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"]) >= 2 * threads


def test_64_concurrent_clients_logging_batches_all_succeed(base_url):
    # runs/log-batch holds two database connections at once. With MLflow's 40 threads per worker
    # and a pool of 5 + 5, this stalled until SQLAlchemy's 30 s pool timeout and answered 500.
    # Bounded: 64 clients x 5 batches, each request given 120 s.
    from concurrent.futures import ThreadPoolExecutor

    api = f"{base_url}/api/2.0/mlflow"
    experiment = requests.post(f"{api}/experiments/create", json={"name": f"concurrency-{uuid.uuid4().hex[:8]}"},
                               timeout=30).json()["experiment_id"]

    def client(index):
        session = requests.Session()
        run_id = session.post(f"{api}/runs/create", json={"experiment_id": experiment}, timeout=120).json()["run"]["info"]["run_id"]
        codes = []
        for step in range(5):
            metrics = [{"key": f"m{i}", "value": i + step, "timestamp": int(time.time() * 1000), "step": step}
                       for i in range(10)]
            codes.append(session.post(f"{api}/runs/log-batch", json={"run_id": run_id, "metrics": metrics},
                                      timeout=120).status_code)
        return codes

    started = time.monotonic()
    with ThreadPoolExecutor(64) as pool:
        codes = [code for result in pool.map(client, range(64)) for code in result]
    print(f"64 clients x 5 log-batch: {len(codes)} requests in {time.monotonic() - started:.1f} s")
    assert codes == [200] * 320, {c: codes.count(c) for c in set(codes)}


def test_health_version_and_metrics(base_url):
    assert requests.get(f"{base_url}/health", timeout=5).text == "OK"
    assert requests.get(f"{base_url}/version", timeout=5).text.strip() == VERSION
    metrics = requests.get(f"{base_url}/metrics", timeout=5)
    assert metrics.status_code == 200 and "mlflow" in metrics.text


def test_foreign_host_header_is_refused(base_url):
    response = requests.post(f"{base_url}/api/2.0/mlflow/experiments/search", json={"max_results": 1},
                             headers={"Host": "evil.example"}, timeout=5)
    assert response.status_code == 403


def test_client_env_file_written_on_controller(base_url):
    path = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "mlflow-client.env")
    with open(path) as fh:
        assert f"MLFLOW_TRACKING_URI={base_url}\n" in fh.read()


def test_logged_run_artifact_lands_in_the_bucket(client, s3, tmp_path):
    experiment_id = client.create_experiment(f"molecule-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment_id)
    client.log_param(run.info.run_id, "alpha", "0.5")
    client.log_metric(run.info.run_id, "rmse", 0.42)
    payload = f"artifact of {run.info.run_id}\n"
    artifact = tmp_path / "hello.txt"
    artifact.write_text(payload)
    client.log_artifact(run.info.run_id, str(artifact))
    client.set_terminated(run.info.run_id)

    assert client.get_run(run.info.run_id).data.metrics["rmse"] == 0.42
    keys = [obj["Key"] for obj in s3.list_objects_v2(Bucket=SCENARIO["scenario_s3_bucket"],
                                                      Prefix="artifacts/").get("Contents", [])]
    matches = [k for k in keys if k.endswith(f"{run.info.run_id}/artifacts/hello.txt")]
    assert matches, keys
    body = s3.get_object(Bucket=SCENARIO["scenario_s3_bucket"], Key=matches[0])["Body"].read().decode()
    assert body == payload


def test_back_within_15_seconds_after_kill_9(host, base_url):
    before = main_pid(host)
    assert before > 0
    host.run(f"kill -9 {before}")
    started = time.monotonic()
    wait_until(lambda: main_pid(host) not in (0, before) and serving(base_url),
               timeout=RESTART_BUDGET, interval=0.5, what="MLflow serving again after kill -9")
    took = time.monotonic() - started
    message = f"MLflow served again {took:.1f}s after kill -9 (target {RESTART_TARGET:.0f}s)"
    print(message)
    if took > RESTART_TARGET:
        warnings.warn(message + ": over target, is the machine busy?", stacklevel=1)


def test_back_after_container_restart_without_login(host, base_url):
    restart_container(host)
    wait_until(lambda: serving(base_url), timeout=120, what="MLflow serving after a restart of its host")
    sessions = host.run("loginctl list-sessions --no-legend").stdout.strip()
    assert sessions == "", f"someone is logged in: {sessions}"


def _other_ca_pem():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Some other CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def converge(tmp_path, **extra_vars):
    """Run the scenario's converge.yml again with extra vars; returns (rc, output on one line)."""
    project = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.path.dirname(os.path.dirname(SCENARIO_DIR)))
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0")
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", os.path.join(project, ".collections"))
    env.setdefault("ANSIBLE_ROLES_PATH", os.path.join(project, "roles"))
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps(extra_vars))
    run = subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], os.path.join(SCENARIO_DIR, "converge.yml"),
         "-e", f"@{extra}"],
        capture_output=True, text=True, env=env, timeout=900)
    return run.returncode, " ".join((run.stdout + run.stderr).split())


def test_wrong_ca_fails_in_preflight_and_server_keeps_serving(host, base_url, tmp_path):
    wait_until(lambda: serving(base_url), timeout=60, what="MLflow serving before the wrong-CA converge")
    pid_before = main_pid(host)
    ca_before = hashlib.sha256(host.file(f"{HOME}/.postgresql/root.crt").content).hexdigest()

    rc, output = converge(tmp_path, mlflow_server_db_ca_url="", mlflow_server_db_ca_content=_other_ca_pem())
    assert rc != 0, output
    assert "Preflight failed" in output and "mlflow_server_db_ca_content" in output, output[-3000:]

    assert serving(base_url)
    assert main_pid(host) == pid_before, "the server was restarted by a converge that failed preflight"
    assert hashlib.sha256(host.file(f"{HOME}/.postgresql/root.crt").content).hexdigest() == ca_before


def test_gc_timer_enabled_and_its_run_succeeds(host):
    assert user_systemctl(host, USER, "is-enabled mlflow-gc.timer").stdout.strip() == "enabled"
    assert user_systemctl(host, USER, "is-active mlflow-gc.timer").stdout.strip() == "active"
    started = user_systemctl(host, USER, "start mlflow-gc.service")
    assert started.rc == 0, started.stdout + started.stderr
    result = user_systemctl(host, USER, "show -p Result --value mlflow-gc.service").stdout.strip()
    assert result == "success"
    unit = host.file(f"{HOME}/.config/systemd/user/mlflow-gc.service").content_string
    for secret in (SCENARIO["scenario_db_password"], SCENARIO["scenario_s3_secret_key"]):
        assert secret not in unit
    assert "postgresql://" not in unit


TARGET = SCENARIO["scenario_symlink_target"]


def account(host):
    """Shell, password hash and groups of the service user, as root reads them."""
    return (host.check_output("getent passwd %s", USER).split(":")[6],
            host.check_output("getent shadow %s", USER).split(":")[1],
            sorted(host.check_output("id -nG %s", USER).split()))


def test_the_existing_login_account_kept_its_shell_password_and_groups(host):
    shell, password, groups = account(host)
    assert shell == "/bin/bash"
    assert password == SCENARIO["scenario_login_password_hash"]
    assert "users" in groups


def test_a_login_account_is_refused_without_the_opt_in(host, tmp_path):
    before, pid = account(host), main_pid(host)
    rc, out = converge(tmp_path, mlflow_server_user_use_login_account=False)
    assert rc != 0
    assert "mlflow_server_user 'mlflow' is an existing login account (login shell /bin/bash)" in out, out[-3000:]
    assert "set mlflow_server_user_use_login_account to true" in out
    assert account(host) == before
    assert main_pid(host) == pid


def test_a_ca_over_plain_http_without_a_checksum_is_refused(host, tmp_path):
    pid = main_pid(host)
    rc, out = converge(tmp_path, mlflow_server_db_ca_checksum="")
    assert rc != 0
    assert "plain http to another host, and mlflow_server_db_ca_checksum is empty" in out, out[-3000:]
    assert "Use an https URL, pin the CA with mlflow_server_db_ca_checksum" in out
    assert main_pid(host) == pid


def test_a_plain_http_s3_endpoint_on_another_host_is_refused(host, tmp_path):
    pid = main_pid(host)
    rc, out = converge(tmp_path, mlflow_server_s3_endpoint_url="http://%s:%s" % (
        SCENARIO["scenario_s3_host"], SCENARIO["scenario_s3_port"]))
    assert rc != 0
    assert "plain http to another host" in out and "set mlflow_server_s3_allow_plain_http to true" in out, out[-3000:]
    assert main_pid(host) == pid


def test_a_directory_the_service_user_turned_into_a_symlink_is_refused(host, tmp_path):
    """~/.postgresql pointed at a root directory: root would have created root.crt there and
    handed the directory to the service user. The converge stops instead, and nothing changes."""
    target_dir = TARGET + ".d"
    host.run_expect([0], "install -d -o root -g root -m 0755 %s", target_dir)
    moved = host.run("su -s /bin/sh %s -c 'mv %s/.postgresql %s/.postgresql.real && ln -s %s %s/.postgresql'",
                     USER, HOME, HOME, target_dir, HOME)
    assert moved.rc == 0, moved.stderr
    try:
        pid = main_pid(host)
        rc, out = converge(tmp_path)
        assert rc != 0
        assert "%s/.postgresql -> %s" % (HOME, target_dir) in out, out[-3000:]
        assert "the role does not write through a link the service user controls" in out
        directory = host.file(target_dir)
        assert (directory.user, directory.group, directory.mode) == ("root", "root", 0o755)
        assert host.check_output("ls -A %s", target_dir) == ""
        assert main_pid(host) == pid
    finally:
        host.run("su -s /bin/sh %s -c 'rm %s/.postgresql && mv %s/.postgresql.real %s/.postgresql'", USER, HOME, HOME, HOME)
        host.run("rmdir %s", target_dir)


def test_files_the_service_user_turned_into_symlinks_are_replaced_not_written_through(host, tmp_path):
    paths = [f"{HOME}/.postgresql/root.crt", f"{HOME}/.config/mlflow/mlflow.env",
             f"{HOME}/.config/systemd/user/mlflow.service"]
    for path in paths:
        planted = host.run("su -s /bin/sh %s -c 'ln -sfn %s %s'", USER, TARGET, path)
        assert planted.rc == 0, planted.stderr
    rc, out = converge(tmp_path)
    assert rc == 0, out[-3000:]
    target = host.file(TARGET)
    assert (target.user, target.group, target.mode) == ("root", "root", 0o644)
    assert target.content_string == SCENARIO["scenario_symlink_target_content"]
    for path in paths:
        written = host.file(path)
        assert not written.is_symlink and written.is_file, path
        assert written.user == USER, path
    assert user_systemctl(host, USER, "is-active mlflow.service").stdout.strip() == "active"
