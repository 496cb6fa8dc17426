# -*- coding: utf-8 -*-
# Copyright: mlops.mlflow_stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the mlflow_server role deploys as MLflow's KEK passphrase and version, from the host's env file."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: mlflow_kek
short_description: The KEK passphrase and version an MLflow server is to run with, given what its env file holds now
version_added: 0.2.0
author:
  - mlops.mlflow_stack contributors
description:
  - MLflow derives the key that wraps its stored gateway secrets from E(MLFLOW_CRYPTO_KEK_PASSPHRASE) and
    E(MLFLOW_CRYPTO_KEK_VERSION) (its public default passphrase and version 1 when they are unset). A secret is
    readable only by a server with the passphrase and version it was wrapped with, so a change of either goes with a
    re-wrap of the stored secrets (module C(mlops.mlflow_stack.mlflow_secrets_kek)) before the server restarts.
  - Reads both values from the server's env file as it is now (systemd C(EnvironmentFile) syntax, double quotes with
    backslash escapes) and decides what to deploy.
  - A wanted passphrase that differs from the one deployed raises the version by one, as C(mlflow crypto rotate-kek)
    does; the same passphrase keeps the version. An empty wanted passphrase keeps what the host has (MLflow's default
    on a host set up before the role managed the passphrase), so unsetting never makes stored secrets unreadable.
  - A host without an env file (none deployed yet) gets version 1.
options:
  _input:
    description: The env file's text, or V(none) when the host has no env file.
    type: str
    required: true
  wanted:
    description: The passphrase the operator set; empty for none.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Work out the KEK the server will run with
  ansible.builtin.set_fact:
    __kek: "{{ (env_file.content | b64decode if env_file.content is defined else none) | mlops.mlflow_stack.mlflow_kek(wanted) }}"
  no_log: true
"""

RETURN = r"""
_value:
  description:
    - C(passphrase) and C(version) to deploy (passphrase empty for MLflow's default, written nowhere), the
      C(previous_passphrase) and C(previous_version) the env file holds now, C(deployed) (the host has an env file),
      C(differs) (passphrase or version differ from what is deployed) and C(default) (the server will run with
      MLflow's public default passphrase).
  type: dict
"""

import shlex

from ansible.errors import AnsibleFilterError

PASSPHRASE = "MLFLOW_CRYPTO_KEK_PASSPHRASE"
VERSION = "MLFLOW_CRYPTO_KEK_VERSION"


def env_values(text):
    """NAME=value pairs of an env file; a value may be double-quoted with backslash escapes."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        name, raw = line.split("=", 1)
        try:
            words = shlex.split(raw, posix=True)
        except ValueError:
            continue
        values[name.strip()] = words[0] if words else ""
    return values


def mlflow_kek(env_text, wanted):
    if env_text is not None and not isinstance(env_text, str):
        raise AnsibleFilterError("mlflow_kek: expects the env file's text or none, got %s" % type(env_text).__name__)
    if not isinstance(wanted, str):
        raise AnsibleFilterError("mlflow_kek: the wanted passphrase must be a string, got %s" % type(wanted).__name__)
    deployed = env_text is not None
    values = env_values(env_text or "")
    previous = values.get(PASSPHRASE, "")
    try:
        previous_version = int(values.get(VERSION) or 1)
    except ValueError:
        raise AnsibleFilterError("mlflow_kek: the env file's %s is not a whole number" % VERSION)
    passphrase = wanted or previous
    if not deployed:
        version = 1
    elif passphrase == previous:
        version = previous_version
    else:
        version = previous_version + 1
    return {
        "passphrase": passphrase,
        "version": version,
        "previous_passphrase": previous,
        "previous_version": previous_version,
        "deployed": deployed,
        "differs": (passphrase, version) != (previous, previous_version),
        "default": not passphrase,
    }


class FilterModule(object):
    def filters(self):
        return {"mlflow_kek": mlflow_kek}
