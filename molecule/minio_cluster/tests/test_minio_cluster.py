"""A 4-node x 2-drive MinIO deployment made by the minio role: every node runs with the same
volumes, the deployment reports all servers and drives online, and with one node stopped
the MLflow key still writes and reads; the node rejoins when it comes back."""

import json
import os
import secrets
import subprocess
import time

import boto3
import testinfra.utils.ansible_runner
import urllib3
from botocore.config import Config
from minio import MinioAdmin
from minio.credentials import StaticProvider

RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
testinfra_hosts = RUNNER.get_hosts("minio")
JOURNAL_UNITS = ["minio.service"]
NODES = ["minio_cluster-minio%d" % i for i in range(1, 5)]
VARS = RUNNER.get_variables(NODES[0])
CA = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "pki", "ca.crt")
HEALTH = ("import urllib.request,ssl;print(urllib.request.urlopen('https://localhost:9000%s',"
          "context=ssl.create_default_context(cafile='/etc/minio/certs/CAs/ca.crt')).status)")


def ip_of(container):
    return subprocess.check_output(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container],
        text=True).strip()


def admin(container):
    return MinioAdmin(endpoint="%s:9000" % ip_of(container),
                      credentials=StaticProvider(VARS["minio_root_user"], VARS["minio_root_password"]), secure=True,
                      http_client=urllib3.PoolManager(ca_certs=CA, timeout=urllib3.Timeout(connect=5, read=30),
                                                      retries=False))


def s3(container):
    return boto3.client("s3", endpoint_url="https://%s:9000" % ip_of(container), aws_access_key_id="mlflow",
                        aws_secret_access_key=VARS["minio_test_mlflow_secret"], region_name="us-east-1", verify=CA,
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                                      connect_timeout=5, read_timeout=30))


def online(container):
    info = json.loads(admin(container).info())
    servers = [s for s in info["servers"] if s.get("state") == "online"]
    drives = [d for s in info["servers"] for d in s.get("drives", []) if d.get("state") == "ok"]
    return len(servers), len(drives)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # a node coming back refuses connections for a moment
            last = exc
        time.sleep(2)
    raise AssertionError("timed out after %ss waiting for %s; last: %r" % (timeout, what, last))


def health(host, path):
    return host.check_output("python3 -c \"%s\"" % (HEALTH % path))


def test_service_active_as_minio_user(host):
    assert host.service("minio.service").is_running
    pid = host.check_output("systemctl show -p MainPID --value minio.service")
    assert host.check_output("ps -o user= -p %s" % pid) == "minio"


def test_every_node_has_the_same_eight_drive_layout(host):
    env = host.file("/etc/minio/minio.env").content_string
    volumes = [line for line in env.splitlines() if line.startswith("MINIO_VOLUMES=")][0]
    expected = " ".join("https://minio%d:9000/srv/minio/disk%d" % (n, d) for n in range(1, 5) for d in (1, 2))
    assert volumes == 'MINIO_VOLUMES="%s"' % expected


def test_node_reports_cluster_health(host):
    assert health(host, "/minio/health/live") == "200"
    assert health(host, "/minio/health/cluster") == "200"


def test_all_servers_and_drives_online():
    assert online(NODES[0]) == (4, 8)


def test_survives_one_node_down():
    down = NODES[3]
    key = "outage/%s.bin" % secrets.token_hex(4)
    before = os.urandom(256 * 1024)
    client = s3(NODES[0])
    client.put_object(Bucket="mlflow", Key=key, Body=before)
    subprocess.run(["docker", "stop", "-t", "20", down], check=True, capture_output=True)
    try:
        wait_for(lambda: online(NODES[0])[0] == 3, 60, "the deployment to notice the stopped node")
        # Reads of old data and new writes through every remaining node.
        for node in NODES[:3]:
            other = s3(node)
            assert other.get_object(Bucket="mlflow", Key=key)["Body"].read() == before
            new_key = "outage/%s-%s.txt" % (node, secrets.token_hex(3))
            other.put_object(Bucket="mlflow", Key=new_key, Body=b"written with a node down")
            assert other.get_object(Bucket="mlflow", Key=new_key)["Body"].read() == b"written with a node down"
        status = subprocess.run(["docker", "exec", NODES[0], "python3", "-c", HEALTH % "/minio/health/cluster"],
                                capture_output=True, text=True)
        assert status.stdout.strip() == "200", "write quorum lost with one node down"
    finally:
        subprocess.run(["docker", "start", down], check=True, capture_output=True)
    wait_for(lambda: online(NODES[0]) == (4, 8), 180, "all 4 servers and 8 drives online again")
    assert s3(down).get_object(Bucket="mlflow", Key=key)["Body"].read() == before
