#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlops.mlflow_stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mlflow_model_gate
short_description: Fail a pipeline when a new model version is worse than the baseline, promote it when it is not
version_added: 0.1.0
description:
  - Compares the metrics of a candidate version of an MLflow registered model with those of a baseline version, one rule
    per metric, and fails with a message that names every metric that regressed and by how much.
  - The baseline is the version behind an alias (O(baseline_alias), by default the alias O(alias) that promotion moves), or
    the best of the last N versions before the candidate by one metric (O(baseline_best_of_last), O(baseline_metric)).
    With no baseline yet (a first model, an alias not set) the gate passes and says so.
  - Metrics are read from the run each model version was registered from (the latest value of each metric of that run).
  - With O(promote=true) the candidate version is tagged with the verdict (C(mlflow_stack.gate.verdict),
    C(mlflow_stack.gate.baseline)) and, only when it passed, O(alias) is moved to it.
  - Talks to the tracking server's REST API (C(/api/2.0/mlflow/...)) with the Python standard library and Ansible's
    C(open_url), with TLS verification and HTTP basic auth, so it works through the stack's nginx front door with the
    settings of the client env file that the mlflow_server role writes. Nothing needs to be installed on the controller.
  - Failures are classified in RV(error_class), so a pipeline can tell a worse model from a broken connection.
author:
  - mlops.mlflow_stack contributors
extends_documentation_fragment:
  - mlops.mlflow_stack.validate_certs
attributes:
  check_mode:
    support: full
    details: Reads the registry and compares; reports C(changed) when it would tag the candidate or move the alias, without
      writing.
  diff_mode:
    support: none
options:
  tracking_uri:
    description:
      - Base URL of the tracking server, for example V(https://mlflow.example.com), without a path.
      - Defaults to the environment variable E(MLFLOW_TRACKING_URI), as set by the client env file.
    type: str
    required: true
  username:
    description:
      - User for HTTP basic auth (the stack's nginx_auth users). No authentication when unset.
      - Defaults to the environment variable E(MLFLOW_TRACKING_USERNAME).
    type: str
  password:
    description:
      - Password of O(username).
      - Defaults to the environment variable E(MLFLOW_TRACKING_PASSWORD). Prefer the environment (a CI secret) to a
        playbook variable.
    type: str
  ca_path:
    description:
      - PEM file with the CA certificate(s) to verify the server with, on the host that runs the module.
      - Defaults to the environment variable E(MLFLOW_TRACKING_SERVER_CERT_PATH); when neither is set, the system trust
        store is used.
    type: path
  timeout:
    description:
      - Timeout in seconds of each request. Answers 429, 502, 503 and 504 are retried three times with back-off.
    type: int
    default: 30
  name:
    description:
      - Name of the registered model.
    type: str
    required: true
  candidate_version:
    description:
      - The model version to gate.
      - Exactly one of O(candidate_version) and O(candidate_run_id) is required.
    type: int
  candidate_run_id:
    description:
      - Gate the version registered from this run (the newest, if the run registered several).
    type: str
  baseline_alias:
    description:
      - Compare with the version behind this alias.
      - Defaults to O(alias) unless O(baseline_best_of_last) is set.
    type: str
  baseline_best_of_last:
    description:
      - Compare with the best of the last N versions registered before the candidate, ranked by O(baseline_metric).
        Versions that are not READY, or whose run lacks the metric, are not ranked.
    type: int
  baseline_metric:
    description:
      - The metric that ranks versions for O(baseline_best_of_last). It must have a rule, whose direction says which
        value is best.
      - Defaults to the metric of the first rule.
    type: str
  rules:
    description:
      - One rule per metric. The candidate passes a rule when it is better than the baseline, equal, or worse by no more
        than the tolerance, which is C(max(abs_tolerance, rel_tolerance * |baseline|)).
      - The gate passes when every rule passes.
    type: list
    elements: dict
    required: true
    suboptions:
      metric:
        description: Metric key as logged in the run, for example V(rmse).
        type: str
        required: true
      direction:
        description: Which way is better.
        type: str
        choices: [higher, lower]
        required: true
      abs_tolerance:
        description: How much worse than the baseline the candidate may be, in the metric's unit.
        type: float
        default: 0.0
      rel_tolerance:
        description: How much worse the candidate may be as a fraction of the baseline's value (V(0.02) is 2%).
        type: float
        default: 0.0
      required:
        description:
          - Whether the candidate's run must have logged the metric. A missing required metric fails the gate
            (RV(error_class=metric_missing)); a missing optional one is reported as V(missing_optional) and passes.
          - A metric the baseline lacks is reported as V(no_baseline) and passes.
        type: bool
        default: true
  promote:
    description:
      - Tag the candidate version with the verdict and, when it passed, move O(alias) to it.
      - A candidate that failed is tagged too, so the registry shows why it was not promoted.
    type: bool
    default: false
  alias:
    description:
      - The alias that promotion moves to the candidate, and the default baseline.
    type: str
    default: champion
notes:
  - The module makes a handful of requests (one per version it reads); the stack's nginx rate limit is far above that.
  - The candidate is compared with the baseline's metrics as they are now; re-running the gate for the same candidate is
    safe and, once promoted, changes nothing.
seealso:
  - name: MLflow model registry
    description: Registered models, versions and aliases.
    link: https://mlflow.org/docs/latest/ml/model-registry/
  - name: MLflow REST API
    description: The endpoints the module calls.
    link: https://mlflow.org/docs/latest/api_reference/rest-api.html
"""

EXAMPLES = r"""
# A pipeline that sourced the client env file (MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME,
# MLFLOW_TRACKING_SERVER_CERT_PATH) and has MLFLOW_TRACKING_PASSWORD from its secret store.
- name: Promote the new version when it is no worse than the champion
  mlops.mlflow_stack.mlflow_model_gate:
    name: elasticnet-demo
    candidate_version: "{{ trained.model_version }}"
    rules:
      - metric: rmse
        direction: lower
        rel_tolerance: 0.02
      - metric: r2
        direction: higher
        abs_tolerance: 0.01
      - metric: mae
        direction: lower
        required: false
    promote: true

- name: Compare a run's model with the best of the last five versions, without promoting
  mlops.mlflow_stack.mlflow_model_gate:
    tracking_uri: https://mlflow.example.com
    username: ci
    password: "{{ vault_mlflow_stack_ci_password }}"
    ca_path: /etc/ssl/mlflow-stack-ca.crt
    name: churn
    candidate_run_id: "{{ run_id }}"
    baseline_best_of_last: 5
    baseline_metric: auc
    rules:
      - metric: auc
        direction: higher
  register: gate

- name: Tell a worse model from a broken pipeline
  mlops.mlflow_stack.mlflow_model_gate:
    name: churn
    candidate_version: 12
    rules:
      - metric: auc
        direction: higher
  register: gate
  failed_when: gate.failed and gate.error_class != 'regressed'
"""

RETURN = r"""
model_name:
  description: The registered model.
  returned: always
  type: str
  sample: elasticnet-demo
candidate_version:
  description: The version that was gated (also when it was given by O(candidate_run_id)).
  returned: when the candidate was found
  type: str
  sample: "7"
candidate_run_id:
  description: The run the candidate version was registered from.
  returned: when the candidate was found
  type: str
  sample: 0f9c4c2a5b8e4d7f9a1b3c5d7e9f1a2b
baseline_version:
  description: The version the candidate was compared with; V(null) when there was none.
  returned: when the candidate was found
  type: str
  sample: "6"
baseline:
  description: How the baseline was chosen.
  returned: when the candidate was found
  type: str
  sample: alias 'champion'
metrics:
  description: One row per rule, in the order of O(rules).
  returned: when the candidate was found
  type: list
  elements: dict
  contains:
    metric:
      description: Metric key.
      type: str
      sample: rmse
    direction:
      description: Which way is better.
      type: str
      sample: lower
    required:
      description: Whether the candidate had to log the metric.
      type: bool
      sample: true
    candidate:
      description: The candidate's value; V(null) when its run did not log the metric.
      type: float
      sample: 53.1
    baseline:
      description: The baseline's value; V(null) when there is no baseline or it lacks the metric.
      type: float
      sample: 54.0
    delta:
      description: V(candidate - baseline); V(null) when either is missing.
      type: float
      sample: -0.9
    rel_delta:
      description: V(delta / |baseline|); V(null) when either is missing or the baseline is 0.
      type: float
      sample: -0.0167
    worse_by:
      description: How much worse the candidate is, in the metric's unit (negative when it is better).
      type: float
      sample: -0.9
    tolerance:
      description: How much worse it was allowed to be, C(max(abs_tolerance, rel_tolerance * |baseline|)).
      type: float
      sample: 1.08
    verdict:
      description:
        - V(pass) - no worse than the baseline beyond the tolerance.
        - V(regressed) - worse than the baseline beyond the tolerance (or NaN).
        - V(missing) - a required metric the candidate's run did not log.
        - V(missing_optional) - an optional metric the candidate's run did not log.
        - V(no_baseline) - nothing to compare with (no baseline version, or it lacks the metric).
      type: str
      sample: pass
passed:
  description: Whether the gate passed (RV(verdict) is V(passed) or V(no_baseline)).
  returned: always
  type: bool
  sample: true
verdict:
  description:
    - V(passed) - every rule passed against a baseline.
    - V(no_baseline) - there was nothing to compare against; the gate passes.
    - V(regressed) - at least one metric is worse than its tolerance.
    - V(metric_missing) - the candidate lacks a required metric (checked before regressions).
  returned: when the candidate was found
  type: str
  sample: passed
promoted:
  description: Whether O(alias) points (or, in check mode, would point) to the candidate after this run.
  returned: always
  type: bool
  sample: true
alias:
  description: The alias promotion manages; V(null) unless O(promote=true).
  returned: always
  type: str
  sample: champion
previous_alias_version:
  description: The version O(alias) pointed to before this run; V(null) when it was not set.
  returned: when O(promote=true)
  type: str
  sample: "6"
tags:
  description:
    - The gate's tags of the candidate version after this run (in check mode, as they would be).
    - A re-run for the version that is already the baseline keeps the tags of the run that promoted it.
  returned: when O(promote=true)
  type: dict
  sample: {"mlflow_stack.gate.verdict": "passed", "mlflow_stack.gate.baseline": "6"}
error_class:
  description:
    - Machine-readable class of the failure.
    - V(regressed) - the gate ran and the candidate is worse than the baseline; RV(metrics) says where.
    - V(metric_missing) - the candidate's run did not log a required metric.
    - V(unreachable) - no connection to O(tracking_uri) (server down, wrong host or port, firewall, timeout).
    - V(tls) - the server certificate could not be verified (wrong or missing O(ca_path), name mismatch, or no HTTPS
      on that port).
    - V(auth) - the server refused the credentials (HTTP 401) or the user's permissions (HTTP 403).
    - V(no_such_model) - no registered model O(name).
    - V(no_such_version) - no version O(candidate_version), or none registered from O(candidate_run_id).
    - V(no_such_run) - a version to compare was not registered from a run, or its run is gone.
    - V(invalid_input) - the rules or the baseline options cannot be evaluated.
    - V(other) - anything else (an unexpected answer, an overloaded server); the message carries the server's answer.
  returned: failure
  type: str
  sample: regressed
"""

from ansible.module_utils.basic import AnsibleModule, env_fallback
from ansible.module_utils.urls import open_url

from ansible_collections.mlops.mlflow_stack.plugins.module_utils.mlflow_gate import (
    GateError,
    MlflowRest,
    Registry,
    redact_url,
    run_gate,
)


def argument_spec():
    return dict(
        tracking_uri=dict(type="str", required=True, fallback=(env_fallback, ["MLFLOW_TRACKING_URI"])),
        username=dict(type="str", fallback=(env_fallback, ["MLFLOW_TRACKING_USERNAME"])),
        password=dict(type="str", no_log=True, fallback=(env_fallback, ["MLFLOW_TRACKING_PASSWORD"])),
        ca_path=dict(type="path", fallback=(env_fallback, ["MLFLOW_TRACKING_SERVER_CERT_PATH"])),
        validate_certs=dict(type="bool", default=True),
        timeout=dict(type="int", default=30),
        name=dict(type="str", required=True),
        candidate_version=dict(type="int"),
        candidate_run_id=dict(type="str"),
        baseline_alias=dict(type="str"),
        baseline_best_of_last=dict(type="int"),
        baseline_metric=dict(type="str"),
        rules=dict(type="list", elements="dict", required=True, options=dict(
            metric=dict(type="str", required=True),
            direction=dict(type="str", required=True, choices=["higher", "lower"]),
            abs_tolerance=dict(type="float", default=0.0),
            rel_tolerance=dict(type="float", default=0.0),
            required=dict(type="bool", default=True),
        )),
        promote=dict(type="bool", default=False),
        alias=dict(type="str", default="champion"),
    )


def make_registry(params):
    return Registry(MlflowRest(params["tracking_uri"], open_url, username=params["username"], password=params["password"],
                               ca_path=params["ca_path"], validate_certs=params["validate_certs"],
                               timeout=params["timeout"]))


def run(module):
    params = module.params
    if not params["tracking_uri"].lower().startswith(("http://", "https://")):
        return False, {"model_name": params["name"]}, GateError(
            "invalid_input", "tracking_uri must be an http:// or https:// URL of the tracking server (got %s)."
            % redact_url(params["tracking_uri"]))
    try:
        changed, result = run_gate(make_registry(params), params, check_mode=module.check_mode)
    except GateError as exc:
        result = dict(exc.result)
        return result.pop("changed", False), result, exc
    return changed, result, None


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[("candidate_version", "candidate_run_id"), ("baseline_alias", "baseline_best_of_last")],
        required_one_of=[("candidate_version", "candidate_run_id")],
        supports_check_mode=True,
    )
    changed, result, error = run(module)
    if error is not None:
        module.fail_json(msg=error.msg, error_class=error.error_class, changed=changed, **result)
    msg = result.pop("msg")
    module.exit_json(changed=changed, msg=msg, **result)


if __name__ == "__main__":
    main()
