"""Run a playbook on the controller (localhost, local connection) with the checkout's collection,
for the role tests that need no managed host."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def run_on_controller(tmp_path, playbook_text, extra_vars):
    """Write ``playbook_text`` and run it with ``extra_vars``; returns (rc, stdout and stderr on one line)."""
    playbook = tmp_path / "play.yml"
    playbook.write_text(playbook_text)
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps(extra_vars))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
         "-e", "ansible_python_interpreter=%s" % sys.executable, "-e", "@%s" % extra, str(playbook)],
        env=env, capture_output=True, text=True, timeout=120)
    return proc.returncode, " ".join((proc.stdout + proc.stderr).split())
