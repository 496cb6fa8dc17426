# -*- coding: utf-8 -*-
# Copyright: mlops.mlflow_stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection helpers shared by the minio_bucket and minio_user_policy modules: one argument
spec for the endpoint and login, clients from the ``minio`` Python package, and policy
documents that allow a key only its own buckets."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import traceback

from ansible.module_utils.six.moves.urllib.parse import urlparse

try:
    import urllib3
    from minio import Minio, MinioAdmin
    from minio.credentials import StaticProvider
    from minio.error import MinioAdminException, S3Error
except ImportError:
    HAS_MINIO = False
    MINIO_IMPORT_ERROR = traceback.format_exc()
    Minio = MinioAdmin = StaticProvider = urllib3 = None
    MinioAdminException = S3Error = Exception
else:
    HAS_MINIO = True
    MINIO_IMPORT_ERROR = None


def connection_argument_spec():
    return dict(
        endpoint_url=dict(type="str", required=True),
        login_access_key=dict(type="str", required=True, no_log=False),
        login_secret_key=dict(type="str", required=True, no_log=True),
        region=dict(type="str", default="us-east-1"),
        ca_bundle=dict(type="path"),
        validate_certs=dict(type="bool", default=True),
        timeout=dict(type="int", default=15),
    )


def _endpoint(module):
    url = urlparse(module.params["endpoint_url"])
    if url.scheme not in ("http", "https") or not url.hostname:
        module.fail_json(msg="endpoint_url must look like https://minio.example.org:9000, got %r."
                             % module.params["endpoint_url"], error_class="other")
    return url.netloc, url.scheme == "https"


def _http_client(module, secure):
    timeout = urllib3.Timeout(connect=module.params["timeout"], read=module.params["timeout"])
    retries = urllib3.Retry(total=2, backoff_factor=0.5, status_forcelist=[500, 502, 503, 504])
    if secure and not module.params["validate_certs"]:
        return urllib3.PoolManager(timeout=timeout, retries=retries, cert_reqs="CERT_NONE")
    if secure and module.params["ca_bundle"]:
        return urllib3.PoolManager(timeout=timeout, retries=retries, cert_reqs="CERT_REQUIRED",
                                   ca_certs=module.params["ca_bundle"])
    return urllib3.PoolManager(timeout=timeout, retries=retries)


def s3_client(module, access_key=None, secret_key=None):
    """An S3 client; the login key unless another key is given."""
    netloc, secure = _endpoint(module)
    return Minio(
        netloc,
        access_key=access_key or module.params["login_access_key"],
        secret_key=secret_key or module.params["login_secret_key"],
        region=module.params["region"],
        secure=secure,
        http_client=_http_client(module, secure),
    )


def check_login(client):
    """Fail early and clearly on a wrong login: HEAD requests (bucket_exists) would only say AccessDenied."""
    try:
        client.list_buckets()
    except S3Error as exc:
        if exc.code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise
        # AccessDenied here means the key is valid but may not list every bucket: enough.


def admin_client(module):
    netloc, secure = _endpoint(module)
    return MinioAdmin(
        endpoint=netloc,
        credentials=StaticProvider(module.params["login_access_key"], module.params["login_secret_key"]),
        region=module.params["region"],
        secure=secure,
        http_client=_http_client(module, secure),
    )


def bucket_policy(buckets, write=True):
    """An IAM policy that allows ``buckets`` and nothing else (MinIO denies what is not allowed)."""
    bucket_actions = ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"]
    object_actions = ["s3:GetObject"]
    if write:
        object_actions += ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    buckets = sorted(set(buckets))
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": bucket_actions, "Resource": ["arn:aws:s3:::%s" % b for b in buckets]},
            {"Effect": "Allow", "Action": object_actions, "Resource": ["arn:aws:s3:::%s/*" % b for b in buckets]},
        ],
    }


def normalize_policy(doc):
    """A comparable form of a policy document (MinIO may reorder lists or turn one-item lists into strings)."""
    if isinstance(doc, str):
        doc = json.loads(doc)
    statements = []
    for stmt in doc.get("Statement", []):
        norm = {}
        for key, value in stmt.items():
            if key in ("Action", "Resource", "NotAction", "NotResource"):
                value = sorted([value] if isinstance(value, str) else value)
            norm[key] = value
        statements.append(json.dumps(norm, sort_keys=True))
    return sorted(statements)


def describe_error(exc):
    """Text of a minio library error without request headers (which carry signatures)."""
    if isinstance(exc, S3Error):
        return "%s: %s" % (exc.code, exc.message)
    if isinstance(exc, MinioAdminException):
        return "HTTP %s: %s" % (getattr(exc, "_code", "?"), getattr(exc, "_body", exc))
    return "%s: %s" % (type(exc).__name__, exc)


def connection_hint(module, exc):
    """Name the likely fix for an error reaching the server with the login key."""
    text = describe_error(exc)
    if "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
        return "The server rejected login_access_key/login_secret_key (%s): pass the root credentials." % text
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return ("TLS verification of %s failed (%s): set ca_bundle to the CA that signed the server certificate."
                % (module.params["endpoint_url"], text))
    if "MaxRetryError" in text or "NewConnectionError" in text or "Connection refused" in text:
        return ("Cannot reach %s (%s): check that MinIO runs and that this host can reach its API port."
                % (module.params["endpoint_url"], text))
    return text
