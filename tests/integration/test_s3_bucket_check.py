"""s3_bucket_check against a real MinIO on loopback: a restricted key proves it can write its
own bucket, and each kind of misconfiguration an operator can make ends in its own
error_class. The module runs as Ansible runs it: its file executed with an args file."""

import io
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minio_server import ROOT, MinioServer, bucket_policy, free_port, minio_binary  # noqa: E402

MODULE = ROOT / "plugins" / "modules" / "s3_bucket_check.py"
BINARY = minio_binary()
pytestmark = pytest.mark.skipif(BINARY is None, reason="MinIO binary absent and scripts/build-minio.sh could not build it")

BUCKET = "mlflow"
OTHER_BUCKET = "other"


class Key:
    def __init__(self, access_key, secret_key):
        self.access_key = access_key
        self.secret_key = secret_key


def _add_user(admin, name, buckets, write=True):
    key = Key(name + "-" + secrets.token_hex(3), secrets.token_urlsafe(24))
    policy_name = key.access_key + "-policy"
    admin.policy_add(policy_name, policy=bucket_policy(buckets, write=write))
    admin.user_add(key.access_key, key.secret_key)
    admin.policy_set(policy_name, user=key.access_key)
    return key


@pytest.fixture(scope="module")
def minio(tmp_path_factory):
    server = MinioServer(BINARY, tmp_path_factory.mktemp("minio-plain")).start()
    try:
        s3, admin = server.clients()
        for bucket in (BUCKET, OTHER_BUCKET):
            s3.make_bucket(bucket)
        s3.put_object(BUCKET, "1/seed/a.txt", io.BytesIO(b"a"), 1)
        s3.put_object(BUCKET, "1/seed/b.txt", io.BytesIO(b"b"), 1)
        server.mlflow_key = _add_user(admin, "mlflow", [BUCKET])
        server.reader_key = _add_user(admin, "reader", [BUCKET], write=False)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def minio_tls(tmp_path_factory):
    server = MinioServer(BINARY, tmp_path_factory.mktemp("minio-tls"), tls=True).start()
    try:
        s3, _ = server.clients()
        s3.make_bucket(BUCKET)
        yield server
    finally:
        server.stop()


def run_module(tmp_path, **args):
    args_file = tmp_path / ("args-%s.json" % secrets.token_hex(4))
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    os.chmod(args_file, 0o600)
    env = dict(os.environ, PYTHONPATH=str(ROOT / ".collections"))
    proc = subprocess.run([sys.executable, str(MODULE), str(args_file)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert args["secret_key"] not in proc.stdout + proc.stderr, "the secret key leaked into the module output"
    return json.loads(proc.stdout)


def as_key(server, key, **extra):
    args = dict(endpoint_url=server.url, access_key=key.access_key, secret_key=key.secret_key, bucket=BUCKET)
    args.update(extra)
    return args


def test_restricted_key_writes_its_bucket(minio, tmp_path):
    result = run_module(tmp_path, **as_key(minio, minio.mlflow_key, write_probe=True, count_prefix="1/"))
    assert not result.get("failed"), result
    assert result["exists"] is True and result["writable"] is True
    assert result["object_count"] == 2
    assert result["region"] == "us-east-1"
    assert result["changed"] is False
    s3, _ = minio.clients()
    leftovers = [o.object_name for o in s3.list_objects(BUCKET, prefix=".s3-bucket-check/", recursive=True)]
    assert leftovers == [], "the write probe left objects behind"


def test_read_only_key_is_not_writable(minio, tmp_path):
    result = run_module(tmp_path, **as_key(minio, minio.reader_key, write_probe=True))
    assert result["failed"] and result["error_class"] == "access_denied"
    assert result["exists"] is True and result["writable"] is False


def test_read_only_key_passes_without_probe(minio, tmp_path):
    result = run_module(tmp_path, **as_key(minio, minio.reader_key))
    assert not result.get("failed"), result
    assert result["writable"] is None


@pytest.mark.parametrize("case, expected", [
    ("unreachable", "unreachable"),
    ("unknown_key", "unknown_access_key"),
    ("wrong_secret", "signature_mismatch"),
    ("other_bucket", "access_denied"),
    ("missing_bucket", "no_such_bucket"),
])
def test_failure_classes(minio, tmp_path, case, expected):
    key = minio.mlflow_key
    args = as_key(minio, key)
    if case == "unreachable":
        args["endpoint_url"] = "http://127.0.0.1:%d" % free_port()
        args["timeout"] = 3
    elif case == "unknown_key":
        args["access_key"] = "nobody-" + secrets.token_hex(4)
    elif case == "wrong_secret":
        args["secret_key"] = secrets.token_urlsafe(24)
    elif case == "other_bucket":
        args["bucket"] = OTHER_BUCKET
    elif case == "missing_bucket":
        args.update(access_key=minio.root_user, secret_key=minio.root_password, bucket="no-such-" + secrets.token_hex(3))
    result = run_module(tmp_path, **args)
    assert result["failed"] is True
    assert result["error_class"] == expected, result["msg"]
    assert result["exists"] is False


def root_args(server, **extra):
    args = dict(endpoint_url=server.url, access_key=server.root_user, secret_key=server.root_password, bucket=BUCKET)
    args.update(extra)
    return args


def test_tls_without_the_ca_fails_verification(minio_tls, tmp_path):
    result = run_module(tmp_path, **root_args(minio_tls))
    assert result["failed"] and result["error_class"] == "tls_verify", result["msg"]
    assert "ca_bundle" in result["msg"]


def test_tls_with_the_ca_bundle_succeeds(minio_tls, tmp_path):
    result = run_module(tmp_path, **root_args(minio_tls, ca_bundle=str(minio_tls.ca_path), write_probe=True))
    assert not result.get("failed"), result
    assert result["writable"] is True


def test_tls_name_mismatch_is_a_tls_failure(minio_tls, tmp_path):
    # The certificate names only localhost: the right CA does not help a URL with another name.
    url = "https://%s" % minio_tls.endpoint
    result = run_module(tmp_path, **root_args(minio_tls, endpoint_url=url, ca_bundle=str(minio_tls.ca_path)))
    assert result["failed"] and result["error_class"] == "tls_verify", result["msg"]
