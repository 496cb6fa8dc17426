#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlops.mlflow_stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mlflow_secrets_kek
short_description: Re-wrap the keys of MLflow's stored gateway secrets for the KEK passphrase the server will run with
version_added: 0.2.0
description:
  - MLflow (3.x) stores gateway secrets (LLM provider API keys) in the backend store's C(secrets) table with envelope
    encryption. Each secret has its own data key (DEK); the DEK is stored wrapped with a key (KEK) that MLflow
    derives from E(MLFLOW_CRYPTO_KEK_PASSPHRASE) and E(MLFLOW_CRYPTO_KEK_VERSION) (its public default passphrase when
    the variable is unset). A server whose KEK does not unwrap a secret's DEK cannot read that secret.
  - This module makes every stored secret readable with O(passphrase) at O(version), the values the server is about
    to run with. A DEK that the target KEK already unwraps is left alone. Any other is unwrapped with O(passphrase),
    each of O(previous_passphrases) or MLflow's default passphrase, at the version recorded in the row, and wrapped
    again with the target KEK. The secret values themselves are not touched (the same as C(mlflow crypto rotate-kek),
    which does this for one old passphrase).
  - All in one transaction, with the rows locked. When a single secret cannot be unwrapped by any of these
    passphrases nothing is changed and the module fails, naming the secrets (never a value).
  - A backend store without a C(secrets) table (not yet migrated) has nothing to re-wrap.
  - Stop every MLflow server of the backend store first, so that none writes a secret with the old KEK meanwhile.
  - Runs on the MLflow host with MLflow's own Python (set C(ansible_python_interpreter) to the server's virtualenv),
    so the key derivation is MLflow's own. Passphrases and the URI are module options, never on a command line.
author:
  - mlops.mlflow_stack contributors
options:
  backend_store_uri:
    description: The server's backend store URI (SQLAlchemy form, password included).
    type: str
    required: true
  passphrase:
    description: The KEK passphrase the server will run with (E(MLFLOW_CRYPTO_KEK_PASSPHRASE)); empty for MLflow's default.
    type: str
    required: true
  version:
    description: The KEK version the server will run with (E(MLFLOW_CRYPTO_KEK_VERSION)).
    type: int
    required: true
  previous_passphrases:
    description:
      - Passphrases the secrets may be wrapped with now, for example the one the server ran with until now. MLflow's
        default passphrase is always tried too.
    type: list
    elements: str
    default: []
requirements:
  - mlflow (3.5 or later) and its SQLAlchemy, on the Python that runs the module
attributes:
  check_mode:
    support: full
    details: Reports what would be re-wrapped; writes nothing.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Re-wrap MLflow's gateway secrets for the new passphrase (servers stopped)
  mlops.mlflow_stack.mlflow_secrets_kek:
    backend_store_uri: "{{ mlflow_backend_uri }}"
    passphrase: "{{ new_passphrase }}"
    version: 2
    previous_passphrases: ["{{ old_passphrase }}"]
  vars:
    ansible_python_interpreter: /home/mlflow/.venv/bin/python
  no_log: true
"""

RETURN = r"""
secrets:
  description: How many secrets the store holds.
  returned: success
  type: int
rewrapped:
  description: How many of them were (or in check mode would be) re-wrapped for the target KEK.
  returned: success
  type: int
unreadable:
  description: The names of the secrets no passphrase could unwrap (nothing was changed).
  returned: failure
  type: list
  elements: str
error_class:
  description: C(unreadable_secrets), C(backend_store) (the store could not be read or written) or C(other).
  returned: failure
  type: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from mlflow.utils import crypto as mlflow_crypto
    import sqlalchemy
    import sqlalchemy.exc
    import sqlalchemy.pool
except ImportError:
    HAS_MLFLOW = False
    MLFLOW_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_MLFLOW = True
    MLFLOW_IMPORT_ERROR = None

TABLE = "secrets"


class KeyCache(object):
    """MLflow's KEK for (passphrase, version), derived once each (600,000 PBKDF2 rounds)."""

    def __init__(self):
        self._keys = {}

    def __call__(self, passphrase, version):
        key = (passphrase or mlflow_crypto.DEFAULT_KEK_PASSPHRASE, int(version))
        if key not in self._keys:
            self._keys[key] = mlflow_crypto.KEKManager(passphrase=key[0], kek_version=key[1]).get_kek()
        return self._keys[key]


def _unwrap(wrapped_dek, kek):
    try:
        return mlflow_crypto.unwrap_dek(bytes(wrapped_dek), kek)
    except Exception:  # MLflow raises MlflowException for a wrong KEK; anything else is as unreadable
        return None


def plan(rows, passphrase, version, previous, kek):
    """Decide, per secret, what the target KEK needs.

    rows: dicts with secret_id, secret_name, wrapped_dek, kek_version (as stored).
    Returns (updates, unreadable): updates are dicts with secret_id, wrapped_dek, kek_version to write;
    unreadable the names of the secrets no candidate passphrase unwraps.
    """
    target = kek(passphrase, version)
    candidates = []
    for candidate in [passphrase] + list(previous) + [mlflow_crypto.DEFAULT_KEK_PASSPHRASE]:
        candidate = candidate or mlflow_crypto.DEFAULT_KEK_PASSPHRASE
        if candidate not in candidates:
            candidates.append(candidate)
    updates, unreadable = [], []
    for row in rows:
        if _unwrap(row["wrapped_dek"], target) is not None:
            if int(row["kek_version"]) != int(version):
                updates.append({"secret_id": row["secret_id"], "wrapped_dek": bytes(row["wrapped_dek"]),
                                "kek_version": int(version)})
            continue
        for candidate in candidates:
            dek = _unwrap(row["wrapped_dek"], kek(candidate, row["kek_version"]))
            if dek is not None:
                updates.append({"secret_id": row["secret_id"], "wrapped_dek": mlflow_crypto.wrap_dek(dek, target),
                                "kek_version": int(version)})
                break
        else:
            unreadable.append(row["secret_name"])
    return updates, unreadable


def rewrap(uri, passphrase, version, previous, check_mode, kek=None):
    """Re-wrap the store's secrets in one transaction. Returns (result, unreadable names)."""
    kek = kek or KeyCache()
    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.begin() as conn:
            if not sqlalchemy.inspect(conn).has_table(TABLE):
                return {"secrets": 0, "rewrapped": 0}, []
            table = sqlalchemy.Table(TABLE, sqlalchemy.MetaData(), autoload_with=conn)
            query = sqlalchemy.select(table.c.secret_id, table.c.secret_name, table.c.wrapped_dek,
                                      table.c.kek_version).with_for_update()
            rows = [dict(row._mapping) for row in conn.execute(query)]
            updates, unreadable = plan(rows, passphrase, version, previous, kek)
            if unreadable:
                return {"secrets": len(rows), "rewrapped": 0}, unreadable
            if updates and not check_mode:
                for update in updates:
                    conn.execute(table.update().where(table.c.secret_id == update["secret_id"]).values(
                        wrapped_dek=update["wrapped_dek"], kek_version=update["kek_version"]))
            return {"secrets": len(rows), "rewrapped": len(updates)}, []
    finally:
        engine.dispose()


def main():
    module = AnsibleModule(
        argument_spec=dict(
            backend_store_uri=dict(type="str", required=True, no_log=True),
            passphrase=dict(type="str", required=True, no_log=True),
            version=dict(type="int", required=True),
            previous_passphrases=dict(type="list", elements="str", default=[], no_log=True),
        ),
        supports_check_mode=True,
    )
    if not HAS_MLFLOW:
        module.fail_json(msg=missing_required_lib("mlflow (run the module with the MLflow server's Python)"),
                         error_class="other", exception=MLFLOW_IMPORT_ERROR)
    params = module.params
    if params["version"] < 1:
        module.fail_json(msg="version must be 1 or more, got %d." % params["version"], error_class="other")
    try:
        result, unreadable = rewrap(params["backend_store_uri"], params["passphrase"], params["version"],
                                    params["previous_passphrases"], module.check_mode)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        # The driver's message may quote the URI; only its class and first line of the original error are shown.
        origin = getattr(exc, "orig", None) or exc
        first = (str(origin).strip().splitlines() or [""])[0]
        for secret in (params["backend_store_uri"], params["passphrase"]):
            if secret:
                first = first.replace(secret, "********")
        module.fail_json(msg="Could not read or re-wrap the secrets in the backend store (%s): %s. Nothing was "
                             "changed." % (type(origin).__name__, first), error_class="backend_store")
    if unreadable:
        module.fail_json(
            msg="%d of MLflow's %d stored gateway secrets cannot be unwrapped with the new KEK passphrase, the "
                "previous one or MLflow's default: %s. Nothing was changed. Set the passphrase they were stored "
                "with (the secrets stay readable and are re-wrapped for it), or delete those secrets in MLflow "
                "and create them again." % (len(unreadable), result["secrets"], ", ".join(sorted(unreadable))),
            error_class="unreadable_secrets", unreadable=sorted(unreadable), secrets=result["secrets"])
    module.exit_json(changed=result["rewrapped"] > 0, **result)


if __name__ == "__main__":
    main()
