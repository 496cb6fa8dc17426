"""A replica can restart without a client noticing: tasks_from: drain takes it out of rotation
(the drain file names it, nginx_auth.js sends every new request to the pool without it; nginx is not
reloaded), the replica stops and starts again, and draining nothing puts it back. A client posting
through nginx the whole time on one keep-alive connection, as the MLflow client does, sees only 200s:
a reload would have closed that connection under it. Refusals leave the rotation as it was.

Leaves both replicas in rotation, as the other files of this scenario expect."""

import os
import re
import subprocess
import tempfile
import time

import pytest
import testinfra.utils.ansible_runner
import yaml

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts(
    "nginx_auth"
)

JOURNAL_UNITS = ["nginx.service", "echo-upstream@5001.service"]

PLAYBOOK = os.path.join(os.environ["MOLECULE_SCENARIO_DIRECTORY"], "drain.yml")
DRAIN = "/etc/nginx_auth/drain"
LOG = "/tmp/drain-client.log"
STOP = "/tmp/drain-client.stop"
# POST (never retried by nginx on another replica) to the echo upstreams on one keep-alive
# connection, no retries; one line per answer: "<time> <HTTP status or error> <replica port>".
# Bounded to 180 s whatever happens to the test.
CLIENT = r"""
import base64, http.client, json, os, socket, ssl, sys, time
log, stop, cred = sys.argv[1:4]
end = time.time() + 180
context = ssl.create_default_context(cafile="/etc/nginx_auth/tls/ca.crt")
headers = {"Authorization": "Basic " + base64.b64encode(cred.encode()).decode(),
           "Content-Type": "application/x-www-form-urlencoded"}

class Connection(http.client.HTTPSConnection):  # mlflow.test at 127.0.0.1
    def connect(self):
        self.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", 443), self.timeout),
                                        server_hostname="mlflow.test")

conn = None
with open(log, "w") as out:
    while not os.path.exists(stop) and time.time() < end:
        conn = conn or Connection("mlflow.test", 443, context=context, timeout=30)
        try:
            conn.request("POST", "/api/replica", body=b"run=1", headers=headers)
            response = conn.getresponse()
            body = response.read()
            status = str(response.status)
            port = str(json.loads(body).get("port", "-")) if response.status == 200 else "-"
            if response.will_close:
                conn.close()
                conn = None
        except Exception as exc:
            status, port = type(exc).__name__, "-"
            conn.close()
            conn = None
        out.write("%f %s %s\n" % (time.time(), status, port))
        out.flush()
"""


def drain(replicas):
    cmd = ["ansible-playbook", "-i", os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"]), PLAYBOOK]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", dir=os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) as fh:
        yaml.safe_dump({"nginx_auth_drain": replicas}, fh)
        fh.flush()
        cmd += ["-e", f"@{fh.name}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0"))
    return proc.returncode, re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)


def answers(host):
    return [line.split() for line in host.file(LOG).content_string.splitlines()]


def nginx_processes(host):
    return sorted(host.check_output("pgrep -f 'nginx: (master|worker) process'").split())


@pytest.fixture()
def client(host):
    users = host.ansible.get_variables()["nginx_auth_users"]
    cred = "alice:" + next(u["password"] for u in users if u["name"] == "alice")
    host.run(f"rm -f {STOP} {LOG}")
    host.run("setsid python3 -c %s %s %s %s >/dev/null 2>&1 < /dev/null &", CLIENT, LOG, STOP, cred)
    time.sleep(1)
    yield
    host.run(f"touch {STOP}")
    time.sleep(1)


def test_a_drained_replica_restarts_and_no_client_request_fails(host, client):
    processes = nginx_processes(host)
    try:
        rc, out = drain(["127.0.0.1:5001"])
        assert rc == 0, out[-3000:]
        assert host.file(DRAIN).content_string == "1\n"
        drained_at = time.time()
        assert host.run("systemctl stop echo-upstream@5001.service").rc == 0
        time.sleep(2)
        assert host.run("systemctl start echo-upstream@5001.service").rc == 0
        for _ in range(50):
            if host.socket("tcp://127.0.0.1:5001").is_listening:
                break
            time.sleep(0.2)
        back_at = time.time()
        rc, out = drain([])
        assert rc == 0, out[-3000:]
        assert host.file(DRAIN).content_string == ""
        undrained_at = time.time()
        time.sleep(2)
    finally:
        host.run("systemctl start echo-upstream@5001.service")
    host.run(f"touch {STOP}")
    time.sleep(1)
    seen = answers(host)
    failed = [a for a in seen if a[1] != "200"]
    print(f"client requests through nginx on one keep-alive connection: {len(seen)}, failed: {len(failed)}")
    assert len(seen) > 20, seen
    assert not failed, failed[:10]
    # nginx was not reloaded: the same master and workers served throughout.
    assert nginx_processes(host) == processes
    while_drained = [a for a in seen if drained_at <= float(a[0]) <= back_at]
    assert while_drained and {a[2] for a in while_drained} == {"5000"}, while_drained[:10]
    after = {a[2] for a in seen if float(a[0]) > undrained_at}
    assert after == {"5000", "5001"}, "the replica put back gets requests again"


@pytest.mark.parametrize("replicas, message", [
    (["127.0.0.1:5000", "127.0.0.1:5001"], "leave at least one in rotation"),
    (["10.9.9.9:5000"], "must name one replica from nginx_auth_upstreams"),
])
def test_a_drain_that_would_stop_the_service_or_names_no_replica_is_refused(host, replicas, message):
    before = host.file(DRAIN).content_string
    rc, out = drain(replicas)
    assert rc != 0 and message in " ".join(out.split()), out[-3000:]
    assert host.file(DRAIN).content_string == before == ""
