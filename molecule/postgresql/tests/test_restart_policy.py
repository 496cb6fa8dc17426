"""A changed setting is applied with a reload when a reload suffices, and with a restart only
when PostgreSQL needs one (pg_settings.pending_restart).

Re-runs the configure and service phases on the converged Debian 12 host with one more
setting each time and watches pg_postmaster_start_time() and pg_conf_load_time().
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import testinfra

HOST = "postgresql-debian12"
JOURNAL_UNITS = ["postgresql@15-main.service"]


def host():
    return testinfra.get_host("ansible://%s?ansible_inventory=%s" % (HOST, os.environ["MOLECULE_INVENTORY_FILE"]))


def sql(query):
    return host().check_output("runuser -u postgres -- psql -X -At -d postgres -c %s", query).strip()


def converge_with(tmp_path, settings):
    playbook = tmp_path / "settings.yml"
    playbook.write_text("- hosts: %s\n  gather_facts: false\n  roles:\n    - role: mlops.mlflow_stack.postgresql\n" % HOST)
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps({"postgresql_settings": settings}))
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", os.environ["MOLECULE_INVENTORY_FILE"],
         "--tags", "postgresql_configure,postgresql_service", "-e", "@" + str(vars_file), str(playbook)],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, ANSIBLE_FORCE_COLOR="0"))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def test_reload_only_setting_reloads_without_restart(tmp_path):
    started, loaded = sql("SELECT pg_postmaster_start_time()"), sql("SELECT pg_conf_load_time()")
    converge_with(tmp_path, {"idle_in_transaction_session_timeout": "10min", "log_min_duration_statement": "250ms"})
    assert sql("SHOW log_min_duration_statement") == "250ms"
    assert sql("SELECT pg_postmaster_start_time()") == started
    assert sql("SELECT pg_conf_load_time()") != loaded


def test_restart_only_setting_restarts(tmp_path):
    started = sql("SELECT pg_postmaster_start_time()")
    converge_with(tmp_path, {"idle_in_transaction_session_timeout": "10min", "log_min_duration_statement": "250ms",
                             "max_prepared_transactions": 5})
    assert sql("SHOW max_prepared_transactions") == "5"
    assert sql("SELECT pg_postmaster_start_time()") != started
    assert sql("SELECT count(*) FROM pg_settings WHERE pending_restart") == "0"
