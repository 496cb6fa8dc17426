#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlops.mlflow_stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mlflow_artifact_uris
short_description: Move an adopted MLflow database's direct-S3 artifact URIs to the stack's proxied store
version_added: 0.2.0
description:
  - MLflow run with C(--default-artifact-root s3://<bucket>/) (the container guides' way) records C(s3://...) artifact
    URIs, which only clients holding S3 keys can read. The stack's clients talk to nginx only, so after such a
    database is restored and migrated, its old artifacts are unreadable to them.
  - This module rewrites every C(s3://) URI in C(experiments.artifact_location), C(runs.artifact_uri),
    C(model_versions.source) and C(model_versions.storage_location), and where the schema has them
    C(logged_models.artifact_location) and the C(mlflow.artifactLocation) trace tags, to the proxied form
    C(mlflow-artifacts:/<key>) that the server resolves against O(artifacts_destination). The key below the old
    bucket is kept (C(s3://old/1/<run>/artifacts) becomes C(mlflow-artifacts:/1/<run>/artifacts)).
  - Objects outside O(artifacts_destination) are first copied to C(<destination>/<key>); an object already there with
    the same size and ETag is left alone, a different one stops the module (nothing is overwritten). The originals
    are never deleted.
  - One database transaction. The rows are locked, the objects copied and checked, then the URIs rewritten and
    committed. A failure before the commit leaves the database as it was.
  - Check mode is a dry run with the same plan, counts and sample, nothing copied or written.
  - With O(dump), reads the URIs from a pg_dump custom-format archive instead of the database (always a dry
    run), so a playbook can list what an adoption will change before it restores anything.
author:
  - mlops.mlflow_stack contributors
extends_documentation_fragment:
  - mlops.mlflow_stack.postgresql
options:
  artifacts_destination:
    description:
      - The server's C(--artifacts-destination), C(s3://<bucket>/<prefix>), which it serves as C(mlflow-artifacts:/).
    type: str
    required: true
  s3:
    description: How to reach the stack's object store (the bucket of O(artifacts_destination)).
    type: dict
    required: true
    suboptions: &s3_options
      endpoint_url:
        description: URL of the S3 API, for example V(https://minio1.example.org:9000).
        type: str
        required: true
      access_key:
        description: Access key (for O(s3), one that may read and write the destination bucket).
        type: str
        required: true
      secret_key:
        description: Secret key of O(s3.access_key).
        type: str
        required: true
      region:
        description: Region to sign requests for.
        type: str
        default: us-east-1
      ca_bundle:
        description: PEM file with the CA certificates to trust for an HTTPS endpoint.
        type: path
      validate_certs:
        description: Whether to verify the server certificate. Only turn this off for a throwaway test.
        type: bool
        default: true
      addressing_style:
        description: S3 addressing style.
        type: str
        default: path
        choices: [path, virtual, auto]
  source_s3:
    description:
      - How to reach the old store, when it is not the stack's object store (or needs other keys).
      - Unset, the old buckets are read through O(s3) and copied server-side.
    type: dict
    suboptions: *s3_options
  source_buckets:
    description:
      - The old store's buckets. When set, each must exist and a URI pointing at any other bucket stops the module
        before anything changes (a wrong bucket name is found before MLflow is touched).
    type: list
    elements: str
  dump:
    description:
      - Path of a pg_dump custom-format archive to read the URIs from instead of the database (needs C(pg_restore)
        on the host). Always a dry run; the database options are then not needed.
    type: path
  sample_size:
    description: How many of the rewrites of each C(table.column) to return in RV(sample).
    type: int
    default: 10
requirements:
  - psycopg2 and boto3 on the host that runs the module (the MLflow virtualenv has both)
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
notes:
  - Stop every MLflow server that uses the database first; the rows are locked only for the module's transaction.
  - Runs logged to local paths (C(file:), plain paths) are counted in RV(untouched) and left as they are.
seealso:
  - module: mlops.mlflow_stack.s3_bucket_check
  - name: MLflow artifact proxy
    description: How C(mlflow-artifacts:/) URIs are served from C(--artifacts-destination).
    link: https://mlflow.org/docs/latest/self-hosting/architecture/artifact-store/
"""

EXAMPLES = r"""
- name: List what adopting the restored database would change
  mlops.mlflow_stack.mlflow_artifact_uris:
    host: db.example.com
    dbname: mlflow
    user: mlflow
    password: "{{ vault_mlflow_db_password }}"
    sslrootcert: /home/mlflow/.postgresql/root.crt
    artifacts_destination: s3://mlflow/artifacts
    s3:
      endpoint_url: https://minio1.example.com:9000
      access_key: mlflow
      secret_key: "{{ vault_mlflow_s3_secret_key }}"
      ca_bundle: /etc/ssl/certs/mlflow-stack-ca.pem
    source_s3:
      endpoint_url: https://old-minio.example.com:9000
      access_key: reader
      secret_key: "{{ vault_old_s3_secret_key }}"
    source_buckets: [mlflow-artifacts]
  check_mode: true
  vars:
    ansible_python_interpreter: /home/mlflow/venv/bin/python
"""

RETURN = r"""
counts:
  description: Rows rewritten (or, in check mode, to rewrite) per C(table.column).
  returned: success
  type: dict
  sample: {"experiments.artifact_location": 3, "runs.artifact_uri": 120, "model_versions.source": 4}
rows_rewritten:
  description: Total of RV(counts).
  returned: success
  type: int
  sample: 127
sample:
  description: Up to O(sample_size) rewrites (table, column, old, new, rows) of each C(table.column).
  returned: success
  type: list
  elements: dict
  sample: [{"table": "runs", "column": "artifact_uri", "old": "s3://old/1/0a1b/artifacts",
            "new": "mlflow-artifacts:/1/0a1b/artifacts", "rows": 1}]
source_buckets:
  description: The old buckets the URIs point at.
  returned: success
  type: list
  elements: str
  sample: [mlflow-artifacts]
untouched:
  description: Rows left as they are, by URI scheme (local paths, C(runs:/), ...); proxied URIs are not counted.
  returned: success
  type: dict
  sample: {"file": 2}
objects_total:
  description: Objects found under the URIs that need a copy.
  returned: success
  type: int
objects_copied:
  description: Objects copied (in check mode, that would be copied).
  returned: success
  type: int
objects_present:
  description: Objects already at the destination with the same size and ETag.
  returned: success
  type: int
bytes_copied:
  description: Bytes of RV(objects_copied).
  returned: success
  type: int
error_class:
  description:
    - Why the module failed. C(destination) bad O(artifacts_destination); C(source_bucket) an old bucket is missing or
      unreadable; C(unexpected_bucket) a URI points outside O(source_buckets); C(conflict) a different object already
      sits at a destination key; C(copy) a copy failed or came out wrong; C(database) connecting or querying failed;
      C(dump) O(dump) is not a readable pg_dump archive.
  returned: failure
  type: str
  sample: unexpected_bucket
"""

import subprocess
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.mlops.mlflow_stack.plugins.module_utils import artifact_uris, postgresql_tls, s3_check
from ansible_collections.mlops.mlflow_stack.plugins.module_utils.artifact_uris import AdoptError


def _s3_spec(required):
    return dict(type="dict", required=required, options=dict(
        endpoint_url=dict(type="str", required=True),
        access_key=dict(type="str", required=True, no_log=False),
        secret_key=dict(type="str", required=True, no_log=True),
        region=dict(type="str", default="us-east-1"),
        ca_bundle=dict(type="path"),
        validate_certs=dict(type="bool", default=True),
        addressing_style=dict(type="str", default="path", choices=["path", "virtual", "auto"]),
    ))


def argument_spec():
    spec = postgresql_tls.connection_argument_spec()
    spec.update(
        artifacts_destination=dict(type="str", required=True),
        s3=_s3_spec(True),
        source_s3=_s3_spec(False),
        source_buckets=dict(type="list", elements="str"),
        dump=dict(type="path"),
        sample_size=dict(type="int", default=10),
    )
    return spec


def make_client(settings):
    return s3_check.make_client(settings["endpoint_url"], settings["access_key"], settings["secret_key"],
                                settings["region"], settings["validate_certs"], settings["ca_bundle"],
                                settings["addressing_style"], timeout=30)


def check_bucket(client, settings, bucket, error_class):
    try:
        s3_check.check_bucket(client, settings["endpoint_url"], bucket, settings["access_key"])
    except s3_check.S3CheckError as exc:
        raise AdoptError(error_class, exc.msg)


def values_from_dump(path):
    try:
        proc = subprocess.run(["pg_restore", "--data-only", "--file", "-", path], capture_output=True, text=True)
    except OSError as exc:
        raise AdoptError("dump", "Cannot run pg_restore to read %s (%s): install the PostgreSQL client (the backup "
                                 "role does) on this host." % (path, exc))
    if proc.returncode != 0:
        raise AdoptError("dump", "%s is not a readable pg_dump custom-format archive: %s Make one with "
                                 "`pg_dump --format=custom`." % (path, proc.stderr.strip()[-500:]))
    return artifact_uris.values_from_copy_text(proc.stdout)


def sample_of(rewrites, size):
    """The first ``size`` rewrites of each table.column, so every kind shows (runs come after experiments)."""
    taken, sample = {}, []
    for r in rewrites:
        name = (r["table"], r["column"])
        if taken.get(name, 0) < size:
            taken[name] = taken.get(name, 0) + 1
            sample.append(r)
    return sample


def result_of(the_plan, stats, sample_size):
    result = {"counts": artifact_uris.summary_counts(the_plan["rewrites"]),
              "sample": sample_of(the_plan["rewrites"], sample_size),
              "source_buckets": the_plan["buckets"],
              "untouched": the_plan["untouched"]}
    result["rows_rewritten"] = sum(result["counts"].values())
    result.update(stats)
    return result


def adopt(params, check_mode):
    """Plan, copy, rewrite. Returns (changed, result); raises AdoptError."""
    dest_bucket, dest_prefix = artifact_uris.parse_destination(params["artifacts_destination"])
    dest_client = make_client(params["s3"])
    src_settings = params["source_s3"] or params["s3"]
    src_client = make_client(params["source_s3"]) if params["source_s3"] else dest_client
    check_bucket(dest_client, params["s3"], dest_bucket, "destination")
    for bucket in params["source_buckets"] or []:
        check_bucket(src_client, src_settings, bucket, "source_bucket")
    server_side = not params["source_s3"]

    if params["dump"]:
        the_plan = artifact_uris.plan(values_from_dump(params["dump"]), dest_bucket, dest_prefix, params["source_buckets"])
        stats = artifact_uris.copy_objects(src_client, dest_client, dest_bucket, the_plan["copies"], server_side, True)
        return False, result_of(the_plan, stats, params["sample_size"])

    try:
        conn = postgresql_tls.connect(params)
    except postgresql_tls.psycopg2.Error as exc:
        error_class = postgresql_tls.classify_error(str(exc))
        raise AdoptError("database", "Connecting to PostgreSQL failed (%s): %s libpq said: %s"
                         % (error_class, postgresql_tls.HINTS[error_class], str(exc).strip()))
    try:
        with conn.cursor() as cur:
            columns = artifact_uris.present_columns(cur)
            values = artifact_uris.read_values(cur, columns, lock=not check_mode)
            the_plan = artifact_uris.plan(values, dest_bucket, dest_prefix, params["source_buckets"])
            for bucket in the_plan["buckets"]:
                if bucket not in (params["source_buckets"] or []) and bucket != dest_bucket:
                    check_bucket(src_client, src_settings, bucket, "source_bucket")
            stats = artifact_uris.copy_objects(src_client, dest_client, dest_bucket, the_plan["copies"], server_side,
                                               check_mode)
            if check_mode:
                conn.rollback()
            else:
                artifact_uris.apply_rewrites(cur, the_plan["rewrites"])
                conn.commit()
    except postgresql_tls.psycopg2.Error as exc:
        conn.rollback()
        raise AdoptError("database", "Reading or rewriting the artifact URIs failed, nothing was changed: %s"
                         % str(exc).strip())
    except Exception:
        conn.rollback()
        raise
    finally:
        conn.close()
    changed = bool(the_plan["rewrites"]) or stats["objects_copied"] > 0
    return changed, result_of(the_plan, stats, params["sample_size"])


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           required_one_of=[["dump", "host"]],
                           required_by={"host": ("dbname", "user")})
    if not postgresql_tls.HAS_PSYCOPG2 and not module.params["dump"]:
        module.fail_json(msg=missing_required_lib("psycopg2"), error_class="database")
    if s3_check.boto3 is None:
        module.fail_json(msg=missing_required_lib("boto3"), error_class="copy")
    try:
        changed, result = adopt(module.params, module.check_mode)
    except AdoptError as exc:
        module.fail_json(msg=exc.msg, error_class=exc.error_class)
    except Exception as exc:  # boto3 errors name the bucket and key, never the secret
        module.fail_json(msg="Adopting the artifact URIs failed (%s: %s); nothing was rewritten."
                         % (type(exc).__name__, exc), error_class="copy", exception=traceback.format_exc())
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
