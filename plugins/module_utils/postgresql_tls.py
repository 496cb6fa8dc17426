# -*- coding: utf-8 -*-
# Copyright: mlops.mlflow_stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connect to PostgreSQL over TLS the way a client would, and explain failures.

Only psycopg2 and the standard library are needed, so the code runs from any Python
that can import psycopg2 (for example an MLflow virtualenv on the client host).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket
import ssl
import struct
import time

try:
    import psycopg2
    import psycopg2.extensions
    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised through the module's missing_required_lib path
    psycopg2 = None
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = exc

DEFAULT_SSLMODE = "verify-full"
SSLMODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
# PostgreSQL's SSLRequest code (protocol 1234.5679), answered by 'S' or 'N'.
_SSL_REQUEST = struct.pack("!ii", 8, 80877103)

# First match wins. Server-side verdicts come before transport ones because libpq
# concatenates the messages of every address it tried (::1 refused, then 127.0.0.1
# rejected the password): the most specific verdict is the one to act on. An entry is
# (error_class, needles that must all appear).
ERROR_PATTERNS = [
    ("ssl_unsupported", ("server does not support ssl",)),
    ("hostname_mismatch", ("does not match host name",)),
    ("hostname_mismatch", ("could not get server's host name from server certificate",)),
    ("cert_verify", ("certificate verify failed",)),
    ("cert_verify", ("root certificate file",)),
    ("cert_verify", ("could not read root certificate",)),
    ("cert_verify", ("self-signed certificate",)),
    ("cert_verify", ("self signed certificate",)),
    ("cert_verify", ("unable to get local issuer certificate",)),
    ("cert_verify", ("certificate has expired",)),
    ("no_hba", ("no pg_hba.conf entry",)),
    ("no_hba", ("pg_hba.conf rejects connection",)),
    ("no_database", ("database \"", "does not exist")),
    ("auth_failed", ("password authentication failed",)),
    ("auth_failed", ("no password supplied",)),
    ("auth_failed", ("authentication failed",)),
    ("auth_failed", ("role \"", "does not exist")),
    ("timeout", ("timeout expired",)),
    ("timeout", ("timed out",)),
    ("refused", ("connection refused",)),
    ("dns", ("could not translate host name",)),
    ("dns", ("name or service not known",)),
    ("dns", ("temporary failure in name resolution",)),
    ("dns", ("nodename nor servname",)),
    ("dns", ("no address associated with hostname",)),
]
ERROR_CLASSES = ["dns", "refused", "timeout", "cert_verify", "hostname_mismatch", "ssl_unsupported",
                 "auth_failed", "no_database", "no_hba", "other"]

HINTS = {
    "dns": "The host name does not resolve from this host. Check the name (host or uri), /etc/hosts or DNS, "
           "or connect by an address the server certificate covers.",
    "refused": "Nothing accepts connections at that address and port. Check that PostgreSQL runs, that "
               "listen_addresses includes the address you connect to, the port, and any firewall.",
    "timeout": "No answer within connect_timeout. A firewall is likely dropping packets, or the host is down; "
               "check the route and firewall to the port, or raise connect_timeout for a slow link.",
    "cert_verify": "The server certificate could not be verified. Point sslrootcert at the CA certificate that "
                   "signed the server certificate (for this stack: the CA fetched by the postgresql role or "
                   "published at http://<db-host>:8089/root.crt), and make sure the file exists and is readable.",
    "hostname_mismatch": "The server certificate does not name the host you connect to. Connect with a name or "
                         "IP address listed in the certificate's subjectAltName, or reissue the certificate with "
                         "that name (postgresql_tls_dns_names / postgresql_tls_ip_addresses).",
    "ssl_unsupported": "The server does not offer TLS. Enable ssl on the server (the postgresql role does by "
                       "default) rather than lowering sslmode.",
    "auth_failed": "The server rejected the credentials. Check the user name and password, and that the role "
                   "exists with LOGIN and a scram-sha-256 password.",
    "no_database": "The database does not exist. Check dbname, or add it to postgresql_databases.",
    "no_hba": "pg_hba.conf has no rule admitting this client, user, database and encryption. Add a hostssl "
              "rule (postgresql_hba_extra_rules or postgresql_hba_client_networks) or connect with TLS.",
    "other": "Unexpected error; read the message from libpq above.",
}


def connection_argument_spec():
    """The options of the postgresql doc fragment, for modules that do real work over the connection."""
    return dict(
        host=dict(type="str"),
        port=dict(type="int", default=5432),
        dbname=dict(type="str", aliases=["db", "database"]),
        user=dict(type="str"),
        password=dict(type="str", no_log=True),
        sslmode=dict(type="str", choices=SSLMODES, default=DEFAULT_SSLMODE),
        sslrootcert=dict(type="path"),
        connect_timeout=dict(type="int", default=10),
    )


def connect(params):
    """A psycopg2 connection (autocommit off), or raise psycopg2.Error (classify it with classify_error)."""
    dsn, kwargs, _ = connection_kwargs(params)
    return psycopg2.connect(dsn, **kwargs)


def classify_error(message):
    """Return the error_class for a libpq / psycopg2 error message."""
    text = (message or "").lower()
    for error_class, needles in ERROR_PATTERNS:
        if all(needle in text for needle in needles):
            return error_class
    return "other"


def connection_kwargs(params):
    """Build psycopg2.connect() arguments from the module parameters.

    Options given explicitly override the same setting in ``uri``; sslmode falls back
    to verify-full only when neither sets it, so a weaker mode is always a visible choice.
    """
    kwargs = {}
    dsn = params.get("uri") or ""
    from_uri = {}
    if dsn:
        from_uri = psycopg2.extensions.parse_dsn(dsn)
    mapping = (("host", "host"), ("port", "port"), ("dbname", "dbname"), ("user", "user"),
               ("password", "password"), ("sslmode", "sslmode"), ("sslrootcert", "sslrootcert"),
               ("connect_timeout", "connect_timeout"))
    for option, key in mapping:
        value = params.get(option)
        if value is not None and value != "":
            kwargs[key] = str(value) if option in ("port", "connect_timeout") else value
    if "sslmode" not in kwargs and "sslmode" not in from_uri:
        kwargs["sslmode"] = DEFAULT_SSLMODE
    effective = dict(from_uri)
    effective.update(kwargs)
    return dsn, kwargs, effective


def _resolve_root_cert(sslrootcert):
    """The CA file libpq would use, or None (libpq's own default when unset)."""
    path = sslrootcert or os.environ.get("PGSSLROOTCERT")
    if not path:
        home = os.path.expanduser("~")
        path = os.path.join(home, ".postgresql", "root.crt")
    if path == "system":
        return "system"
    return path if os.path.isfile(path) else None


def _name_list(cert_dict):
    dns, ips = [], []
    for kind, value in cert_dict.get("subjectAltName", ()):
        if kind == "DNS":
            dns.append(value)
        elif kind == "IP Address":
            ips.append(value.rstrip())
    return dns, ips


def _flatten_name(rdns):
    parts = []
    for rdn in rdns or ():
        for key, value in rdn:
            parts.append("%s=%s" % (key, value))
    return ",".join(parts)


def server_certificate(host, port, sslrootcert, timeout):
    """Read the server certificate with a verified stdlib TLS handshake.

    libpq does not expose the peer certificate, so this opens a second connection,
    sends PostgreSQL's SSLRequest, and reads the certificate. The handshake verifies
    the chain against the same CA libpq used (the host name was already checked by
    libpq in verify-full); without a CA the details are not obtainable and None is returned.
    """
    cafile = _resolve_root_cert(sslrootcert)
    if cafile is None:
        return None
    if cafile == "system":
        context = ssl.create_default_context()
    else:
        context = ssl.create_default_context(cafile=cafile)
    context.check_hostname = False
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    try:
        sock.sendall(_SSL_REQUEST)
        if sock.recv(1) != b"S":
            return None
        with context.wrap_socket(sock) as tls:
            cert = tls.getpeercert()
            sock = None
    finally:
        if sock is not None:
            sock.close()
    if not cert:
        return None
    dns_names, ip_addresses = _name_list(cert)
    not_after = cert.get("notAfter")
    days = None
    if not_after:
        days = int((ssl.cert_time_to_seconds(not_after) - time.time()) // 86400)
    return {
        "subject": _flatten_name(cert.get("subject")),
        "issuer": _flatten_name(cert.get("issuer")),
        "dns_names": dns_names,
        "ip_addresses": ip_addresses,
        "not_after": not_after,
        "days_to_expiry": days,
    }


def check_connection(params, connect=None):
    """Connect, run a real query, and return (result, None) or (partial_result, error)."""
    connect = connect or psycopg2.connect
    dsn, kwargs, effective = connection_kwargs(params)
    result = {
        "host": effective.get("host"),
        "port": int(effective.get("port") or 5432),
        "dbname": effective.get("dbname"),
        "user": effective.get("user"),
        "sslmode": effective.get("sslmode"),
    }
    started = time.monotonic()
    try:
        conn = connect(dsn, **kwargs)
    except psycopg2.Error as exc:
        message = str(exc).strip()
        error_class = classify_error(message)
        result["connect_latency_ms"] = round((time.monotonic() - started) * 1000.0, 1)
        return result, {"error_class": error_class, "libpq_message": message, "hint": HINTS[error_class]}
    result["connect_latency_ms"] = round((time.monotonic() - started) * 1000.0, 1)
    try:
        info = conn.info
        result["host"] = info.host
        result["port"] = int(info.port)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT current_setting('server_version'), current_setting('server_version_num')::int, "
                "current_user, current_database(), s.ssl, s.version, s.cipher, s.bits "
                "FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()"
            )
            row = cur.fetchone()
        conn.rollback()
    except psycopg2.Error as exc:
        message = str(exc).strip()
        return result, {"error_class": "other", "libpq_message": message,
                        "hint": "Connected, but the probe query failed; read the server's message."}
    finally:
        conn.close()
    version, version_num, current_user, current_database, ssl_in_use, tls_version, cipher, bits = row
    result.update({
        "server_version": version,
        "server_version_num": version_num,
        "current_user": current_user,
        "current_database": current_database,
        "ssl_in_use": bool(ssl_in_use),
        "tls_version": tls_version,
        "tls_cipher": cipher,
        "tls_bits": bits,
        "server_cert": None,
    })
    if ssl_in_use and result["host"] and not result["host"].startswith("/"):
        try:
            result["server_cert"] = server_certificate(
                result["host"], result["port"], effective.get("sslrootcert"),
                float(effective.get("connect_timeout") or 10))
        except (OSError, ssl.SSLError, ValueError):
            # The certificate details are a bonus: libpq already proved the connection.
            result["server_cert"] = None
    return result, None
