# -*- coding: utf-8 -*-
# Copyright: mlops.mlflow_stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bucket reachability checks for any S3 endpoint, with failures sorted into classes a
playbook can branch on and messages that say what to change.

boto3 and the standard library only: the mlflow_server role runs this on the MLflow host
with the boto3 of the MLflow virtualenv."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time
import uuid

try:
    import boto3
    import botocore.exceptions as botocore_exceptions
    from botocore.config import Config as BotocoreConfig
except ImportError:  # reported by the module through missing_required_lib
    boto3 = None
    botocore_exceptions = None
    BotocoreConfig = None

ERROR_CLASSES = (
    "unreachable",
    "tls_verify",
    "unknown_access_key",
    "signature_mismatch",
    "access_denied",
    "no_such_bucket",
    "other",
)

_CLIENT_ERROR_CLASSES = {
    "InvalidAccessKeyId": "unknown_access_key",
    "SignatureDoesNotMatch": "signature_mismatch",
    "AccessDenied": "access_denied",
    "AllAccessDisabled": "access_denied",
    "NoSuchBucket": "no_such_bucket",
}

_TLS_MARKERS = ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed", "hostname mismatch",
                "doesn't match", "self-signed certificate", "self signed certificate")


class S3CheckError(Exception):
    """A classified failure: ``error_class`` is one of ERROR_CLASSES, ``msg`` names the fix."""

    def __init__(self, error_class, msg, exists=None):
        super(S3CheckError, self).__init__(msg)
        self.error_class = error_class
        self.msg = msg
        self.exists = exists


def _error_code(exc):
    response = getattr(exc, "response", None) or {}
    return (response.get("Error") or {}).get("Code") or ""


def _looks_like_tls(exc):
    text = str(exc)
    return any(marker in text for marker in _TLS_MARKERS)


def classify(exc):
    """Return the error class of an exception raised by boto3/botocore."""
    if botocore_exceptions is not None:
        if isinstance(exc, botocore_exceptions.SSLError):
            return "tls_verify"
        if isinstance(exc, botocore_exceptions.ClientError):
            code = _error_code(exc)
            if code in _CLIENT_ERROR_CLASSES:
                return _CLIENT_ERROR_CLASSES[code]
            status = (getattr(exc, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            # HEAD requests carry no error body: only the status says what happened.
            if code in ("404", "NotFound") or status == 404 and not code:
                return "no_such_bucket"
            if code in ("403", "Forbidden"):
                return "access_denied"
            return "other"
        if isinstance(exc, (botocore_exceptions.EndpointConnectionError,
                            botocore_exceptions.ConnectTimeoutError,
                            botocore_exceptions.ReadTimeoutError)):
            return "tls_verify" if _looks_like_tls(exc) else "unreachable"
        if isinstance(exc, botocore_exceptions.ConnectionError):
            return "tls_verify" if _looks_like_tls(exc) else "unreachable"
    if _looks_like_tls(exc):
        return "tls_verify"
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return "unreachable"
    return "other"


def explain(error_class, endpoint_url, bucket, access_key, exc):
    """A message that says what failed, the likely cause, and what to change."""
    detail = str(exc)
    where = "bucket '%s' at %s" % (bucket, endpoint_url)
    messages = {
        "unreachable": "Cannot connect to %s (%s). Check that the S3 service is running, that endpoint_url has the "
                       "right scheme, host and port, and that no firewall blocks the way from this host." % (endpoint_url, detail),
        "tls_verify": "TLS verification failed for %s (%s). Pass the CA that signed the server certificate as ca_bundle, "
                      "and make sure the certificate names the host used in endpoint_url." % (endpoint_url, detail),
        "unknown_access_key": "The server does not know access key '%s' (%s). Create the key on the server (the minio "
                              "role's minio_users) or fix access_key." % (access_key, detail),
        "signature_mismatch": "The secret key for access key '%s' is wrong: the server rejected the request signature "
                              "(%s). Fix secret_key so that it matches the key stored on the server." % (access_key, detail),
        "access_denied": "Access key '%s' is not allowed to use %s (%s). Grant its policy s3:ListBucket on the bucket "
                         "and s3:GetObject/PutObject/DeleteObject on its objects." % (access_key, where, detail),
        "no_such_bucket": "The %s does not exist (%s). Create it (the minio role's minio_buckets) or fix bucket." % (where, detail),
        "other": "Checking %s failed: %s" % (where, detail),
    }
    return messages[error_class]


def client_config(addressing_style="path", timeout=10, region=None):
    """A botocore Config that fails fast: one attempt, short timeouts, SigV4."""
    return BotocoreConfig(
        region_name=region or None,
        signature_version="s3v4",
        s3={"addressing_style": addressing_style},
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"max_attempts": 1, "mode": "standard"},
    )


def verify_setting(validate_certs=True, ca_bundle=None):
    """The ``verify`` argument of boto3.client: False, a CA bundle path, or None (system store)."""
    if not validate_certs:
        return False
    return ca_bundle or None


def make_client(endpoint_url, access_key, secret_key, region="us-east-1", validate_certs=True, ca_bundle=None,
                addressing_style="path", timeout=10):
    """A boto3 S3 client for one endpoint, with the checks' fail-fast config."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        verify=verify_setting(validate_certs, ca_bundle),
        config=client_config(addressing_style, timeout, region),
    )


def _bucket_region(client, bucket, response, fallback):
    headers = (response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    region = headers.get("x-amz-bucket-region")
    if region:
        return region
    try:
        location = client.get_bucket_location(Bucket=bucket).get("LocationConstraint")
    except Exception:  # the key may lack s3:GetBucketLocation; the region is informative only
        return fallback
    return location or "us-east-1"


def count_objects(client, bucket, prefix):
    total = 0
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        total += page.get("KeyCount", len(page.get("Contents") or []))
    return total


def write_probe(client, bucket, probe_prefix):
    """Put, read back and delete one small object; raise on any step."""
    key = "%s/%s" % (probe_prefix.strip("/") or "s3-bucket-check", uuid.uuid4().hex)
    body = os.urandom(64)
    put = client.put_object(Bucket=bucket, Key=key, Body=body)
    try:
        got = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        if got != body:
            raise S3CheckError("other", "The object read back from %s/%s differs from what was written: "
                                        "the storage is not consistent." % (bucket, key))
    finally:
        version_id = put.get("VersionId")
        deleted = False
        if version_id and version_id != "null":
            # Removing the exact version leaves no delete marker behind in versioned buckets.
            try:
                client.delete_object(Bucket=bucket, Key=key, VersionId=version_id)
                deleted = True
            except botocore_exceptions.ClientError:
                deleted = False
        if not deleted:
            client.delete_object(Bucket=bucket, Key=key)
    return key


def check_bucket(client, endpoint_url, bucket, access_key, region=None, do_write_probe=False,
                 probe_prefix="s3-bucket-check", count_prefix=None, check_mode=False, clock=time.monotonic):
    """Run the checks with a ready boto3 S3 client. Returns the result dict or raises S3CheckError."""
    result = {"endpoint_url": endpoint_url, "bucket": bucket, "exists": False, "writable": None,
              "region": None, "latency_ms": None, "object_count": None, "probe_key": None}
    stage = "list"
    try:
        started = clock()
        # ListObjectsV2 (not HeadBucket) because its error body names the cause; HEAD has none.
        response = client.list_objects_v2(Bucket=bucket, MaxKeys=1)
        result["latency_ms"] = round((clock() - started) * 1000.0, 2)
        result["exists"] = True
        result["region"] = _bucket_region(client, bucket, response, region)
        if count_prefix is not None:
            stage = "count"
            result["object_count"] = count_objects(client, bucket, count_prefix)
        if do_write_probe and not check_mode:
            stage = "write"
            result["probe_key"] = write_probe(client, bucket, probe_prefix)
            result["writable"] = True
    except S3CheckError as exc:
        exc.result = result
        raise
    except Exception as exc:
        error_class = classify(exc)
        msg = explain(error_class, endpoint_url, bucket, access_key, exc)
        if stage == "write" and error_class == "access_denied":
            result["writable"] = False
            msg = ("Access key '%s' can list bucket '%s' but cannot write, read back or delete under '%s' (%s). "
                   "Grant its policy s3:PutObject, s3:GetObject and s3:DeleteObject on '%s/*'."
                   % (access_key, bucket, probe_prefix, exc, bucket))
        err = S3CheckError(error_class, msg)
        err.result = result
        raise err
    return result
