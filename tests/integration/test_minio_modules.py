"""minio_bucket and minio_user_policy against a real MinIO on loopback: they converge,
a second run changes nothing, check mode changes nothing, and the user's key is confined
to its own bucket."""

import io
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minio_server import ROOT, MinioServer, minio_binary  # noqa: E402

BINARY = minio_binary()
pytestmark = pytest.mark.skipif(BINARY is None, reason="MinIO binary absent and scripts/build-minio.sh could not build it")


@pytest.fixture(scope="module")
def minio(tmp_path_factory):
    server = MinioServer(BINARY, tmp_path_factory.mktemp("minio-modules")).start()
    yield server
    server.stop()


def run(tmp_path, module, server, check_mode=False, **args):
    args = dict(dict(endpoint_url=server.url, login_access_key=server.root_user, login_secret_key=server.root_password),
                **args)
    if check_mode:
        args["_ansible_check_mode"] = True
    args_file = tmp_path / ("args-%s.json" % secrets.token_hex(4))
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = dict(os.environ, PYTHONPATH=str(ROOT / ".collections"))
    proc = subprocess.run([sys.executable, str(ROOT / "plugins" / "modules" / (module + ".py")), str(args_file)],
                          env=env, capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert server.root_password not in out
    if "secret_key" in args:
        assert args["secret_key"] not in out
    return json.loads(proc.stdout)


def test_bucket_converges_and_is_idempotent(minio, tmp_path):
    want = dict(name="artifacts", versioning=True, lifecycle_expire_days=30)
    dry = run(tmp_path, "minio_bucket", minio, check_mode=True, **want)
    assert dry["changed"] and "create bucket" in dry["actions"]
    s3, _ = minio.clients()
    assert not s3.bucket_exists("artifacts"), "check mode created the bucket"

    first = run(tmp_path, "minio_bucket", minio, **want)
    assert first["changed"] and not first.get("failed"), first
    assert s3.get_bucket_versioning("artifacts").status == "Enabled"
    rule = s3.get_bucket_lifecycle("artifacts").rules[0]
    assert rule.expiration.days == 30 and rule.noncurrent_version_expiration.noncurrent_days == 30

    again = run(tmp_path, "minio_bucket", minio, **want)
    assert again["changed"] is False, again["actions"]

    dropped = run(tmp_path, "minio_bucket", minio, name="artifacts", versioning=False, lifecycle_expire_days=0)
    assert dropped["actions"] == ["suspend versioning", "remove expiry rule"]
    assert s3.get_bucket_lifecycle("artifacts") is None


def test_unversioned_bucket_stays_unversioned(minio, tmp_path):
    want = dict(name="plain", versioning=False)
    assert run(tmp_path, "minio_bucket", minio, **want)["actions"] == ["create bucket"]
    again = run(tmp_path, "minio_bucket", minio, **want)
    assert again["changed"] is False and again["versioning"] == "Off", again


def test_user_confined_to_its_bucket(minio, tmp_path):
    s3, _ = minio.clients()
    for name in ("mine", "theirs"):
        if not s3.bucket_exists(name):
            s3.make_bucket(name)
    secret = secrets.token_urlsafe(24)
    want = dict(access_key="mlflow", secret_key=secret, buckets=["mine"])
    assert run(tmp_path, "minio_user_policy", minio, check_mode=True, **want)["changed"]
    first = run(tmp_path, "minio_user_policy", minio, **want)
    assert first["actions"] == ["create policy", "create user", "attach policy"], first
    assert run(tmp_path, "minio_user_policy", minio, **want)["changed"] is False

    from minio import Minio
    from minio.error import S3Error

    user = Minio(minio.endpoint, access_key="mlflow", secret_key=secret, secure=False)
    user.put_object("mine", "x", io.BytesIO(b"x"), 1)
    with pytest.raises(S3Error) as denied:
        user.put_object("theirs", "x", io.BytesIO(b"x"), 1)
    assert denied.value.code == "AccessDenied"

    rotated = secrets.token_urlsafe(24)
    changed = run(tmp_path, "minio_user_policy", minio, access_key="mlflow", secret_key=rotated, buckets=["mine"])
    assert changed["actions"] == ["reset secret key"]
    Minio(minio.endpoint, access_key="mlflow", secret_key=rotated, secure=False).stat_object("mine", "x")


def test_wrong_login_names_the_fix(minio, tmp_path):
    result = run(tmp_path, "minio_bucket", minio, name="xyz", login_secret_key="wrong-" + secrets.token_hex(8))
    assert result["failed"] and "root credentials" in result["msg"]
