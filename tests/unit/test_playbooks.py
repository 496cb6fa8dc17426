"""Every play of the collection's playbooks that manages hosts keeps notified handlers when a
task fails (force_handlers): an env file or certificate changed in a failed run still gets its
restart, instead of the next run seeing no change and leaving the old settings running. And every
such play runs the stack role first, so the roles get the stack's values."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PLAYS = [(path.name, play) for path in sorted((ROOT / "playbooks").glob("*.yml"))
         for play in yaml.safe_load(path.read_text()) if "hosts" in play and play["hosts"] != "localhost"]


@pytest.mark.parametrize("name,play", PLAYS, ids=["%s: %s" % (n, p["name"]) for n, p in PLAYS])
def test_managed_hosts_plays_force_handlers_and_run_the_stack_role_first(name, play):
    assert play.get("force_handlers") is True, "%s: %s lacks force_handlers: true" % (name, play["name"])
    roles = [r["role"] if isinstance(r, dict) else r for r in play.get("roles", [])]
    assert roles[:1] == ["mlops.mlflow_stack.stack"], "%s: %s must list mlops.mlflow_stack.stack first" % (
        name, play["name"])
