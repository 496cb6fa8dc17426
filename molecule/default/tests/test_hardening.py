"""Closed doors (issue 15): MLflow (a user unit), its gc, nginx and the scheduled backup run under
systemd's seccomp filters and without new privileges, with the live processes carrying them; the
backup runs in its sandbox, and a failed run says so in the journal and in health.yml."""

import os
import subprocess
import time
from pathlib import Path

import pytest
from testinfra_helpers import user_systemctl, wait_until

testinfra_hosts = ["default-mlflow"]

ROOT = Path(__file__).resolve().parents[3]
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
BACKUP = "mlflow-stack-backup.service"
FAILED = "mlflow-stack-backup-failed@mlflow-stack-backup.service"
MARKER = "/var/lib/mlflow-stack-backup/last-failure"
BROKEN_DROPIN = "/run/systemd/system/mlflow-stack-backup.service.d/50-test-broken.conf"
JOURNAL_UNITS = ["nginx.service", BACKUP, FAILED, ("mlflow.service", "mlflow")]

# CAP_CHOWN 0, CAP_DAC_OVERRIDE 1, CAP_SETGID 6, CAP_SETUID 7, CAP_NET_BIND_SERVICE 10
NGINX_CAPS = (1 << 0) | (1 << 1) | (1 << 6) | (1 << 7) | (1 << 10)


def unit_processes(host, unit):
    """{pid: /proc/PID/status fields} of every process in the unit's cgroup (system or user unit)."""
    out = host.run(
        "for f in $(grep -lx '0::.*/%s' /proc/[0-9]*/cgroup 2>/dev/null); do d=${f%%/cgroup}; "
        "echo \"${d#/proc/} $(grep -E '^(Name|Uid|Seccomp|NoNewPrivs|CapEff|CapBnd):' $d/status | tr '\\t\\n' ' |')\"; "
        "done" % unit.replace(".", "\\.")
    ).stdout
    procs = {}
    for line in out.splitlines():
        pid, _, rest = line.partition(" ")
        fields = dict(item.split(":", 1) for item in rest.split("|") if ":" in item)
        if fields:
            procs[int(pid)] = {k: v.strip() for k, v in fields.items()}
    return procs


def assert_filtered(procs, what):
    assert procs, f"no process of {what} found"
    for pid, status in procs.items():
        assert status["Seccomp"] == "2", f"{what}: pid {pid} ({status['Name']}) runs without a seccomp filter: {status}"
        assert status["NoNewPrivs"] == "1", f"{what}: pid {pid} ({status['Name']}) may gain privileges: {status}"


def playbook(name):
    env = dict(os.environ, ANSIBLE_CONFIG=str(EPHEMERAL / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"), ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE", str(EPHEMERAL / "inventory" / "ansible_inventory.yml"))
    out = subprocess.run(["ansible-playbook", "-i", inventory, str(ROOT / "playbooks" / name),
                          "-e", "mlflow_stack_public_port=9443"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    # Joined into one line: the YAML callback wraps long summary lines.
    return out.returncode, " ".join((out.stdout + out.stderr).split())


# --- MLflow (systemd --user) ---------------------------------------------------------------

def test_mlflow_server_and_its_workers_run_under_the_syscall_filter(host):
    for unit in ("mlflow.service", "mlflow-gc.service"):
        show = user_systemctl(host, "mlflow", f"show {unit} -p SystemCallFilter -p RestrictAddressFamilies "
                                              "-p NoNewPrivileges -p SystemCallErrorNumber").stdout
        props = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
        # systemd lists the expanded allow-list; @system-service holds e.g. openat but not mount.
        assert " openat " in f" {props['SystemCallFilter']} " and " mount " not in f" {props['SystemCallFilter']} ", \
            f"{unit}: {props['SystemCallFilter'][:200]}"
        assert set(props["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}, show
        assert props["NoNewPrivileges"] == "yes" and props["SystemCallErrorNumber"] in ("1", "EPERM"), show  # 252 prints the number
    procs = unit_processes(host, "mlflow.service")
    # `mlflow server`, uvicorn's supervisor and at least one worker.
    assert len(procs) >= 3, procs
    assert_filtered(procs, "mlflow.service")


# --- nginx (drop-in) ---------------------------------------------------------------------------

def test_nginx_master_and_workers_are_filtered_and_the_master_keeps_five_capabilities(host):
    procs = unit_processes(host, "nginx.service")
    assert_filtered(procs, "nginx.service")
    masters = {pid: s for pid, s in procs.items() if s["Uid"].split()[0] == "0"}
    workers = {pid: s for pid, s in procs.items() if s["Uid"].split()[0] != "0"}
    assert len(masters) == 1 and workers, procs
    (master,) = masters.values()
    # The container grants more (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_KILL ...): the drop-in takes them away.
    assert int(master["CapBnd"], 16) == NGINX_CAPS, master
    assert int(master["CapEff"], 16) == NGINX_CAPS, master
    for pid, status in workers.items():
        assert int(status["CapEff"], 16) == 0, f"worker {pid} kept capabilities: {status}"


def test_nginx_reloads_and_reopens_its_logs_inside_the_sandbox(host):
    before = unit_processes(host, "nginx.service")
    log_size = int(host.check_output("stat -c %s /var/log/nginx/error.log"))
    assert host.run("systemctl reload nginx.service").rc == 0
    # What logrotate's postrotate does: the master reopens the logs as root and hands them to www-data.
    assert host.run("systemctl kill -s USR1 --kill-who=main nginx.service").rc == 0
    wait_until(lambda: set(unit_processes(host, "nginx.service")) - set(before), timeout=30,
               what="new nginx workers after the reload")
    time.sleep(1)
    assert host.service("nginx").is_running
    assert_filtered(unit_processes(host, "nginx.service"), "nginx.service after reload")
    new_lines = host.check_output(f"tail -c +{log_size + 1} /var/log/nginx/error.log")
    assert not [line for line in new_lines.splitlines() if any(f"[{lvl}]" in line for lvl in ("alert", "crit", "emerg"))], \
        new_lines


# --- Backup (system oneshot + OnFailure) ------------------------------------------------------

@pytest.fixture(scope="module")
def backup_scheduled(host):
    """Scheduled backups as an operator sets them up (site.yml does not): playbooks/backup.yml."""
    if not host.file(f"/etc/systemd/system/{BACKUP}").exists:
        rc, out = playbook("backup.yml")
        assert rc == 0, out[-4000:]


def test_backup_service_is_sandboxed_and_reports_failures(host, backup_scheduled):
    # That it still succeeds in this sandbox: test_backup.py (timer run) and the end of the next test.
    show = host.check_output(f"systemctl show {BACKUP} -p ProtectSystem -p ProtectHome -p CapabilityBoundingSet "
                             "-p SystemCallFilter -p RestrictAddressFamilies -p ReadWritePaths -p OnFailure")
    props = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
    assert props["ProtectSystem"] == "strict" and props["ReadWritePaths"] == "/var/backups/mlflow-stack", show
    assert props["ProtectHome"] == "tmpfs" and props["CapabilityBoundingSet"] == "", show
    assert " openat " in f" {props['SystemCallFilter']} " and " mount " not in f" {props['SystemCallFilter']} ", show
    assert set(props["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}, show
    assert props["OnFailure"] == FAILED, show


@pytest.fixture
def broken_backup(host, backup_scheduled):
    """The backup service pointed at an environment file that does not exist, until the test ends."""
    host.run(f"mkdir -p {os.path.dirname(BROKEN_DROPIN)}")
    host.run(f"printf '[Service]\\nExecStart=\\nExecStart=/usr/local/sbin/mlflow-stack-backup "
             f"--env-file /nonexistent/backup.env backup\\n' > {BROKEN_DROPIN}")
    assert host.run("systemctl daemon-reload").rc == 0
    try:
        yield
    finally:
        host.run(f"rm -f {BROKEN_DROPIN}")
        host.run("systemctl daemon-reload")
        host.run(f"systemctl reset-failed {BACKUP} {FAILED}")


def test_failed_backup_is_logged_and_fails_health_until_a_backup_succeeds(host, broken_backup):
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
    assert host.run(f"systemctl start {BACKUP}").rc != 0
    journal = wait_until(
        lambda: host.run(f"journalctl --no-pager -p err -u {FAILED} --since '{since}' -o cat").stdout.strip(),
        timeout=30, what=f"the error line of {FAILED}")
    assert f"BACKUP FAILED: {BACKUP} (exit-code, exit status 1)" in journal, journal
    assert f"{BACKUP}: exit-code, exit status 1" in host.file(MARKER).content_string

    rc, out = playbook("health.yml")
    assert rc != 0, out[-3000:]
    assert f"FAIL default-mlflow backup: last scheduled backup ({BACKUP}) succeeded" in out, out[-3000:]

    host.run(f"rm -f {BROKEN_DROPIN}")
    host.run("systemctl daemon-reload")
    assert host.run(f"systemctl start {BACKUP}").rc == 0
    rc, out = playbook("health.yml")
    assert f"OK default-mlflow backup: last scheduled backup ({BACKUP}) succeeded" in out, out[-3000:]
    assert "a backup succeeded since" in out, out[-3000:]
