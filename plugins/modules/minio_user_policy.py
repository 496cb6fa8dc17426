#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlops.mlflow_stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: minio_user_policy
short_description: Manage a MinIO user whose policy allows only its own buckets
version_added: 0.1.0
description:
  - Creates a MinIO user (an access key with its secret) and a policy named O(policy_name) that allows the user to list,
    read and (unless O(read_only)) write the buckets in O(buckets) and nothing else, then attaches exactly that policy.
  - This is how the MLflow key is made, so MLflow never holds the root credentials.
  - The secret is idempotent without being read back. The module signs one request with the user's key and only
    resets the secret when the server rejects it.
  - Uses the MinIO admin API through the C(minio) Python package; no C(mc) is needed.
  - The login key O(login_access_key) needs admin rights, so use the root user.
author:
  - mlops.mlflow_stack contributors
extends_documentation_fragment:
  - mlops.mlflow_stack.minio
  - mlops.mlflow_stack.validate_certs
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
options:
  access_key:
    description: The user's access key (its name). At least 3 characters.
    type: str
    required: true
  secret_key:
    description: The user's secret key. At least 8 characters; required when O(state=present).
    type: str
  buckets:
    description: Buckets the user may use. An empty list gives a policy that allows nothing.
    type: list
    elements: str
    default: []
  read_only:
    description: Allow only listing and reading.
    type: bool
    default: false
  policy_name:
    description: Name of the policy made for this user. Defaults to C(<access_key>-buckets).
    type: str
  state:
    description: V(present) makes the user and policy; V(absent) removes both.
    type: str
    choices: [present, absent]
    default: present
"""

EXAMPLES = r"""
- name: Give MLflow a key that can use only its bucket
  mlops.mlflow_stack.minio_user_policy:
    endpoint_url: https://minio1.example.org:9000
    login_access_key: "{{ minio_root_user }}"
    login_secret_key: "{{ minio_root_password }}"
    ca_bundle: /etc/mlflow-stack/ca.crt
    access_key: mlflow
    secret_key: "{{ vault_mlflow_s3_secret_key }}"
    buckets: [mlflow]
  delegate_to: localhost
  run_once: true
  no_log: true
"""

RETURN = r"""
access_key:
  description: The user's access key.
  returned: always
  type: str
  sample: mlflow
policy_name:
  description: The policy attached to the user.
  returned: always
  type: str
  sample: mlflow-buckets
policy:
  description: The policy document the user gets.
  returned: when state is present
  type: dict
actions:
  description: What was (or in check mode would be) done.
  returned: always
  type: list
  elements: str
  sample: [create policy, create user, attach policy]
error_class:
  description: V(connection) when the server could not be used with the login key, V(other) otherwise.
  returned: failure
  type: str
"""

import json

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.mlops.mlflow_stack.plugins.module_utils.minio_admin import (
    HAS_MINIO,
    MINIO_IMPORT_ERROR,
    MinioAdminException,
    S3Error,
    admin_client,
    bucket_policy,
    connection_argument_spec,
    connection_hint,
    normalize_policy,
    s3_client,
)

_REJECTED_KEY_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch")


def _admin_get(call, *args):
    """The JSON an admin call answers, or None when the thing does not exist."""
    try:
        return json.loads(call(*args))
    except MinioAdminException as exc:
        if str(getattr(exc, "_code", "")) == "404" or "NoSuch" in str(getattr(exc, "_body", "")):
            return None
        raise


def _secret_works(module, buckets):
    """Sign one harmless request with the user's key: the only way to know the stored secret is right."""
    client = s3_client(module, module.params["access_key"], module.params["secret_key"])
    try:
        if buckets:
            # A GET with an error body: HEAD answers a bad signature with a bare 403.
            next(iter(client.list_objects(buckets[0])), None)
        else:
            client.list_buckets()
    except S3Error as exc:
        if exc.code in _REJECTED_KEY_CODES:
            return False
        # AccessDenied and the like prove that the key and secret were accepted.
    return True


def ensure_user(module, admin):
    params = module.params
    access_key = params["access_key"]
    policy_name = params["policy_name"] or "%s-buckets" % access_key
    actions = []
    result = {"access_key": access_key, "policy_name": policy_name, "actions": actions}
    user = _admin_get(admin.user_info, access_key)
    current_policy = _admin_get(admin.policy_info, policy_name)

    if params["state"] == "absent":
        if user is not None:
            actions.append("remove user")
            if not module.check_mode:
                admin.user_remove(access_key)
        if current_policy is not None:
            actions.append("remove policy")
            if not module.check_mode:
                admin.policy_remove(policy_name)
        return result

    policy = bucket_policy(params["buckets"], write=not params["read_only"])
    result["policy"] = policy
    current_doc = (current_policy or {}).get("Policy", current_policy) if current_policy else None
    if current_doc is None or normalize_policy(current_doc) != normalize_policy(policy):
        actions.append("create policy" if current_doc is None else "update policy")
        if not module.check_mode:
            admin.policy_add(policy_name, policy=policy)

    if user is None:
        actions.append("create user")
        if not module.check_mode:
            admin.user_add(access_key, params["secret_key"])
    else:
        if not _secret_works(module, params["buckets"]):
            actions.append("reset secret key")
            if not module.check_mode:
                admin.user_add(access_key, params["secret_key"])
        if user.get("status") and user["status"] != "enabled":
            actions.append("enable user")
            if not module.check_mode:
                admin.user_enable(access_key)

    attached = sorted(p for p in (user or {}).get("policyName", "").split(",") if p)
    if attached != [policy_name]:
        actions.append("attach policy")
        if not module.check_mode:
            admin.policy_set(policy_name, user=access_key)
    return result


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        access_key=dict(type="str", required=True, no_log=False),
        secret_key=dict(type="str", no_log=True),
        buckets=dict(type="list", elements="str", default=[]),
        read_only=dict(type="bool", default=False),
        policy_name=dict(type="str"),
        state=dict(type="str", default="present", choices=["present", "absent"]),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_if=[("state", "present", ["secret_key"])])
    if not HAS_MINIO:
        module.fail_json(msg=missing_required_lib("minio"), exception=MINIO_IMPORT_ERROR, error_class="other")
    params = module.params
    if len(params["access_key"]) < 3 or (params["state"] == "present" and len(params["secret_key"]) < 8):
        module.fail_json(msg="MinIO needs an access_key of at least 3 and a secret_key of at least 8 characters "
                             "(access_key %r)." % params["access_key"], error_class="other")
    try:
        result = ensure_user(module, admin_client(module))
    except Exception as exc:  # every server or transport error is reported with its likely fix
        module.fail_json(msg="User %s: %s" % (params["access_key"], connection_hint(module, exc)), error_class="connection")
    module.exit_json(changed=bool(result["actions"]), **result)


if __name__ == "__main__":
    main()
