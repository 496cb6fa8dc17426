# -*- coding: utf-8 -*-
# Copyright: mlops.mlflow_stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one rule every role's preflight applies to passwords and secret keys."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: weak_secret
short_description: Is a value too weak, or a placeholder, to be used as a secret
version_added: 0.1.0
author:
  - mlops.mlflow_stack contributors
description:
  - Returns V(true) when the value cannot be a real secret, so a preflight refuses it before a host changes.
    Every role of the collection checks its passwords and secret keys with this test, so all of them refuse the same values.
  - A value that is not a string (missing, V(null), a number, a list) is weak.
  - So is a value shorter than O(min_length) characters once surrounding blanks are ignored (an empty one included).
  - So is a placeholder word alone, in any case, possibly repeated or padded with digits and punctuation, that is
    V(password), V(passw0rd), V(changeme), V(change_me), V(change-me), V(changeit), V(secret), V(example),
    V(placeholder), V(replace_me), V(minioadmin) (so V(Password123!) is weak too).
  - So is a value starting with C(CHANGE_ME), C(CHANGEME), C(CHANGE-ME), C(REPLACE_ME) or C(vault_), in any case (a
    placeholder left in the vault, or the name of a vault variable put where its value belongs).
  - So is a value holding a line break or another control character, which would break the environment and
    configuration files the secret is written to.
  - The test never includes the value in its result; a failing assert should name the variable, not print it.
options:
  _input:
    description: The value to judge (a vault-encrypted value is judged by its plaintext).
    type: raw
    required: true
  min_length:
    description:
      - The fewest characters a value may have.
      - Lower it only for a value that is not a secret but must not be a placeholder either, such as a user name.
    type: int
    default: 12
"""

EXAMPLES = r"""
- name: Refuse a weak database password without printing it
  ansible.builtin.assert:
    that: mlflow_server_db_password is not mlops.mlflow_stack.weak_secret
    fail_msg: mlflow_server_db_password is empty, short or a placeholder. Set it from the vault.
    quiet: true

- name: Allow a short user name, but not a placeholder one
  ansible.builtin.assert:
    that: minio_root_user is not mlops.mlflow_stack.weak_secret(min_length=3)
    quiet: true

- name: Name the users whose password is weak
  ansible.builtin.set_fact:
    weak_users: "{{ users | selectattr('password', 'mlops.mlflow_stack.weak_secret') | map(attribute='name') | list }}"
"""

RETURN = r"""
_value:
  description: V(true) when the value is weak or a placeholder, V(false) when it may be used as a secret.
  type: boolean
"""

import re

from ansible.errors import AnsibleFilterError

_PLACEHOLDER_WORD = r"(?:passw[o0]rd|change[-_]?me|change[-_]?it|secret|example|placeholder|replace[-_]?me|minioadmin)"
# A placeholder word alone, repeated, or padded with digits, blanks and punctuation.
_PLACEHOLDER = re.compile(r"[\W\d_]*(?:%s[\W\d_]*)+" % _PLACEHOLDER_WORD, re.IGNORECASE)
# A placeholder left in the vault, or a vault variable's name where its value belongs.
_PLACEHOLDER_PREFIX = re.compile(r"(?:change[-_]?me|replace[-_]?me|vault_)", re.IGNORECASE)
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
# Vault-encrypted values that templating hands over undecrypted (ansible-core before 2.19); str() decrypts them.
_VAULT_TYPES = ("AnsibleVaultEncryptedUnicode", "EncryptedString")


def weak_secret(value, min_length=12):
    """True when ``value`` cannot be a real secret (see DOCUMENTATION for the rule)."""
    try:
        min_length = int(min_length)
    except (TypeError, ValueError):
        raise AnsibleFilterError("weak_secret: min_length must be a whole number, got %r" % (min_length,))
    if type(value).__name__ in _VAULT_TYPES:
        value = str(value)
    if not isinstance(value, str):
        return True
    stripped = value.strip()
    return bool(
        len(stripped) < min_length
        or _PLACEHOLDER.fullmatch(stripped)
        or _PLACEHOLDER_PREFIX.match(stripped)
        or _CONTROL_CHARACTER.search(value)
    )


class TestModule(object):
    def tests(self):
        return {"weak_secret": weak_secret}
