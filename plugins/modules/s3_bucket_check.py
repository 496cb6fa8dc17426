#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlops.mlflow_stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: s3_bucket_check
short_description: Prove that an S3 bucket answers, and optionally that a key can write to it
version_added: 0.1.0
description:
  - Connects to an S3 endpoint (MinIO or any S3 service) with boto3 and lists the bucket to prove that it exists and that
    the access key may read it.
  - With O(write_probe=true) it also puts a small object under O(probe_prefix), reads it back, and deletes it again, which
    proves read-write access end to end.
  - Failures are classified in RV(error_class) and the message says what to change, so a preflight can stop before a
    service is started against storage that does not work.
  - Read-only unless O(write_probe=true); the check therefore also runs in check mode (the write probe is skipped there).
  - Needs only boto3 and the Python standard library on the host that runs it.
author:
  - mlops.mlflow_stack contributors
requirements:
  - boto3
extends_documentation_fragment:
  - mlops.mlflow_stack.validate_certs
attributes:
  check_mode:
    support: full
    details: The write probe is skipped in check mode; everything else runs.
  diff_mode:
    support: none
options:
  endpoint_url:
    description:
      - URL of the S3 endpoint, for example V(https://minio.example.org:9000).
    type: str
    required: true
  access_key:
    description:
      - Access key ID.
    type: str
    required: true
  secret_key:
    description:
      - Secret access key.
    type: str
    required: true
  region:
    description:
      - Region used to sign requests. MinIO accepts V(us-east-1) unless it was configured with another region.
    type: str
    default: us-east-1
  ca_bundle:
    description:
      - Path of a PEM file with the CA certificates to trust for an HTTPS endpoint, on the host that runs the module.
      - When unset, the certifi bundle that boto3 ships is used.
    type: path
  addressing_style:
    description:
      - How the bucket appears in request URLs. MinIO without a domain configured needs V(path).
    type: str
    choices: [path, virtual, auto]
    default: path
  bucket:
    description:
      - Name of the bucket to check.
    type: str
    required: true
  write_probe:
    description:
      - Put, read back and delete one small object under O(probe_prefix).
      - In a versioned bucket the probe removes the exact version it wrote when the key may do so; otherwise a delete
        marker is left behind.
    type: bool
    default: false
  probe_prefix:
    description:
      - Key prefix for the write probe object (a random name is added below it).
    type: str
    default: .s3-bucket-check
  count_prefix:
    description:
      - When set, count the objects whose key starts with this prefix and return RV(object_count).
      - Use an empty string to count the whole bucket. Counting lists every key, so keep it to small prefixes.
    type: str
  timeout:
    description:
      - Connect and read timeout in seconds for each request. Requests are not retried.
    type: int
    default: 10
notes:
  - Uses ListObjectsV2 rather than HeadBucket because only a request with a response body tells an unknown access key from
    a wrong secret. The key therefore needs C(s3:ListBucket) on the bucket.
seealso:
  - name: MinIO access management
    description: How MinIO policies grant bucket access.
    link: https://min.io/docs/minio/linux/administration/identity-access-management/policy-based-access-control.html
"""

EXAMPLES = r"""
- name: Prove that MLflow's key can write its bucket before MLflow starts
  mlops.mlflow_stack.s3_bucket_check:
    endpoint_url: https://minio.example.org:9000
    access_key: "{{ mlflow_s3_access_key }}"
    secret_key: "{{ mlflow_s3_secret_key }}"
    ca_bundle: /etc/mlflow/ca.crt
    bucket: mlflow
    write_probe: true
  no_log: false

- name: Count the artifacts of one experiment
  mlops.mlflow_stack.s3_bucket_check:
    endpoint_url: http://127.0.0.1:9000
    access_key: "{{ backup_access_key }}"
    secret_key: "{{ backup_secret_key }}"
    bucket: mlflow
    count_prefix: "1/"
  register: artifacts

- name: Branch on the kind of failure instead of stopping
  mlops.mlflow_stack.s3_bucket_check:
    endpoint_url: http://127.0.0.1:9000
    access_key: "{{ mlflow_s3_access_key }}"
    secret_key: "{{ mlflow_s3_secret_key }}"
    bucket: mlflow
  register: bucket_check
  failed_when: bucket_check.failed and bucket_check.error_class != 'no_such_bucket'
"""

RETURN = r"""
endpoint_url:
  description: The endpoint that was checked.
  returned: always
  type: str
  sample: https://minio.example.org:9000
bucket:
  description: The bucket that was checked.
  returned: always
  type: str
  sample: mlflow
exists:
  description: Whether the bucket exists and the key could list it.
  returned: always
  type: bool
  sample: true
writable:
  description:
    - V(true) when the write probe succeeded, V(false) when it was refused, V(null) when no probe ran
      (O(write_probe=false), check mode, or an earlier failure).
  returned: always
  type: bool
  sample: true
region:
  description: The region the bucket reports (from the C(x-amz-bucket-region) header or GetBucketLocation).
  returned: when the bucket answered
  type: str
  sample: us-east-1
latency_ms:
  description: Round-trip time of the listing request in milliseconds.
  returned: when the bucket answered
  type: float
  sample: 3.41
object_count:
  description: Number of objects under O(count_prefix); V(null) when O(count_prefix) is unset.
  returned: always
  type: int
  sample: 42
probe_key:
  description: Key of the object the write probe wrote and deleted.
  returned: when the write probe ran
  type: str
  sample: .s3-bucket-check/3f0c2a9e6f8b4d1e9a7c5b3d1f2e4a6c
error_class:
  description:
    - Machine-readable class of the failure.
    - V(unreachable) - no connection to the endpoint (service down, wrong host or port, firewall, timeout).
    - V(tls_verify) - the server certificate could not be verified (wrong or missing O(ca_bundle), name mismatch).
    - V(unknown_access_key) - the server does not know O(access_key).
    - V(signature_mismatch) - the access key exists but O(secret_key) is wrong.
    - V(access_denied) - the key is valid but its policy does not allow the request on this bucket.
    - V(no_such_bucket) - the bucket does not exist.
    - V(other) - anything else; the message carries the server's answer.
  returned: failure
  type: str
  sample: access_denied
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.mlops.mlflow_stack.plugins.module_utils import s3_check
from ansible_collections.mlops.mlflow_stack.plugins.module_utils.s3_check import (
    S3CheckError,
    check_bucket,
)

try:
    import boto3
except ImportError:
    boto3 = None
    import traceback

    BOTO3_IMPORT_ERROR = traceback.format_exc()
else:
    BOTO3_IMPORT_ERROR = None


def argument_spec():
    return dict(
        endpoint_url=dict(type="str", required=True),
        access_key=dict(type="str", required=True, no_log=False),
        secret_key=dict(type="str", required=True, no_log=True),
        region=dict(type="str", default="us-east-1"),
        ca_bundle=dict(type="path"),
        validate_certs=dict(type="bool", default=True),
        addressing_style=dict(type="str", default="path", choices=["path", "virtual", "auto"]),
        bucket=dict(type="str", required=True),
        write_probe=dict(type="bool", default=False),
        probe_prefix=dict(type="str", default=".s3-bucket-check"),
        count_prefix=dict(type="str"),
        timeout=dict(type="int", default=10),
    )


def make_client(params):
    return s3_check.make_client(params["endpoint_url"], params["access_key"], params["secret_key"], params["region"],
                                params["validate_certs"], params["ca_bundle"], params["addressing_style"],
                                params["timeout"])


def run(module):
    params = module.params
    try:
        client = make_client(params)
    except ValueError as exc:  # botocore rejects a malformed endpoint_url before any request
        return {"endpoint_url": params["endpoint_url"], "bucket": params["bucket"]}, S3CheckError(
            "other", "endpoint_url %r is not usable (%s). Give a URL such as https://minio.example.org:9000."
            % (params["endpoint_url"], exc))
    try:
        return check_bucket(
            client,
            endpoint_url=params["endpoint_url"],
            bucket=params["bucket"],
            access_key=params["access_key"],
            region=params["region"],
            do_write_probe=params["write_probe"],
            probe_prefix=params["probe_prefix"],
            count_prefix=params["count_prefix"],
            check_mode=module.check_mode,
        ), None
    except S3CheckError as exc:
        return getattr(exc, "result", {}), exc


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if boto3 is None:
        module.fail_json(msg=missing_required_lib("boto3"), exception=BOTO3_IMPORT_ERROR, error_class="other")
    result, error = run(module)
    if error is not None:
        module.fail_json(msg=error.msg, error_class=error.error_class, changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
