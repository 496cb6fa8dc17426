# -*- coding: utf-8 -*-
# Copyright: mlops.mlflow_stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one disk-space rule of the roles' health entry points, from gathered facts."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: disk_health
short_description: Health records for the free space of the filesystems holding some paths
version_added: 0.1.0
author:
  - mlops.mlflow_stack contributors
description:
  - Finds, in the gathered C(ansible_facts.mounts), the filesystem that holds each path (the longest mount point that
    contains it) and returns one health record per filesystem, naming the paths it holds.
  - A filesystem passes when at least O(min_free_percent) of it is free.
  - A path that no gathered mount holds is recorded as not judged (it passes). Ansible reports only filesystems on a
    device, so a container's overlay root, for one, is not in C(ansible_facts.mounts); on a host without the facts
    gathered every path is in that case (gather the C(mounts) subset).
  - Every role's C(tasks_from=health) uses it, so all of them judge disk space the same way.
options:
  _input:
    description: >-
      What each path holds, as C(description => path), for example C({"data": "/var/lib/minio/data"}).
    type: dict
    required: true
  mounts:
    description: C(ansible_facts.mounts) of the host.
    type: list
    elements: dict
    required: true
  min_free_percent:
    description: The least free space, in percent of the filesystem, that passes.
    type: int
    required: true
  host:
    description: The host the records are about (C(inventory_hostname)).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Record the free space of the filesystem holding the data directory
  ansible.builtin.set_fact:
    health_checks: >-
      {{ health_checks | default([]) + {'data': '/var/lib/minio/data'}
         | mlops.mlflow_stack.disk_health(ansible_facts.mounts, 10, inventory_hostname) }}
"""

RETURN = r"""
_value:
  description:
    - >-
      One record per filesystem, C({host, component: disk, check, ok, detail}), in the order of the paths, for example
      C({"host": "db1", "component": "disk", "check": "free space on / (data)", "ok": true, "detail": "5120 MiB free, 48% used"}).
  type: list
  elements: dict
"""

from ansible.errors import AnsibleFilterError


def _holder(path, mounts):
    """The mount whose mount point is the longest prefix (by path components) of ``path``."""
    best = None
    for mount in mounts:
        point = mount.get("mount", "")
        if path == point or path.startswith(point.rstrip("/") + "/"):
            if best is None or len(point) > len(best["mount"]):
                best = mount
    return best


def disk_health(paths, mounts, min_free_percent, host):
    if not isinstance(paths, dict):
        raise AnsibleFilterError("disk_health: the input must be a dict of description => path, got %r" % (paths,))
    try:
        min_free = int(min_free_percent)
    except (TypeError, ValueError):
        raise AnsibleFilterError("disk_health: min_free_percent must be a whole number, got %r" % (min_free_percent,))
    found = {}
    missing = []
    for what, path in paths.items():
        mount = _holder(str(path), mounts or [])
        if mount is None:
            missing.append((what, path))
        else:
            found.setdefault(mount["mount"], (mount, []))[1].append(what)
    records = []
    for point, (mount, whats) in found.items():
        total = int(mount.get("size_total") or 0)
        available = int(mount.get("size_available") or 0)
        free_percent = 100.0 * available / total if total else 0.0
        records.append({
            "host": host, "component": "disk", "check": "free space on %s (%s)" % (point, ", ".join(whats)),
            "ok": free_percent >= min_free,
            "detail": "%d MiB free, %d%% used" % (available // 1048576, round(100 - free_percent)),
        })
    for what, path in missing:
        records.append({"host": host, "component": "disk", "check": "free space for %s (%s)" % (path, what),
                        "ok": True, "detail": "not judged: its filesystem is not in ansible_facts.mounts"
                                              " (no device, e.g. a container's overlay root)"})
    return records


class FilterModule(object):
    def filters(self):
        return {"disk_health": disk_health}
