"""The minio role keeps its promises on one node: MinIO runs sandboxed as its own user with
TLS from the stack's CA, the buckets exist, the MLflow key can write only its own bucket,
and neither default credentials nor secrets on command lines survive."""

import io
import os
import secrets

import boto3
import pytest
import testinfra.utils.ansible_runner
import urllib3
from botocore.config import Config
from botocore.exceptions import ClientError
from minio import Minio

RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
testinfra_hosts = RUNNER.get_hosts("all")
JOURNAL_UNITS = ["minio.service"]
CA = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "pki", "ca.crt")


@pytest.fixture()
def hostvars(host):
    return RUNNER.get_variables(getattr(host.backend, "host", None) or host.backend.name)


@pytest.fixture()
def url(host):
    return "https://%s:9000" % host.check_output("hostname -I").split()[0]


def s3(url, access_key, secret_key):
    return boto3.client("s3", endpoint_url=url, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                        region_name="us-east-1", verify=CA,
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def minio_pid(host):
    return host.check_output("systemctl show -p MainPID --value minio.service")


def test_service_active_as_minio_user(host):
    assert host.service("minio.service").is_running
    assert host.service("minio.service").is_enabled
    assert host.check_output("ps -o user= -p %s" % minio_pid(host)) == "minio"
    user = host.user("minio")
    assert user.shell == "/usr/sbin/nologin"


def test_health_endpoints_over_tls(host):
    for path in ("/minio/health/live", "/minio/health/cluster"):
        code = host.check_output(
            "python3 -c \"import urllib.request,ssl;"
            "print(urllib.request.urlopen('https://localhost:9000%s',"
            "context=ssl.create_default_context(cafile='/etc/minio/certs/CAs/ca.crt')).status)\"" % path)
        assert code == "200", path


def test_plain_http_is_not_served(url):
    http = urllib3.PoolManager(retries=False, timeout=5)
    response = http.request("GET", url.replace("https://", "http://") + "/minio/health/live")
    # MinIO answers plain HTTP on a TLS port with 400 (it does not serve the API unencrypted).
    assert response.status == 400


def test_buckets_exist_with_their_settings(url, hostvars):
    root = s3(url, hostvars["minio_root_user"], hostvars["minio_root_password"])
    names = {b["Name"] for b in root.list_buckets()["Buckets"]}
    assert {"mlflow", "scratch"} <= names
    assert root.get_bucket_versioning(Bucket="mlflow")["Status"] == "Enabled"
    rules = root.get_bucket_lifecycle_configuration(Bucket="scratch")["Rules"]
    assert rules[0]["Expiration"]["Days"] == 7


def test_mlflow_key_writes_its_bucket_only(url, hostvars):
    mlflow = s3(url, "mlflow", hostvars["minio_test_mlflow_secret"])
    key = "molecule/%s.txt" % secrets.token_hex(4)
    mlflow.put_object(Bucket="mlflow", Key=key, Body=b"artifact")
    assert mlflow.get_object(Bucket="mlflow", Key=key)["Body"].read() == b"artifact"
    for call in (lambda: mlflow.put_object(Bucket="scratch", Key=key, Body=b"x"),
                 lambda: mlflow.list_objects_v2(Bucket="scratch"),
                 lambda: mlflow.create_bucket(Bucket="mlflow-" + secrets.token_hex(3))):
        with pytest.raises(ClientError) as denied:
            call()
        assert denied.value.response["Error"]["Code"] == "AccessDenied"


def test_default_root_credentials_rejected(url):
    client = Minio(url.split("//")[1], access_key="minioadmin", secret_key="minioadmin", secure=True,
                   http_client=urllib3.PoolManager(ca_certs=CA))
    with pytest.raises(Exception) as err:
        client.list_buckets()
    assert "InvalidAccessKeyId" in str(err.value)


def test_no_secret_on_the_command_line(host, hostvars):
    cmdline = host.file("/proc/%s/cmdline" % minio_pid(host)).content_string.replace("\0", " ")
    assert hostvars["minio_root_password"] not in cmdline
    assert "--certs-dir /etc/minio/certs" in cmdline


@pytest.mark.parametrize("path, user, group, mode", [
    ("/etc/minio/minio.env", "root", "minio", 0o640),
    ("/etc/minio/tls/minio.key", "root", "minio", 0o640),
    ("/etc/minio", "root", "minio", 0o750),
    ("/var/lib/minio/data", "minio", "minio", 0o750),
])
def test_file_modes(host, path, user, group, mode):
    f = host.file(path)
    assert f.exists
    assert (f.user, f.group, f.mode) == (user, group, mode)


def test_environment_file_holds_the_credentials(host, hostvars):
    content = host.file("/etc/minio/minio.env").content_string
    assert 'MINIO_ROOT_PASSWORD="%s"' % hostvars["minio_root_password"] in content
    assert 'MINIO_VOLUMES="/var/lib/minio/data"' in content


def test_binary_matches_the_pinned_checksum(host):
    target = host.file("/usr/local/bin/minio").linked_to
    assert target.startswith("/usr/local/lib/minio/minio-")
    assert host.file(target).sha256sum == target.rsplit("-", 1)[1]


def test_unit_sandboxing_in_effect(host):
    props = dict(line.split("=", 1) for line in host.check_output(
        "systemctl show minio.service -p NoNewPrivileges -p ProtectSystem -p ProtectHome -p PrivateTmp "
        "-p PrivateDevices -p ProtectKernelTunables -p CapabilityBoundingSet -p LimitNOFILE -p Restart "
        "-p ReadWritePaths -p MemoryDenyWriteExecute").splitlines())
    assert props["NoNewPrivileges"] == "yes"
    assert props["ProtectSystem"] == "strict"
    assert props["ProtectHome"] == "yes"
    assert props["PrivateTmp"] == "yes"
    assert props["PrivateDevices"] == "yes"
    assert props["ProtectKernelTunables"] == "yes"
    assert props["MemoryDenyWriteExecute"] == "yes"
    assert props["CapabilityBoundingSet"] == ""
    assert props["LimitNOFILE"] == "65536"
    assert props["Restart"] == "always"
    assert props["ReadWritePaths"] == "/var/lib/minio/data"
    pid = minio_pid(host)
    assert "NoNewPrivs:\t1" in host.file("/proc/%s/status" % pid).content_string
    # Enforced, not only configured: in the unit's mount namespace / is read-only and the data directory writable.
    mounts = {}
    for line in host.file("/proc/%s/mountinfo" % pid).content_string.splitlines():
        fields = line.split()
        mounts[fields[4]] = fields[5].split(",")[0]
    assert mounts["/"] == "ro"
    assert mounts["/var/lib/minio/data"] == "rw"
