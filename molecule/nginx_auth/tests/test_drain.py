"""A replica can restart without a client noticing: tasks_from: drain takes it out of rotation
(nginx reloads gracefully and waits for the requests it still carries), the replica stops and
starts again, and draining nothing puts it back. A client posting through nginx the whole time
sees only 200s. Refusals leave the rotation as it was.

Leaves both replicas in rotation, as the other files of this scenario expect."""

import os
import re
import shlex
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
UPSTREAMS = "/etc/nginx/nginx_auth_upstreams.conf"
LOG = "/tmp/drain-client.log"
STOP = "/tmp/drain-client.stop"
# POST (never retried by nginx on another replica) to the echo upstreams, one line per answer:
# "<time> <HTTP status> <replica port>". Bounded to 180 s whatever happens to the test.
CLIENT = r"""
end=$(( $(date +%s) + 180 ))
rm -f {log} {stop}
while [ ! -e {stop} ] && [ "$(date +%s)" -lt "$end" ]; do
  code=$(curl -s -o /tmp/drain-client.body -w '%{{http_code}}' -X POST --data-binary run=1 -u {cred} \
    --cacert /etc/nginx_auth/tls/ca.crt --resolve mlflow.test:443:127.0.0.1 https://mlflow.test/api/replica)
  port=$(grep -o '"port": [0-9]*' /tmp/drain-client.body | tr -dc 0-9)
  echo "$(date +%s.%N) $code $port" >> {log}
done
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


@pytest.fixture()
def client(host):
    users = host.ansible.get_variables()["nginx_auth_users"]
    cred = shlex.quote("alice:" + next(u["password"] for u in users if u["name"] == "alice"))
    script = CLIENT.format(log=LOG, stop=STOP, cred=cred)
    host.run("setsid sh -c %s >/dev/null 2>&1 < /dev/null &", script)
    time.sleep(1)
    yield
    host.run(f"touch {STOP}")
    time.sleep(1)


def test_a_drained_replica_restarts_and_no_client_request_fails(host, client):
    try:
        rc, out = drain(["127.0.0.1:5001"])
        assert rc == 0, out[-3000:]
        assert "127.0.0.1:5001 down;" in host.file(UPSTREAMS).content_string
        drained_at = time.time()
        time.sleep(1)
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
        assert " down" not in host.file(UPSTREAMS).content_string
        undrained_at = time.time()
        time.sleep(2)
    finally:
        host.run("systemctl start echo-upstream@5001.service")
    host.run(f"touch {STOP}")
    time.sleep(1)
    seen = answers(host)
    failed = [a for a in seen if a[1] != "200"]
    print(f"client requests through nginx: {len(seen)}, failed: {len(failed)}")
    assert len(seen) > 20, seen
    assert not failed, failed[:10]
    while_drained = [a for a in seen if drained_at <= float(a[0]) <= back_at]
    assert while_drained and {a[2] for a in while_drained} == {"5000"}, while_drained[:10]
    after = {a[2] for a in seen if float(a[0]) > undrained_at}
    assert after == {"5000", "5001"}, "the replica put back gets requests again"


@pytest.mark.parametrize("replicas, message", [
    (["127.0.0.1:5000", "127.0.0.1:5001"], "leave at least one in rotation"),
    (["10.9.9.9:5000"], "must name replicas from nginx_auth_upstreams"),
])
def test_a_drain_that_would_stop_the_service_or_names_no_replica_is_refused(host, replicas, message):
    before = host.file(UPSTREAMS).content_string
    rc, out = drain(replicas)
    assert rc != 0 and message in out, out[-3000:]
    assert host.file(UPSTREAMS).content_string == before
    assert " down" not in before
