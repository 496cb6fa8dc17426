"""Unit tests for postgresql_tls_check: argument handling and error classification, no network.

The libpq messages below are the texts libpq 15-17 prints for each situation; the
integration tests produce the same situations against a real server.
"""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / ".collections"))

import psycopg2  # noqa: E402
from ansible.module_utils.testing import patch_module_args  # noqa: E402
from ansible_collections.mlops.mlflow_stack.plugins.module_utils import postgresql_tls  # noqa: E402
from ansible_collections.mlops.mlflow_stack.plugins.modules import postgresql_tls_check  # noqa: E402

PREFIX = 'connection to server at "db.example.com" (10.0.0.5), port 5432 failed: '

MESSAGES = [
    ('could not translate host name "db.example.invalid" to address: Name or service not known', "dns"),
    ('could not translate host name "db" to address: Temporary failure in name resolution', "dns"),
    (PREFIX + "Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?",
     "refused"),
    (PREFIX + "timeout expired", "timeout"),
    (PREFIX + "Connection timed out\n\tIs the server running on that host and accepting TCP/IP connections?",
     "timeout"),
    (PREFIX + "SSL error: certificate verify failed", "cert_verify"),
    ('root certificate file "/home/mlflow/.postgresql/root.crt" does not exist\nEither provide the file, use the '
     "system's trusted roots with sslrootcert=system, or change sslmode to disable server certificate verification.",
     "cert_verify"),
    (PREFIX + 'server certificate for "localhost" does not match host name "db.example.com"', "hostname_mismatch"),
    (PREFIX + 'server certificate for "db1" (and 2 other names) does not match host name "db.example.com"',
     "hostname_mismatch"),
    (PREFIX + "server does not support SSL, but SSL was required", "ssl_unsupported"),
    (PREFIX + 'FATAL:  password authentication failed for user "mlflow"', "auth_failed"),
    (PREFIX + "fe_sendauth: no password supplied", "auth_failed"),
    (PREFIX + 'FATAL:  role "ghost" does not exist', "auth_failed"),
    (PREFIX + 'FATAL:  database "mlflow" does not exist', "no_database"),
    (PREFIX + 'FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "mlflow", database "mlflow", SSL encryption',
     "no_hba"),
    (PREFIX + 'FATAL:  pg_hba.conf rejects connection for host "10.0.0.9", user "mlflow", database "mlflow", '
     "no encryption", "no_hba"),
    ("something nobody has seen before", "other"),
    ("", "other"),
]


@pytest.mark.parametrize("message,expected", MESSAGES, ids=[m[1] + str(i) for i, m in enumerate(MESSAGES)])
def test_classify_error(message, expected):
    assert postgresql_tls.classify_error(message) == expected


def test_multi_address_message_prefers_the_server_verdict():
    # localhost: ::1 refused, then 127.0.0.1 answered and rejected the password.
    message = ('connection to server at "localhost" (::1), port 5432 failed: Connection refused\n'
               '\tIs the server running on that host and accepting TCP/IP connections?\n'
               'connection to server at "localhost" (127.0.0.1), port 5432 failed: '
               'FATAL:  password authentication failed for user "mlflow"')
    assert postgresql_tls.classify_error(message) == "auth_failed"


def test_every_class_has_a_hint_and_is_documented():
    documented = postgresql_tls_check.RETURN.split("libpq_message:")[0]
    for error_class in postgresql_tls.ERROR_CLASSES:
        assert error_class in postgresql_tls.HINTS
        assert "C(%s)" % error_class in documented


def test_sslmode_defaults_to_verify_full():
    _, kwargs, effective = postgresql_tls.connection_kwargs({"host": "db", "port": 5433, "connect_timeout": 10})
    assert kwargs == {"host": "db", "port": "5433", "sslmode": "verify-full", "connect_timeout": "10"}
    assert effective["sslmode"] == "verify-full"


def test_uri_sslmode_is_respected_and_explicit_options_override_it():
    uri = "postgresql://mlflow@db.example.com:6543/mlflow?sslmode=require"
    dsn, kwargs, effective = postgresql_tls.connection_kwargs({"uri": uri, "password": "x" * 16})
    assert dsn == uri
    assert "sslmode" not in kwargs  # the URI's own choice stands
    assert effective["sslmode"] == "require"
    assert effective["host"] == "db.example.com" and effective["port"] == "6543"
    _, kwargs, effective = postgresql_tls.connection_kwargs({"uri": uri, "sslmode": "verify-full", "dbname": "other"})
    assert kwargs["sslmode"] == "verify-full" and effective["dbname"] == "other"


class FakeCursor:
    def __init__(self, row):
        self.row = row
        self.executed = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql):
        self.executed.append(sql)

    def fetchone(self):
        return self.row


class FakeInfo:
    host = "db.example.com"
    port = 5432


class FakeConnection:
    def __init__(self, row):
        self.info = FakeInfo()
        self.cursor_obj = FakeCursor(row)
        self.closed = False

    def cursor(self):
        return self.cursor_obj

    def rollback(self):
        pass

    def close(self):
        self.closed = True


def run_main(args, monkeypatch, connect):
    monkeypatch.setattr(psycopg2, "connect", connect)
    monkeypatch.setattr(postgresql_tls, "server_certificate", lambda *a, **k: {"dns_names": ["db.example.com"]})
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exit_info:
            postgresql_tls_check.main()
    return exit_info.value.code


def test_success_result(monkeypatch, capsys):
    seen = {}
    conn = FakeConnection(("15.14", 150014, "mlflow", "mlflow", True, "TLSv1.3", "TLS_AES_256_GCM_SHA384", 256))

    def connect(dsn, **kwargs):
        seen.update(kwargs, dsn=dsn)
        return conn

    code = run_main({"host": "db.example.com", "dbname": "mlflow", "user": "mlflow",
                     "password": "s3cret-password-long", "sslrootcert": "/tmp/ca.crt"}, monkeypatch, connect)
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert seen["sslmode"] == "verify-full" and seen["sslrootcert"] == "/tmp/ca.crt"
    assert seen["password"] == "s3cret-password-long" and seen["connect_timeout"] == "10"
    assert result["changed"] is False
    assert result["ssl_in_use"] is True and result["tls_version"] == "TLSv1.3"
    assert result["server_version_num"] == 150014
    assert result["server_cert"] == {"dns_names": ["db.example.com"]}
    assert "pg_stat_ssl" in conn.cursor_obj.executed[0]
    assert conn.closed
    assert "s3cret-password-long" not in json.dumps(result)


def test_failure_is_classified_with_a_fix(monkeypatch, capsys):
    def connect(dsn, **kwargs):
        raise psycopg2.OperationalError(PREFIX + "SSL error: certificate verify failed\n")

    code = run_main({"host": "db.example.com", "user": "mlflow", "password": "s3cret-password-long"},
                    monkeypatch, connect)
    result = json.loads(capsys.readouterr().out)
    assert code == 1
    assert result["failed"] is True
    assert result["error_class"] == "cert_verify"
    assert "sslrootcert" in result["msg"] and "certificate verify failed" in result["msg"]
    assert result["host"] == "db.example.com" and result["port"] == 5432
    assert "s3cret-password-long" not in json.dumps(result)


def test_host_or_uri_is_required(monkeypatch, capsys):
    code = run_main({"user": "mlflow"}, monkeypatch, lambda *a, **k: None)
    result = json.loads(capsys.readouterr().out)
    assert code == 1
    assert "host" in result["msg"] and "uri" in result["msg"]


def test_bad_sslmode_is_refused(monkeypatch, capsys):
    code = run_main({"host": "db", "sslmode": "verify-everything"}, monkeypatch, lambda *a, **k: None)
    assert code == 1
    assert "sslmode" in json.loads(capsys.readouterr().out)["msg"]


def test_malformed_uri_does_not_echo_it(monkeypatch, capsys):
    code = run_main({"uri": "postgresql://u:hunter2-long-secret@db/x?bogus_option=1"}, monkeypatch,
                    lambda *a, **k: None)
    out = capsys.readouterr().out
    assert code == 1
    assert json.loads(out)["error_class"] == "other"
    assert "hunter2-long-secret" not in out


def test_missing_psycopg2_names_the_library(monkeypatch, capsys):
    monkeypatch.setattr(postgresql_tls, "HAS_PSYCOPG2", False)
    monkeypatch.setattr(postgresql_tls, "PSYCOPG2_IMPORT_ERROR", ImportError("No module named 'psycopg2'"))
    code = run_main({"host": "db"}, monkeypatch, lambda *a, **k: None)
    result = json.loads(capsys.readouterr().out)
    assert code == 1
    assert "psycopg2" in result["msg"]


def test_password_and_uri_are_no_log():
    spec = postgresql_tls_check.argument_spec()
    assert spec["password"]["no_log"] is True
    assert spec["uri"]["no_log"] is True
