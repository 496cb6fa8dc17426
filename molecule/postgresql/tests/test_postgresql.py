"""Role postgresql keeps its promises: TLS with the stack's CA, scram only, no plain TCP,
databases owned by their users, secrets not readable by others, settings as computed, and the
CA certificate handed to clients (fetched and published)."""

import os
import shlex
import sys
import urllib.request

import pytest
import testinfra.utils.ansible_runner
from testinfra.modules.ansible import AnsibleException

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "_shared"))
from testinfra_helpers import wait_until  # noqa: E402

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("postgresql")

PG_VERSION = {"12": "15", "13": "17"}
CA = "/etc/postgresql-tls/ca.crt"
JOURNAL_UNITS = ["postgresql@15-main.service", "postgresql@17-main.service", "postgresql-ca-publish.service"]


@pytest.fixture(scope="module")
def hostvars(host):
    return host.ansible.get_variables()


@pytest.fixture(scope="module")
def version(host):
    return PG_VERSION[host.system_info.release.split(".")[0]]


def sql(host, query, db="postgres"):
    out = host.check_output("runuser -u postgres -- psql -X -At -d %s -c %s", db, query)
    return out.strip()


def password_of(hostvars, user):
    return next(u["password"] for u in hostvars["postgresql_users"] if u["name"] == user)


def tls_check(testinfra_host, **args):
    """Run mlops.mlflow_stack.postgresql_tls_check on the host; return its result either way."""
    args.setdefault("connect_timeout", 5)
    try:
        result = testinfra_host.ansible("mlops.mlflow_stack.postgresql_tls_check",
                                        " ".join("%s=%s" % (k, shlex.quote(str(v))) for k, v in args.items()),
                                        check=False)
    except AnsibleException as exc:
        result = exc.result
    # testinfra's runner drops the "failed" key of a failed module; error_class marks a failure.
    result.setdefault("failed", "error_class" in result)
    return result


def test_service_enabled_and_running_with_the_hardening_drop_in(host, version):
    unit = host.service("postgresql@%s-main.service" % version)
    assert unit.is_running
    assert unit.is_enabled
    assert host.check_output("systemctl show -p ProtectSystem --value postgresql@%s-main.service", version) == "strict"
    assert host.check_output("systemctl show -p NoNewPrivileges --value postgresql@%s-main.service", version) == "yes"


def test_listens_on_every_address_on_5432(host):
    assert host.socket("tcp://0.0.0.0:5432").is_listening


def test_tls_and_scram_settings(host):
    assert sql(host, "SHOW ssl") == "on"
    assert sql(host, "SHOW ssl_min_protocol_version") == "TLSv1.2"
    assert sql(host, "SHOW password_encryption") == "scram-sha-256"
    assert sql(host, "SHOW ssl_cert_file") == "/etc/postgresql-tls/postgresql.crt"
    assert sql(host, "SELECT count(*) FROM pg_settings WHERE pending_restart") == "0"


def test_every_login_password_is_scram(host):
    weak = sql(host, "SELECT string_agg(rolname, ',') FROM pg_authid "
                     "WHERE rolcanlogin AND rolpassword IS NOT NULL AND rolpassword !~ '^SCRAM-SHA-256\\$'")
    assert weak == ""


def test_pg_hba_has_no_trust_md5_password_or_plain_host_rules(host):
    assert sql(host, "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL") == "0"
    assert sql(host, "SELECT count(*) FROM pg_hba_file_rules WHERE auth_method IN ('trust', 'password', 'md5')") == "0"
    assert sql(host, "SELECT count(*) FROM pg_hba_file_rules WHERE type = 'host'") == "0"
    assert sql(host, "SELECT count(*) FROM pg_hba_file_rules WHERE type = 'hostnossl' AND auth_method <> 'reject'") == "0"


def test_settings_derived_from_memory_and_workers(host):
    # postgresql_tuning_memory_mb 2048, 8 workers x (5 + 10) + 20 headroom = 140 connections.
    assert sql(host, "SHOW max_connections") == "140"
    assert sql(host, "SHOW shared_buffers") == "512MB"
    assert sql(host, "SHOW effective_cache_size") == "1536MB"
    assert sql(host, "SHOW maintenance_work_mem") == "128MB"
    assert sql(host, "SHOW work_mem") == "4MB"
    assert sql(host, "SHOW idle_in_transaction_session_timeout") == "10min"


def test_databases_owned_by_their_users_and_closed_to_others(host):
    assert sql(host, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'mlflow'") == "mlflow"
    assert sql(host, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'analytics'") == "analyst"
    assert sql(host, "SELECT has_database_privilege('mlflow', 'analytics', 'CONNECT')") == "f"
    assert sql(host, "SELECT rolsuper OR rolcreatedb OR rolcreaterole FROM pg_roles WHERE rolname = 'mlflow'") == "f"
    # The MLflow user owns its database and nothing else.
    assert sql(host, "SELECT count(*) FROM pg_class WHERE relowner = 'mlflow'::regrole") == "0"


def test_key_and_config_not_world_readable(host):
    key = host.file("/etc/postgresql-tls/postgresql.key")
    assert (key.user, key.group, key.mode) == ("root", "postgres", 0o640)
    assert host.file("/etc/postgresql-tls").mode == 0o750
    conf = host.run("find /etc/postgresql -name pg_hba.conf -o -name 50-mlflow-stack.conf").stdout.split()
    assert len(conf) == 2
    for path in conf:
        assert host.file(path).mode & 0o007 == 0, path


def test_verify_full_with_the_ca_succeeds_and_reports_tls(host, hostvars, version):
    result = tls_check(host, host=hostvars["inventory_hostname"], dbname="mlflow", user="mlflow",
                       password=password_of(hostvars, "mlflow"), sslrootcert=CA)
    assert not result.get("failed"), result.get("msg")
    assert result["sslmode"] == "verify-full"
    assert result["ssl_in_use"] is True
    assert result["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert result["server_version"].startswith(version + ".")
    assert result["current_user"] == "mlflow" and result["current_database"] == "mlflow"
    assert hostvars["inventory_hostname"] in result["server_cert"]["dns_names"]
    assert result["server_cert"]["days_to_expiry"] > 800


def test_verify_full_with_another_ca_fails(host, hostvars):
    result = tls_check(host, host=hostvars["inventory_hostname"], dbname="mlflow", user="mlflow",
                       password=password_of(hostvars, "mlflow"), sslrootcert="/etc/ssl/certs/ca-certificates.crt")
    assert result.get("failed") is True
    assert result["error_class"] == "cert_verify", result.get("msg")


def test_connection_without_tls_is_rejected(host, hostvars):
    address = host.check_output("hostname -I").split()[0]
    result = tls_check(host, host=address, dbname="mlflow", user="mlflow",
                       password=password_of(hostvars, "mlflow"), sslmode="disable")
    assert result.get("failed") is True
    assert result["error_class"] == "no_hba", result.get("msg")
    assert "no encryption" in result["libpq_message"]


def test_owner_cannot_reach_another_database(host, hostvars):
    result = tls_check(host, host=hostvars["inventory_hostname"], dbname="analytics", user="mlflow",
                       password=password_of(hostvars, "mlflow"), sslrootcert=CA)
    assert result.get("failed") is True
    assert result["error_class"] == "no_hba", result.get("msg")


def test_ca_published_over_http_by_an_unprivileged_unit(host):
    ca = host.file(CA).content_string
    served = wait_until(
        lambda: host.run("python3 -c \"import urllib.request;"
                         "print(urllib.request.urlopen('http://127.0.0.1:8089/root.crt').read().decode(), end='')\"")
        .stdout or None,
        timeout=30, what="the CA certificate at http://127.0.0.1:8089/root.crt")
    assert served == ca
    unit = "postgresql-ca-publish.service"
    assert host.service(unit).is_running
    pid = host.check_output("systemctl show -p MainPID --value %s", unit)
    assert host.check_output("ps -o user= -p %s", pid) != "root"


def test_ca_published_reachable_from_the_controller(host):
    address = host.check_output("hostname -I").split()[0]
    with urllib.request.urlopen("http://%s:8089/root.crt" % address, timeout=10) as response:
        assert b"BEGIN CERTIFICATE" in response.read()


def test_ca_fetched_to_the_controller(host, hostvars):
    inventory_dir = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
    fetched = os.path.join(inventory_dir, ".pki", "postgresql", hostvars["inventory_hostname"], "root.crt")
    with open(fetched) as fh:
        assert fh.read() == host.file(CA).content_string
