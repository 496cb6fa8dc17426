"""s3_bucket_check sorts every failure into the class a playbook branches on, says what to
fix, never prints the secret, and only writes when asked to (never in check mode)."""

import io
import json
import sys
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / ".collections"))

import botocore.exceptions as bx  # noqa: E402
from ansible.module_utils.testing import patch_module_args  # noqa: E402

from ansible_collections.mlops.mlflow_stack.plugins.module_utils import s3_check  # noqa: E402
from ansible_collections.mlops.mlflow_stack.plugins.modules import s3_bucket_check  # noqa: E402

SECRET = "s3cr3t-never-printed-0123456789"


def client_error(code, status=400, op="ListObjectsV2"):
    return bx.ClientError({"Error": {"Code": code, "Message": code + " message"},
                           "ResponseMetadata": {"HTTPStatusCode": status}}, op)


class FakeS3:
    """Just enough of a boto3 S3 client; ``fail`` maps an operation to the exception it raises."""

    def __init__(self, fail=None, versioned=False, keys=0, region_header="us-east-1"):
        self.fail = fail or {}
        self.versioned = versioned
        self.keys = keys
        self.region_header = region_header
        self.objects = {}
        self.calls = []

    def _maybe_fail(self, op):
        self.calls.append(op)
        if op in self.fail:
            raise self.fail[op]

    def list_objects_v2(self, Bucket, MaxKeys=1000, Prefix=""):
        self._maybe_fail("list_objects_v2")
        headers = {"x-amz-bucket-region": self.region_header} if self.region_header else {}
        return {"KeyCount": min(self.keys, MaxKeys), "ResponseMetadata": {"HTTPHeaders": headers}}

    def get_bucket_location(self, Bucket):
        self._maybe_fail("get_bucket_location")
        return {"LocationConstraint": "eu-west-3"}

    def get_paginator(self, name):
        assert name == "list_objects_v2"
        fake = self

        class Pages:
            def paginate(self, Bucket, Prefix):
                fake.calls.append(("paginate", Prefix))
                return [{"KeyCount": 1000}, {"KeyCount": fake.keys - 1000}]

        return Pages()

    def put_object(self, Bucket, Key, Body):
        self._maybe_fail("put_object")
        self.objects[Key] = Body
        return {"VersionId": "v1"} if self.versioned else {}

    def get_object(self, Bucket, Key):
        self._maybe_fail("get_object")
        return {"Body": io.BytesIO(self.objects[Key])}

    def delete_object(self, Bucket, Key, VersionId=None):
        self._maybe_fail("delete_object_version" if VersionId else "delete_object")
        self.calls.append(("deleted", Key, VersionId))
        self.objects.pop(Key, None)


def check(client, **kwargs):
    args = dict(endpoint_url="http://127.0.0.1:9000", bucket="mlflow", access_key="mlflow")
    args.update(kwargs)
    return s3_check.check_bucket(client, **args)


@pytest.mark.parametrize("exc, expected", [
    (client_error("InvalidAccessKeyId", 403), "unknown_access_key"),
    (client_error("SignatureDoesNotMatch", 403), "signature_mismatch"),
    (client_error("AccessDenied", 403), "access_denied"),
    (client_error("NoSuchBucket", 404), "no_such_bucket"),
    (client_error("404", 404, "HeadBucket"), "no_such_bucket"),
    (client_error("403", 403, "HeadBucket"), "access_denied"),
    (client_error("SlowDown", 503), "other"),
    (bx.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), "unreachable"),
    (bx.ConnectTimeoutError(endpoint_url="http://10.255.255.1:9000"), "unreachable"),
    (bx.SSLError(endpoint_url="https://127.0.0.1:9000",
                 error="[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate"), "tls_verify"),
    (bx.ConnectionError(error="[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"), "tls_verify"),
    (ValueError("boom"), "other"),
])
def test_classify(exc, expected):
    assert s3_check.classify(exc) == expected


@pytest.mark.parametrize("error_class, fix", [
    ("unreachable", "endpoint_url"),
    ("tls_verify", "ca_bundle"),
    ("unknown_access_key", "minio_users"),
    ("signature_mismatch", "secret_key"),
    ("access_denied", "policy"),
    ("no_such_bucket", "minio_buckets"),
])
def test_every_message_names_the_fix(error_class, fix):
    msg = s3_check.explain(error_class, "http://127.0.0.1:9000", "mlflow", "mlflow", Exception("detail"))
    assert fix in msg


def test_success_reports_region_latency_and_no_probe():
    fake = FakeS3()
    result = check(fake)
    assert result["exists"] is True
    assert result["writable"] is None
    assert result["region"] == "us-east-1"
    assert result["latency_ms"] >= 0
    assert result["object_count"] is None
    assert "put_object" not in fake.calls


def test_region_falls_back_to_bucket_location():
    assert check(FakeS3(region_header=None))["region"] == "eu-west-3"


def test_count_prefix_counts_every_page():
    fake = FakeS3(keys=1500)
    assert check(fake, count_prefix="1/")["object_count"] == 1500
    assert ("paginate", "1/") in fake.calls


def test_write_probe_cleans_up_the_exact_version():
    fake = FakeS3(versioned=True)
    result = check(fake, do_write_probe=True, probe_prefix="probe")
    assert result["writable"] is True
    assert result["probe_key"].startswith("probe/")
    assert ("deleted", result["probe_key"], "v1") in fake.calls
    assert fake.objects == {}


def test_write_probe_falls_back_to_plain_delete_without_version_permission():
    fake = FakeS3(versioned=True, fail={"delete_object_version": client_error("AccessDenied", 403, "DeleteObject")})
    result = check(fake, do_write_probe=True)
    assert ("deleted", result["probe_key"], None) in fake.calls


def test_write_refused_is_access_denied_with_writable_false():
    fake = FakeS3(fail={"put_object": client_error("AccessDenied", 403, "PutObject")})
    with pytest.raises(s3_check.S3CheckError) as err:
        check(fake, do_write_probe=True)
    assert err.value.error_class == "access_denied"
    assert err.value.result["exists"] is True
    assert err.value.result["writable"] is False
    assert "s3:PutObject" in err.value.msg


def test_check_mode_never_writes():
    fake = FakeS3()
    result = check(fake, do_write_probe=True, check_mode=True)
    assert result["writable"] is None
    assert "put_object" not in fake.calls


def test_missing_bucket_is_classified():
    with pytest.raises(s3_check.S3CheckError) as err:
        check(FakeS3(fail={"list_objects_v2": client_error("NoSuchBucket", 404)}))
    assert err.value.error_class == "no_such_bucket"
    assert err.value.result["exists"] is False


def run_module(monkeypatch, capsys, client=None, boto3_missing=False, check_mode=False, **overrides):
    args = dict(endpoint_url="http://127.0.0.1:9000", access_key="mlflow", secret_key=SECRET,
                bucket="mlflow", write_probe=True)
    args.update(overrides)
    if check_mode:
        args["_ansible_check_mode"] = True
    if boto3_missing:
        monkeypatch.setattr(s3_bucket_check, "boto3", None)
    else:
        monkeypatch.setattr(s3_bucket_check, "make_client", lambda params: client)
    with patch_module_args(args), pytest.raises(SystemExit):
        s3_bucket_check.main()
    out = capsys.readouterr().out
    return out, json.loads(out)


def test_module_success_is_never_changed(monkeypatch, capsys):
    _, result = run_module(monkeypatch, capsys, FakeS3())
    assert result["changed"] is False and result["writable"] is True
    assert not result.get("failed")


def test_module_failure_carries_error_class_and_hides_the_secret(monkeypatch, capsys):
    fake = FakeS3(fail={"list_objects_v2": client_error("SignatureDoesNotMatch", 403)})
    out, result = run_module(monkeypatch, capsys, fake)
    assert result["failed"] is True
    assert result["error_class"] == "signature_mismatch"
    assert "secret_key" in result["msg"]
    assert SECRET not in out


def test_module_check_mode_skips_the_probe(monkeypatch, capsys):
    fake = FakeS3()
    _, result = run_module(monkeypatch, capsys, fake, check_mode=True)
    assert result["writable"] is None and "put_object" not in fake.calls


def test_module_reports_missing_boto3(monkeypatch, capsys):
    _, result = run_module(monkeypatch, capsys, boto3_missing=True)
    assert result["failed"] is True
    assert "boto3" in result["msg"]


def test_module_rejects_a_malformed_endpoint(monkeypatch, capsys):
    monkeypatch.setattr(s3_bucket_check, "boto3", mock.Mock(client=mock.Mock(side_effect=ValueError("Invalid endpoint"))))
    with patch_module_args(dict(endpoint_url="not a url", access_key="a", secret_key=SECRET, bucket="b")), \
            pytest.raises(SystemExit):
        s3_bucket_check.main()
    result = json.loads(capsys.readouterr().out)
    assert result["error_class"] == "other" and "endpoint_url" in result["msg"]
