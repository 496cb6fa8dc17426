# -*- coding: utf-8 -*-
"""The PostgreSQL connection options (psycopg2, verify-full by default), documented once for the modules
that connect through plugins/module_utils/postgresql_tls.py connection_kwargs."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
requirements:
  - psycopg2 (or psycopg2-binary) on the host that runs the module
options:
  host:
    description:
      - Host name or IP address of the server, or a Unix socket directory.
      - With O(sslmode=verify-full) this is the name checked against the server certificate.
    type: str
  port:
    description: TCP port.
    type: int
    default: 5432
  dbname:
    description: Database to connect to.
    type: str
    aliases: [db, database]
  user:
    description: User (role) to connect as.
    type: str
  password:
    description: Password of O(user). Passed to libpq directly, never on a command line.
    type: str
  sslmode:
    description: libpq C(sslmode).
    type: str
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
    default: verify-full
  sslrootcert:
    description:
      - Path (on the host running the module) of the CA certificate that signed the server certificate, or
        C(system) for the system trust store (libpq 16 or later).
    type: path
  connect_timeout:
    description: Seconds libpq waits for the connection.
    type: int
    default: 10
"""
