"""Operators copy the inventory once and upgrade the collection for years. On the converged
stack: a `--check --diff` run of the site playbook changes nothing, and an inventory copied from
the previous release (its adapter files included) converges the same stack with changed=0 and
one warning that names the files it can delete. That converge runs at -vvv, and neither its
output nor any host's journal (sudo's log of command lines included) holds a secret."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import testinfra

testinfra_hosts = ["default-mlflow"]

ROOT = Path(__file__).resolve().parents[3]
INVENTORY_DIR = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory"
PREVIOUS = ROOT / "tests" / "fixtures" / "inventory_previous_release"
SECRETS = ["db_password", "s3_secret_key", "minio_root_password", "nginx_admin_password", "nginx_ci_password",
           "crypto_kek_passphrase"]
HOSTS = ["default-db", "default-s3", "default-mlflow"]
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def site(inventory, *args):
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"), ANSIBLE_FORCE_COLOR="0")
    out = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), str(ROOT / "site.yml"),
                          "-i", str(inventory), "-e", "mlflow_stack_public_port=9443", *args],
                         cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=900)
    recap = {host: (int(changed), int(unreachable), int(failed))
             for host, changed, unreachable, failed in RECAP.findall(out.stdout)}
    assert recap, out.stdout[-3000:] + out.stderr[-3000:]
    return out, recap


def changed_tasks(stdout):
    """The tasks that reported a change, to say which in a failure."""
    tasks, task = [], None
    for line in stdout.splitlines():
        if line.startswith("TASK ["):
            task = line[6:line.find("]")]
        elif line.startswith("changed: [") and task not in tasks:
            tasks.append(task)
    return tasks


def test_check_mode_on_the_converged_stack_changes_nothing():
    out, recap = site(INVENTORY_DIR, "--check", "--diff")
    assert all(failed == 0 and unreachable == 0 for _, unreachable, failed in recap.values()), out.stdout[-4000:]
    assert all(changed == 0 for changed, _, _ in recap.values()), (recap, changed_tasks(out.stdout))
    assert "still carries the adapter files" not in out.stdout + out.stderr


@pytest.fixture()
def previous_inventory():
    """This scenario's inventory with its group_vars as the previous release shipped them: the
    same directory (so its secrets, CA and paths are the ones the stack was converged with), the
    group_vars link swapped for the test and put back afterwards."""
    group_vars = INVENTORY_DIR / "group_vars"
    saved = INVENTORY_DIR / "group_vars.scenario"
    group_vars.rename(saved)
    try:
        shutil.copytree(PREVIOUS / "group_vars", group_vars)
        # The previous release's local inventory pinned one MLflow host beside nginx (bind 127.0.0.1,
        # one upstream); an operator with a second replica, as this scenario has, had set those for it.
        stack = group_vars / "all" / "stack.yml"
        lines, skip = [], False
        for line in stack.read_text().splitlines(keepends=True):
            if line.startswith(("mlflow_stack_mlflow_bind_address:", "mlflow_stack_mlflow_upstreams:")):
                skip = True
                continue
            if skip and line.startswith((" ", "-")):
                continue
            skip = False
            lines.append(line)
        stack.write_text("".join(lines))
        yield INVENTORY_DIR
    finally:
        shutil.rmtree(group_vars, ignore_errors=True)
        saved.rename(group_vars)


def secrets():
    return {name: (INVENTORY_DIR / ".secrets" / name).read_text().split()[0] for name in SECRETS}


def test_an_inventory_from_the_previous_release_converges_unchanged(previous_inventory):
    out, recap = site(previous_inventory, "-vvv")
    assert all(failed == 0 and unreachable == 0 for _, unreachable, failed in recap.values()), out.stdout[-4000:]
    assert all(changed == 0 for changed, _, _ in recap.values()), (recap, changed_tasks(out.stdout))
    text = out.stdout + out.stderr
    # Warned once per run, naming every adapter file.
    assert text.count("[WARNING]: This inventory still carries the adapter files") == 1, text[-4000:]
    for name in ("all/backup.yml", "minio/minio.yml", "mlflow_server/mlflow_server.yml",
                 "nginx_auth/nginx_auth.yml", "postgresql/postgresql.yml"):
        assert "group_vars/%s: the collection sets all of it now; delete the file." % name in text
    # The KEK passphrase came after that release: the hosts keep the one they have, and the run says what to add.
    assert text.count("[WARNING]: vault_mlflow_stack_crypto_kek_passphrase is not set") == 1, text[-4000:]

    leaked = [name for name, value in secrets().items() if value in text]
    assert not leaked, "secrets in the output of a -vvv converge: %s" % leaked


@pytest.mark.parametrize("name", HOSTS)
def test_no_secret_in_any_journal(name):
    host = testinfra.get_host("ansible://%s?ansible_inventory=%s" % (name, INVENTORY_DIR))
    journal = host.check_output("journalctl --no-pager -o cat")
    assert "sudo" in journal or "systemd" in journal
    leaked = [key for key, value in secrets().items() if value in journal]
    assert not leaked, "secrets in the journal of %s: %s" % (name, leaked)
