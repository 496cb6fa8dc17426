#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlops.mlflow_stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: postgresql_tls_check
short_description: Prove a PostgreSQL server is reachable over verified TLS, and say what to fix when it is not
version_added: 0.1.0
description:
  - Connects to PostgreSQL with psycopg2 the way a client such as MLflow does (C(sslmode=verify-full) by default),
    runs a real query, and reports the server version, whether TLS is in use, the TLS protocol and cipher, the
    current user and database, the server certificate's subject, names and days to expiry, and the connect latency.
  - On failure it reports a machine-readable O(error_class) and a message that names the likely fix, so a playbook
    can stop before it starts a service that would fail later with a less helpful error.
  - Read-only; runs the same way in check mode.
  - Needs only psycopg2 and the Python standard library on the host it runs on. To test from an application's
    virtualenv, point C(ansible_python_interpreter) at that virtualenv's python for the task.
author:
  - mlops.mlflow_stack contributors
options:
  host:
    description:
      - Host name or IP address of the server, or a Unix socket directory.
      - With O(sslmode=verify-full) this is the name checked against the server certificate.
      - Required unless O(uri) names the host.
    type: str
  port:
    description:
      - TCP port. When neither this option nor O(uri) sets it, 5432 is used.
    type: int
  dbname:
    description:
      - Database to connect to. When neither this option nor O(uri) sets it, libpq uses the user name.
    type: str
    aliases: [db, database]
  user:
    description:
      - User (role) to connect as.
    type: str
  password:
    description:
      - Password of O(user). Passed to libpq directly, never on a command line.
    type: str
  sslmode:
    description:
      - libpq C(sslmode).
      - When neither this option nor O(uri) sets it, C(verify-full) is used, which checks the chain against
        O(sslrootcert) and that the certificate names O(host).
    type: str
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  sslrootcert:
    description:
      - Path (on the host running the module) of the CA certificate that signed the server certificate, or
        C(system) for the system trust store (libpq 16 or later).
      - When unset libpq uses E(PGSSLROOTCERT) or C(~/.postgresql/root.crt) of the user running the module.
    type: path
  uri:
    description:
      - A libpq connection URI or keyword/value string, for example the one MLflow uses without the
        C(+psycopg2) driver suffix, as an alternative to the separate options.
      - Options given explicitly override the same setting in the URI.
      - Treated as secret because it may carry a password.
    type: str
  connect_timeout:
    description:
      - Seconds libpq waits for the connection (libpq treats values below 2 as 2).
    type: int
    default: 10
notes:
  - The server certificate details come from a second, verified TLS handshake made with the Python standard
    library, because libpq does not expose the peer certificate. They are returned only when TLS is in use and a
    CA file is available (O(sslrootcert), E(PGSSLROOTCERT) or C(~/.postgresql/root.crt)).
  - A libpq URI with several hosts is accepted; the result names the host that answered.
requirements:
  - psycopg2 (or psycopg2-binary) on the host that runs the module
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
seealso:
  - module: community.postgresql.postgresql_ping
  - name: libpq SSL support
    description: What each sslmode protects against.
    link: https://www.postgresql.org/docs/current/libpq-ssl.html
"""

EXAMPLES = r"""
- name: Prove the MLflow backend store answers over verify-full before starting MLflow
  mlops.mlflow_stack.postgresql_tls_check:
    host: db.example.com
    dbname: mlflow
    user: mlflow
    password: "{{ vault_mlflow_db_password }}"
    sslrootcert: /home/mlflow/.postgresql/root.crt
  vars:
    ansible_python_interpreter: /home/mlflow/venvs/current/bin/python
  register: mlflow_db_check

- name: Same check from a libpq URI
  mlops.mlflow_stack.postgresql_tls_check:
    uri: "postgresql://mlflow@db.example.com:5432/mlflow?sslmode=verify-full&sslrootcert=/etc/ssl/pg-root.crt"
    password: "{{ vault_mlflow_db_password }}"

- name: Branch on the failure class instead of failing
  mlops.mlflow_stack.postgresql_tls_check:
    host: db.example.com
    dbname: mlflow
    user: mlflow
    password: "{{ vault_mlflow_db_password }}"
    sslrootcert: /etc/ssl/pg-root.crt
  register: db_check
  failed_when: db_check.failed and db_check.error_class not in ['refused', 'timeout']

- name: Warn when the server certificate expires soon
  ansible.builtin.debug:
    msg: "PostgreSQL certificate expires in {{ mlflow_db_check.server_cert.days_to_expiry }} days"
  when: (mlflow_db_check.server_cert.days_to_expiry | default(999)) < 30
"""

RETURN = r"""
error_class:
  description:
    - Why the connection failed. One of
    - C(dns) the host name does not resolve;
    - C(refused) nothing listens on that address and port;
    - C(timeout) no answer within O(connect_timeout) (firewall drop, host down);
    - C(cert_verify) the certificate chain does not verify against the CA (wrong, missing or unreadable O(sslrootcert));
    - C(hostname_mismatch) the certificate does not name the host connected to;
    - C(ssl_unsupported) the server does not offer TLS but the sslmode requires it;
    - C(auth_failed) wrong password, no password, or unknown user;
    - C(no_database) the database does not exist;
    - C(no_hba) no pg_hba.conf rule admits this client, user, database and encryption (or a reject rule matched);
    - C(other) anything else, including a failure of the probe query after connecting.
  returned: failure
  type: str
  sample: cert_verify
libpq_message:
  description: The error text from libpq, unchanged.
  returned: failure
  type: str
  sample: 'connection to server at "127.0.0.1", port 5432 failed: SSL error: certificate verify failed'
host:
  description: The host connected to (the one that answered, for a multi-host URI).
  returned: always
  type: str
  sample: db.example.com
port:
  description: The port connected to.
  returned: always
  type: int
  sample: 5432
dbname:
  description: The database requested.
  returned: always
  type: str
  sample: mlflow
user:
  description: The user requested.
  returned: always
  type: str
  sample: mlflow
sslmode:
  description: The effective sslmode.
  returned: always
  type: str
  sample: verify-full
connect_latency_ms:
  description: Milliseconds spent establishing the connection (TCP, TLS and authentication).
  returned: always
  type: float
  sample: 12.4
server_version:
  description: The server's C(server_version) setting.
  returned: success
  type: str
  sample: "15.14 (Debian 15.14-0+deb12u1)"
server_version_num:
  description: The server's C(server_version_num), for numeric comparisons.
  returned: success
  type: int
  sample: 150014
current_user:
  description: The role the session runs as.
  returned: success
  type: str
  sample: mlflow
current_database:
  description: The database the session is connected to.
  returned: success
  type: str
  sample: mlflow
ssl_in_use:
  description: Whether the session is encrypted, as the server sees it (C(pg_stat_ssl)).
  returned: success
  type: bool
  sample: true
tls_version:
  description: TLS protocol version of the session, or null without TLS.
  returned: success
  type: str
  sample: TLSv1.3
tls_cipher:
  description: Cipher of the session, or null without TLS.
  returned: success
  type: str
  sample: TLS_AES_256_GCM_SHA384
tls_bits:
  description: Key bits of the cipher, or null without TLS.
  returned: success
  type: int
  sample: 256
server_cert:
  description: The server certificate, when TLS is in use and a CA file is available to verify it; otherwise null.
  returned: success
  type: dict
  contains:
    subject:
      description: Subject distinguished name.
      type: str
      sample: commonName=db.example.com
    issuer:
      description: Issuer distinguished name.
      type: str
      sample: commonName=mlops.mlflow_stack private CA
    dns_names:
      description: DNS names in subjectAltName.
      type: list
      elements: str
      sample: [db.example.com, db]
    ip_addresses:
      description: IP addresses in subjectAltName.
      type: list
      elements: str
      sample: [10.0.0.5]
    not_after:
      description: Expiry as printed by the TLS library.
      type: str
      sample: Feb 28 12:00:00 2029 GMT
    days_to_expiry:
      description: Whole days until expiry (negative once expired).
      type: int
      sample: 824
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.mlops.mlflow_stack.plugins.module_utils import postgresql_tls


def argument_spec():
    return dict(
        host=dict(type="str"),
        port=dict(type="int"),
        dbname=dict(type="str", aliases=["db", "database"]),
        user=dict(type="str"),
        password=dict(type="str", no_log=True),
        sslmode=dict(type="str", choices=postgresql_tls.SSLMODES),
        sslrootcert=dict(type="path"),
        uri=dict(type="str", no_log=True),
        connect_timeout=dict(type="int", default=10),
    )


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_one_of=[["host", "uri"]],
        supports_check_mode=True,
    )
    if not postgresql_tls.HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2"), error_class="other",
                         exception=str(postgresql_tls.PSYCOPG2_IMPORT_ERROR))
    if module.params["connect_timeout"] < 1:
        module.fail_json(msg="connect_timeout must be 1 or more seconds, got %d." % module.params["connect_timeout"],
                         error_class="other")

    try:
        result, error = postgresql_tls.check_connection(module.params)
    except postgresql_tls.psycopg2.ProgrammingError as exc:
        # parse_dsn rejects a malformed URI; the URI itself may hold a password, so it is not echoed.
        module.fail_json(msg="uri is not a valid libpq connection string: %s" % str(exc).strip().splitlines()[0],
                         error_class="other")
    if error:
        target = "%s:%s" % (result.get("host") or "(default host)", result.get("port"))
        module.fail_json(
            msg="PostgreSQL TLS check of %s failed (%s): %s libpq said: %s" % (
                target, error["error_class"], error["hint"],
                " | ".join(line.strip() for line in error["libpq_message"].splitlines() if line.strip())),
            error_class=error["error_class"],
            libpq_message=error["libpq_message"],
            **result
        )
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
