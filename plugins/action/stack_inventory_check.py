# -*- coding: utf-8 -*-
# Copyright: mlops.mlflow_stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find the adapter files that inventories copied from older releases still carry, and name the
values such an inventory lacks.

Runs on the controller only. The collection now sets these role variables itself
(roles/stack/vars/main.yml, loaded by every playbook with a higher precedence than
group_vars), so an old adapter line no longer has any effect: the play warns with the files and
lines that can go, and with the lines that are the operator's own overrides and must stay.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import yaml

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

WIRING_FILE = os.path.join(os.path.dirname(__file__), "..", "..", "roles", "stack", "vars", "main.yml")

# What the adapters of earlier releases set besides the wiring: the role defaults, written out.
# A line with exactly this value is safe to delete; another value is an operator's override.
LEGACY_DEFAULTS = {
    "nginx_auth_https_port": 443,
    "nginx_auth_tls_issuer": "private_ca",
    "backup_db_sslrootcert": "/home/mlflow/.postgresql/root.crt",
    "backup_dir": "/var/backups/mlflow-stack",
    "backup_retention_count": 14,
    "backup_timer_enabled": True,
    "backup_timer_on_calendar": "*-*-* 02:30:00",
}


# What the adapters of earlier releases set that no role reads any more: safe to delete too.
RETIRED = {"backup_mlflow_check_url", "backup_mlflow_health_timeout"}


def wired_names(path=WIRING_FILE):
    with open(path) as handle:
        return set(yaml.safe_load(handle) or {})


def classify(data, wired):
    """Split one group_vars file's keys into (can go, must stay)."""
    can_go, stays = [], []
    for key, value in data.items():
        if key in wired or key in RETIRED or (key in LEGACY_DEFAULTS and LEGACY_DEFAULTS[key] == value):
            can_go.append(key)
        else:
            stays.append(key)
    return can_go, stays


def scan(inventory_dirs, wired):
    """Return [(path, can_go, stays)] for the group_vars files that set wired role variables."""
    found = []
    for inv in sorted(set(inventory_dirs)):
        base = os.path.join(inv, "group_vars")
        if not os.path.isdir(base):
            continue
        for root, _dirs, files in sorted(os.walk(base, followlinks=True)):
            for name in sorted(files):
                if not name.endswith((".yml", ".yaml")):
                    continue
                path = os.path.join(root, name)
                try:
                    with open(path) as handle:
                        text = handle.read()
                    if text.startswith("$ANSIBLE_VAULT"):
                        continue
                    data = yaml.safe_load(text)
                except (OSError, yaml.YAMLError):
                    continue
                if not isinstance(data, dict):
                    continue
                can_go, stays = classify(data, wired)
                if any(key in wired for key in can_go):
                    found.append((path, can_go, stays))
    return found


def missing_warnings(missing):
    """One warning per value the inventory should set and does not: {name: what that means}."""
    if not isinstance(missing, dict):
        raise AnsibleActionFail("missing_values must be a dict of value name: what its absence means")
    return ["%s is not set: %s" % (name, why) for name, why in sorted(missing.items())]


def message(path, can_go, stays):
    if not stays:
        return "%s: the collection sets all of it now; delete the file." % path
    return "%s: the collection sets %s now; delete those lines and keep %s (your own settings)." % (
        path, ", ".join(can_go), ", ".join(stays))


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("inventory_dirs", "missing_values"))

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        dirs = self._task.args.get("inventory_dirs") or []
        if isinstance(dirs, str):
            dirs = [dirs]
        if not isinstance(dirs, list):
            raise AnsibleActionFail("inventory_dirs must be a list of paths")
        found = scan([d for d in dirs if d], wired_names())
        result.update(changed=False, adapter_files=[{"path": p, "delete": c, "keep": s} for p, c, s in found])
        warnings = missing_warnings(self._task.args.get("missing_values") or {})
        if found:
            warnings += [
                "This inventory still carries the adapter files of an earlier release. The collection "
                "sets these role variables itself now (roles/stack/vars/main.yml), so they have no "
                "effect; set mlflow_stack_* values in group_vars/all/stack.yml instead."
            ] + [message(*item) for item in found]
        if warnings:
            result["warnings"] = warnings
        return result
