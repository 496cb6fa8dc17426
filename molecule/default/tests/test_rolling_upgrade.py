"""Upgrades that clients do not notice. The stack converged two replicas behind nginx on the
previous MLflow release (converge.yml); while a client logs and reads through nginx without
retries, playbooks/upgrade_mlflow_server.yml first tries a version that does not exist (the play
fails naming it, both replicas keep serving the previous release) and then moves both replicas,
one at a time, to the collection's version. The client sees no failed request, not even one
retried, and the test reports how many it made and the longest latency.

Runs before every other test of the scenario (conftest.py): they meet the upgraded stack."""

import json
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
import testinfra

testinfra_hosts = ["default-mlflow"]

ROOT = Path(__file__).resolve().parents[3]
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
INVENTORY = EPHEMERAL / "inventory"
CA = INVENTORY / ".pki" / "ca.crt"
URL = "https://localhost:9443"
PREVIOUS = next(line.split("==")[1].strip() for line in (ROOT / "molecule" / "_shared" / "wheelhouse-previous.txt")
                .read_text().splitlines() if line.startswith("mlflow=="))
# The collection's version: the stack's default, which this scenario's inventory does not change.
CURRENT = next(line.split('"')[1] for line in (ROOT / "roles" / "stack" / "defaults" / "main.yml").read_text()
               .splitlines() if line.startswith("mlflow_stack_mlflow_version:"))


def playbook(name, *args):
    env = dict(os.environ, ANSIBLE_CONFIG=str(EPHEMERAL / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"), ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    out = subprocess.run(["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"],
                          str(ROOT / "playbooks" / name), "-e", "mlflow_stack_public_port=9443"] + list(args),
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    return out.returncode, out.stdout + out.stderr


def upgrade(version):
    return playbook("upgrade_mlflow_server.yml", "-e", "mlflow_stack_mlflow_version=%s" % version)


def replica_versions():
    """/version of each replica, asked from the nginx host the way nginx reaches them."""
    nginx = testinfra.get_host("ansible://default-mlflow?ansible_inventory=%s" % INVENTORY)
    replica2 = subprocess.check_output(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "default-mlflow2"],
        text=True).strip()
    versions = {}
    for name, upstream in (("default-mlflow", "127.0.0.1:5000"), ("default-mlflow2", replica2 + ":5000")):
        versions[name] = nginx.check_output(
            "python3 -c 'import sys, urllib.request; r = urllib.request.Request(sys.argv[1], headers={\"Host\": \"localhost\"}); "
            "print(urllib.request.urlopen(r, timeout=10).read().decode())' http://%s/version" % upstream).strip()
    return versions


STATE = {}


class Client(threading.Thread):
    """A training job through nginx: log a batch of metrics, read the run back, search experiments;
    a new run every 20 rounds. Plain requests, no retries: every failure counts."""

    def __init__(self, password):
        super().__init__(daemon=True)
        self.session = requests.Session()
        self.session.auth = ("admin", password)
        self.stop = threading.Event()
        self.requests, self.failures, self.slowest = 0, [], 0.0

    def call(self, method, path, **kwargs):
        start = time.monotonic()
        try:
            # verify per request: a session's own would yield to REQUESTS_CA_BUNDLE from the environment.
            response = self.session.request(method, URL + "/api/2.0/mlflow/" + path, timeout=60, verify=str(CA),
                                            **kwargs)
            ok, what = response.status_code == 200, "HTTP %d" % response.status_code
            body = response.json() if ok else None
        except requests.RequestException as exc:
            ok, what, body = False, type(exc).__name__, None
        elapsed = time.monotonic() - start
        self.requests += 1
        self.slowest = max(self.slowest, elapsed)
        if not ok:
            self.failures.append((time.strftime("%H:%M:%S"), method, path, what))
        return body

    def run(self):
        experiment = None
        while experiment is None and not self.stop.is_set():
            experiment = self.call("POST", "experiments/create", json={"name": "rolling-%s" % uuid.uuid4().hex[:8]})
            if experiment is None:
                time.sleep(1)
        if experiment is None:
            return
        experiment_id = experiment["experiment_id"]
        run_id, step = None, 0
        while not self.stop.is_set():
            if run_id is None or step % 20 == 0:
                created = self.call("POST", "runs/create", json={"experiment_id": experiment_id,
                                                                 "start_time": int(time.time() * 1000)})
                run_id = created["run"]["info"]["run_id"] if created else run_id
            if run_id:
                now = int(time.time() * 1000)
                self.call("POST", "runs/log-batch", json={"run_id": run_id, "metrics": [
                    {"key": "m%d" % i, "value": step * 0.1 + i, "timestamp": now, "step": step} for i in range(10)]})
                self.call("GET", "runs/get", params={"run_id": run_id})
            self.call("POST", "experiments/search", json={"max_results": 5})
            step += 1


@pytest.fixture()
def client():
    password = (INVENTORY / ".secrets" / "nginx_admin_password").read_text().split()[0]
    c = Client(password)
    c.start()
    time.sleep(2)
    yield c
    c.stop.set()
    c.join(timeout=90)


def report(c, what):
    print("%s: %d requests through nginx, %d failed, longest %.2f s" % (what, c.requests, len(c.failures), c.slowest))


def test_the_stack_starts_on_the_previous_release():
    assert PREVIOUS != CURRENT
    assert replica_versions() == {"default-mlflow": PREVIOUS, "default-mlflow2": PREVIOUS}


def test_an_upgrade_to_a_version_that_cannot_install_changes_nothing(client):
    rc, out = upgrade("3.99.0")
    client.stop.set()
    client.join(timeout=90)
    report(client, "failed upgrade")
    assert rc != 0, out[-3000:]
    assert "3.99.0" in out and "The upgrade of default-mlflow failed" in out, out[-3000:]
    assert replica_versions() == {"default-mlflow": PREVIOUS, "default-mlflow2": PREVIOUS}
    assert client.requests > 20 and not client.failures, client.failures[:10]


VENVS = "/home/mlflow/venvs"


def virtualenvs():
    """Each replica's virtualenvs directory: what current and previous point at, and every entry."""
    found = {}
    for name in ("default-mlflow", "default-mlflow2"):
        replica = testinfra.get_host("ansible://%s?ansible_inventory=%s" % (name, INVENTORY))
        found[name] = (replica.check_output("readlink %s/current", VENVS), replica.check_output("readlink %s/previous || true", VENVS),
                       sorted(replica.check_output("ls -A %s", VENVS).split()))
    return found


def backups(host):
    return [b["id"] for b in json.loads(host.check_output("mlflow-stack-backup list").splitlines()[-1])["backups"]]


def test_a_rolling_upgrade_that_clients_do_not_notice(host, client):
    before, venvs_before = backups(host), virtualenvs()
    rc, out = upgrade(CURRENT)
    client.stop.set()
    client.join(timeout=90)
    report(client, "rolling upgrade %s -> %s" % (PREVIOUS, CURRENT))
    assert rc == 0, out[-4000:]
    assert replica_versions() == {"default-mlflow": CURRENT, "default-mlflow2": CURRENT}
    # Each replica left the rotation for its restart and came back.
    assert out.count("TASK [Take this replica out of rotation on every nginx host]") == 2, out[-3000:]
    # Built beside the running one: the previous virtualenv stays as `previous`, nothing else is kept
    # (the failed install's half-built one was removed).
    for name, (current, previous, entries) in virtualenvs().items():
        old = venvs_before[name][0]
        assert os.path.basename(current).startswith("mlflow-%s-" % CURRENT) and previous == old, (name, current, previous)
        assert entries == sorted(["current", "previous", os.path.basename(old), os.path.basename(current)]), (name, entries)
    assert client.requests > 100, client.requests
    assert not client.failures, client.failures[:10]
    # The upgrade's first play took a backup, at the previous release's schema.
    STATE["pre_upgrade_backup"] = [b for b in backups(host) if b not in before][0]


def test_a_backup_from_before_the_upgrade_restores_and_the_database_decides_the_migration():
    """restore.yml of the backup the upgrade took: the restored database is at the previous release's
    schema, and the start entry point migrates it (alembic_version decides, not a stamp) before MLflow starts."""
    if "pre_upgrade_backup" not in STATE:
        pytest.skip("the rolling upgrade did not complete")
    rc, out = playbook("restore.yml", "-e", "backup_id=%s" % STATE["pre_upgrade_backup"],
                       "-e", '{"backup_what": ["database"]}')
    assert rc == 0, out[-4000:]
    assert "Migrated the database from schema" in " ".join(out.split()), out[-3000:]
    assert replica_versions() == {"default-mlflow": CURRENT, "default-mlflow2": CURRENT}
    password = (INVENTORY / ".secrets" / "nginx_admin_password").read_text().split()[0]
    response = requests.post(URL + "/api/2.0/mlflow/experiments/search", json={"max_results": 5},
                             auth=("admin", password), verify=str(CA), timeout=60)
    assert response.status_code == 200, response.text[:500]
