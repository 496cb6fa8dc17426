"""The test platform keeps its promises: systemd boots, linger starts a user manager, and a
user unit survives a restart of the whole host. Every role scenario relies on this."""

import os
import sys

import testinfra.utils.ansible_runner

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "_shared"))
from testinfra_helpers import restart_container, user_systemctl, user_uid, wait_until  # noqa: E402

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("all")

USER = "smoke"
JOURNAL_UNITS = [("smoke-sleep.service", USER), "user@1000.service"]


def test_systemd_is_pid_1_and_running(host):
    assert host.check_output("ps -o comm= -p 1") == "systemd"
    state = wait_until(
        lambda: host.run("systemctl is-system-running").stdout.strip() == "running" or None,
        timeout=60,
        what="systemctl is-system-running == running",
    )
    assert state


def test_linger_starts_user_manager(host):
    assert host.file(f"/var/lib/systemd/linger/{USER}").exists
    assert host.service(f"user@{user_uid(host, USER)}.service").is_running


def test_user_unit_active(host):
    assert user_systemctl(host, USER, "is-active smoke-sleep.service").stdout.strip() == "active"
    owner = host.check_output("ps -o user= -C sleep")
    assert owner.split() == [USER]


def test_user_unit_back_after_container_restart(host):
    restart_container(host)
    wait_until(
        lambda: user_systemctl(host, USER, "is-active smoke-sleep.service").stdout.strip() == "active",
        timeout=60,
        what="smoke-sleep.service active again after restart, with nobody logged in",
    )
