#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlops.mlflow_stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: stack_inventory_check
short_description: Warn about the adapter files an inventory copied from an earlier release still carries
version_added: 0.2.0
description:
  - Earlier releases shipped C(group_vars/<group>/<role>.yml) and C(group_vars/all/backup.yml) in the example
    inventories, mapping C(mlflow_stack_*) values onto each role's variables. The collection now does that itself
    (the internal C(stack) role's C(vars/main.yml), loaded by every playbook), so those lines have no effect.
  - Reads the C(group_vars) of the given inventories on the controller and warns with every file and line that can be
    deleted, and the lines that are the operator's own settings and must stay. Changes nothing.
  - An action plugin: it runs on the controller, whatever the play's hosts are. Vault-encrypted files are skipped.
author:
  - mlops.mlflow_stack contributors
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
options:
  inventory_dirs:
    description: Inventory directories whose C(group_vars) to read, usually the play hosts' C(inventory_dir).
    type: list
    elements: path
    required: true
  missing_values:
    description:
      - Values a newer release asks for that the inventory does not set yet, each C(name) with what its absence means
        and how to fix it; each becomes one warning.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Warn about adapter files of an earlier release
  mlops.mlflow_stack.stack_inventory_check:
    inventory_dirs: "{{ ansible_play_hosts_all | map('extract', hostvars, 'inventory_dir') | unique }}"
  run_once: true
"""

RETURN = r"""
adapter_files:
  description: The group_vars files that set role variables the collection now sets.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The file.
      type: str
    delete:
      description: Its variables that have no effect any more.
      type: list
      elements: str
    keep:
      description: Its other variables, the operator's own settings.
      type: list
      elements: str
"""
