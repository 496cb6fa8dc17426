#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlops.mlflow_stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: minio_bucket
short_description: Manage a MinIO bucket, its versioning and an expiry rule
version_added: 0.1.0
description:
  - Creates or removes a bucket on a MinIO server through the S3 API with the C(minio) Python package, turns versioning on
    or off (suspended), and keeps one lifecycle rule that expires objects after a number of days.
  - Lifecycle rules with other IDs are left as they are.
  - Used by the mlops.mlflow_stack.minio role from the controller, so no C(mc) is needed on the hosts.
author:
  - mlops.mlflow_stack contributors
extends_documentation_fragment:
  - mlops.mlflow_stack.minio
  - mlops.mlflow_stack.validate_certs
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
options:
  name:
    description: Bucket name.
    type: str
    required: true
  state:
    description:
      - V(present) creates the bucket; V(absent) removes it. Removing fails when the bucket still holds objects.
    type: str
    choices: [present, absent]
    default: present
  versioning:
    description:
      - V(true) enables versioning, V(false) suspends it (S3 cannot turn versioning fully off once it was on).
      - When unset, versioning is left as it is.
    type: bool
  lifecycle_expire_days:
    description:
      - Expire current objects this many days after creation and delete non-current versions this many days after they
        were replaced, through one lifecycle rule with ID O(lifecycle_rule_id).
      - V(0) removes that rule. When unset, lifecycle is left as it is.
    type: int
  lifecycle_rule_id:
    description: ID of the lifecycle rule this module owns.
    type: str
    default: expire-old-objects
"""

EXAMPLES = r"""
- name: Keep the MLflow bucket, versioned, old versions expiring after 90 days
  mlops.mlflow_stack.minio_bucket:
    endpoint_url: https://minio1.example.org:9000
    login_access_key: "{{ minio_root_user }}"
    login_secret_key: "{{ minio_root_password }}"
    ca_bundle: /etc/mlflow-stack/ca.crt
    name: mlflow
    versioning: true
    lifecycle_expire_days: 90
  delegate_to: localhost
  run_once: true
  no_log: true
"""

RETURN = r"""
name:
  description: The bucket name.
  returned: always
  type: str
  sample: mlflow
actions:
  description: What was (or in check mode would be) done.
  returned: always
  type: list
  elements: str
  sample: [create bucket, enable versioning]
versioning:
  description: Versioning status after the run (V(Enabled), V(Suspended) or V(Off)).
  returned: when state is present
  type: str
  sample: Enabled
lifecycle_expire_days:
  description: Days of the owned expiry rule after the run, V(null) when there is none.
  returned: when state is present
  type: int
  sample: 90
error_class:
  description: V(connection) when the server could not be used with the login key, V(other) otherwise.
  returned: failure
  type: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.mlops.mlflow_stack.plugins.module_utils.minio_admin import (
    HAS_MINIO,
    MINIO_IMPORT_ERROR,
    check_login,
    connection_argument_spec,
    connection_hint,
    s3_client,
)

if HAS_MINIO:
    from minio.commonconfig import ENABLED, Filter
    from minio.lifecycleconfig import Expiration, LifecycleConfig, NoncurrentVersionExpiration, Rule
    from minio.versioningconfig import OFF, SUSPENDED, VersioningConfig


def _owned_days(config, rule_id):
    for rule in (config.rules if config else []):
        if rule.rule_id == rule_id and rule.expiration is not None:
            return rule.expiration.days
    return None


def _lifecycle_with(config, rule_id, days):
    others = [r for r in (config.rules if config else []) if r.rule_id != rule_id]
    if days:
        others.append(Rule(
            ENABLED,
            rule_filter=Filter(prefix=""),
            rule_id=rule_id,
            expiration=Expiration(days=days),
            noncurrent_version_expiration=NoncurrentVersionExpiration(noncurrent_days=days),
        ))
    return LifecycleConfig(others) if others else None


def ensure_bucket(module, client):
    params = module.params
    name = params["name"]
    actions = []
    check_login(client)
    exists = client.bucket_exists(name)
    before = {"exists": exists}
    result = {"name": name, "actions": actions}

    if params["state"] == "absent":
        if exists:
            actions.append("remove bucket")
            if not module.check_mode:
                client.remove_bucket(name)
        result["diff"] = {"before": before, "after": {"exists": False}}
        return result

    if not exists:
        actions.append("create bucket")
        if not module.check_mode:
            client.make_bucket(name, location=params["region"])

    # A bucket that never had versioning reports no status at all.
    status = (client.get_bucket_versioning(name).status or OFF) if exists else OFF
    before["versioning"] = status
    if params["versioning"] is not None:
        wanted = ENABLED if params["versioning"] else (SUSPENDED if status != OFF else OFF)
        if wanted != status:
            actions.append("enable versioning" if wanted == ENABLED else "suspend versioning")
            if not module.check_mode:
                client.set_bucket_versioning(name, VersioningConfig(wanted))
            status = wanted
    result["versioning"] = status

    lifecycle = client.get_bucket_lifecycle(name) if exists else None
    days = _owned_days(lifecycle, params["lifecycle_rule_id"])
    before["lifecycle_expire_days"] = days
    wanted_days = params["lifecycle_expire_days"]
    if wanted_days is not None and (wanted_days or None) != days:
        new_config = _lifecycle_with(lifecycle, params["lifecycle_rule_id"], wanted_days)
        actions.append("set expiry to %d days" % wanted_days if wanted_days else "remove expiry rule")
        if not module.check_mode:
            if new_config is None:
                client.delete_bucket_lifecycle(name)
            else:
                client.set_bucket_lifecycle(name, new_config)
        days = wanted_days or None
    result["lifecycle_expire_days"] = days
    result["diff"] = {"before": before, "after": {"exists": True, "versioning": status, "lifecycle_expire_days": days}}
    return result


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        versioning=dict(type="bool"),
        lifecycle_expire_days=dict(type="int"),
        lifecycle_rule_id=dict(type="str", default="expire-old-objects"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_MINIO:
        module.fail_json(msg=missing_required_lib("minio"), exception=MINIO_IMPORT_ERROR, error_class="other")
    if (module.params["lifecycle_expire_days"] or 0) < 0:
        module.fail_json(msg="lifecycle_expire_days must be 0 (no expiry) or a positive number of days.", error_class="other")
    try:
        result = ensure_bucket(module, s3_client(module))
    except Exception as exc:  # every server or transport error is reported with its likely fix
        module.fail_json(msg="Bucket %s: %s" % (module.params["name"], connection_hint(module, exc)), error_class="connection")
    diff = result.pop("diff")
    if module._diff:
        result["diff"] = diff
    module.exit_json(changed=bool(result["actions"]), **result)


if __name__ == "__main__":
    main()
