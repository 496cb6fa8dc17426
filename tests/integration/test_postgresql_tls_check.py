"""postgresql_tls_check against a real PostgreSQL with TLS that this test starts on loopback.

One success with verify-full, then one real failure per error_class the module documents.
The module runs in-process (its real main(), real psycopg2/libpq), plus once through
`ansible` to prove the collection resolves it and the password stays out of the output.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "postgresql"))

from ansible.module_utils.testing import patch_module_args  # noqa: E402
from ansible_collections.mlops.mlflow_stack.plugins.modules import postgresql_tls_check  # noqa: E402
from tls_server import PASSWORD, STRANGER_PASSWORD, TlsPostgres, find_bindir, free_port  # noqa: E402


@pytest.fixture(scope="module")
def pg():
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries absent and not installable here (need root and apt-get); "
                    "`apt-get install postgresql` provides /usr/lib/postgresql/<ver>/bin")
    server = TlsPostgres(bindir).start()
    yield server
    server.stop()


def run_module(args):
    """Run the module's main() and return its JSON result."""
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            postgresql_tls_check.main()
    return json.loads(run_module.capture.readouterr().out)


@pytest.fixture(autouse=True)
def _capture(capsys):
    run_module.capture = capsys


def base_args(pg, **overrides):
    args = dict(host="localhost", port=pg.port, dbname="appdb", user="app", password=PASSWORD,
                sslrootcert=pg.ca_file, connect_timeout=3)
    args.update(overrides)
    return args


def test_verify_full_succeeds_and_reports_tls(pg):
    result = run_module(base_args(pg))
    assert not result.get("failed"), result
    assert result["changed"] is False
    assert result["sslmode"] == "verify-full"
    assert result["ssl_in_use"] is True
    assert result["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert result["tls_cipher"]
    assert result["current_user"] == "app"
    assert result["current_database"] == "appdb"
    assert result["server_version_num"] >= 130000
    assert result["connect_latency_ms"] > 0
    cert = result["server_cert"]
    assert cert["dns_names"] == ["localhost"]
    assert "integration test CA" in cert["issuer"]
    assert 18 <= cert["days_to_expiry"] <= 20
    assert PASSWORD not in json.dumps(result)


def test_uri_form_succeeds(pg):
    uri = "postgresql://app@localhost:%d/appdb?sslrootcert=%s" % (pg.port, pg.ca_file)
    result = run_module(dict(uri=uri, password=PASSWORD))
    assert not result.get("failed"), result
    assert result["sslmode"] == "verify-full"
    assert result["current_database"] == "appdb"


def test_check_mode_still_connects(pg):
    result = run_module(dict(base_args(pg), _ansible_check_mode=True))
    assert not result.get("failed"), result
    assert result["ssl_in_use"] is True


def assert_fails(result, error_class, hint_word):
    assert result.get("failed") is True, result
    assert result["error_class"] == error_class, result
    assert hint_word.lower() in result["msg"].lower(), result["msg"]
    assert PASSWORD not in json.dumps(result)


def test_dns(pg):
    assert_fails(run_module(base_args(pg, host="no-such-host.invalid")), "dns", "resolve")


def test_refused(pg):
    assert_fails(run_module(base_args(pg, port=free_port())), "refused", "listen_addresses")


def test_timeout(pg):
    # A socket that completes the TCP handshake (kernel backlog) but never answers the
    # SSLRequest: what a stuck server or a half-open middlebox looks like to libpq.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        result = run_module(base_args(pg, host="localhost", port=silent.getsockname()[1], connect_timeout=2))
    assert_fails(result, "timeout", "connect_timeout")


def test_cert_verify_with_another_ca(pg):
    assert_fails(run_module(base_args(pg, sslrootcert=pg.other_ca_file)), "cert_verify", "sslrootcert")


def test_cert_verify_with_missing_ca_file(pg):
    assert_fails(run_module(base_args(pg, sslrootcert="/nonexistent/root.crt")), "cert_verify", "sslrootcert")


def test_hostname_mismatch(pg):
    # The certificate names only "localhost"; 127.0.0.1 is the same server under another name.
    assert_fails(run_module(base_args(pg, host="127.0.0.1")), "hostname_mismatch", "subjectAltName")


def test_verify_ca_accepts_the_address(pg):
    # verify-ca checks the chain but not the name: the mismatch above is the name alone.
    result = run_module(base_args(pg, host="127.0.0.1", sslmode="verify-ca"))
    assert not result.get("failed"), result


def test_auth_failed(pg):
    assert_fails(run_module(base_args(pg, password="wrong-password-123")), "auth_failed", "password")


def test_no_database(pg):
    assert_fails(run_module(base_args(pg, dbname="missing_db")), "no_database", "postgresql_databases")


def test_no_hba_for_user(pg):
    assert_fails(run_module(base_args(pg, user="stranger", password=STRANGER_PASSWORD)), "no_hba", "hostssl")


def test_no_hba_without_tls(pg):
    # The server rejects a plain connection outright: the role's promise, seen from a client.
    assert_fails(run_module(base_args(pg, sslmode="disable")), "no_hba", "hostssl")


def test_ssl_unsupported(pg):
    pg.set_ssl(False)
    try:
        result = run_module(base_args(pg, sslmode="require"))
    finally:
        pg.set_ssl(True)
    assert_fails(result, "ssl_unsupported", "ssl")


def test_through_ansible_with_collection_name(pg, tmp_path):
    """The FQCN resolves from the checkout, and no_log keeps the password out of -vvv output."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"), ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    playbook = tmp_path / "check.yml"
    playbook.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - mlops.mlflow_stack.postgresql_tls_check:\n"
        "        host: localhost\n        port: %d\n        dbname: appdb\n        user: app\n"
        "        password: \"{{ lookup('env', 'IT_PG_PASSWORD') }}\"\n        sslrootcert: %s\n"
        "      register: check\n"
        "    - ansible.builtin.assert:\n        that: [check.ssl_in_use, check.current_user == 'app']\n"
        % (pg.port, pg.ca_file))
    env["IT_PG_PASSWORD"] = PASSWORD
    ansible_playbook = str(Path(sys.executable).parent / "ansible-playbook")
    proc = subprocess.run([ansible_playbook, "-vvv", "-i", "localhost,", "-c", "local",
                           "-e", "ansible_python_interpreter=%s" % sys.executable, str(playbook)],
                          capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert PASSWORD not in proc.stdout + proc.stderr

