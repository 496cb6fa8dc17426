"""The stack's values (mlflow_stack_*) are declared in one place, roles/stack: every name used
anywhere in the collection is declared there, every declared one is read somewhere, and the
stack role's wiring only feeds variables the roles really have. A typo in an inventory's key, a
renamed value or a dead wiring line fails here instead of silently keeping old behaviour."""

import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
STACK = ROOT / "roles" / "stack"
NAME = re.compile(r"(?<![A-Za-z0-9_])mlflow_stack_[a-z0-9_]*[a-z0-9](?![\w*])")  # mlflow_stack_db_* is prose
# Names with the prefix that are not stack values: Python modules and files of the collection.
NOT_VALUES = {"mlflow_stack_server", "mlflow_stack_backup"}
TEXT = (".yml", ".yaml", ".py", ".j2", ".md", ".sh", ".cfg", ".txt", ".ini", ".env", "Makefile")


def _load(path):
    with path.open() as fh:
        return yaml.safe_load(fh) or {}


def declared():
    names = set()
    for entry in _load(STACK / "meta" / "argument_specs.yml")["argument_specs"].values():
        names |= set(entry.get("options") or {})
    return names


def tracked_files():
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    return [ROOT / f for f in out if f.endswith(TEXT) and (ROOT / f).is_file() and not f.startswith("tests/")]


def references(skip_definitions):
    """{name: [file:line]} of every mlflow_stack_* name; key definitions left out when asked."""
    found = {}
    for path in tracked_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if skip_definitions:
                line = re.sub(r"^\s*(-\s+)?mlflow_stack_\w+:", "", line)
            for name in NAME.findall(line):
                found.setdefault(name, []).append("%s:%d" % (path.relative_to(ROOT), number))
    return found


def test_every_used_name_is_declared():
    unknown = {n: where[:3] for n, where in references(False).items() if n not in declared() | NOT_VALUES}
    assert not unknown, "mlflow_stack_* names used but not declared in roles/stack/meta/argument_specs.yml: %s" % unknown


def test_every_declared_name_is_read_somewhere():
    reads = {}
    for name, where in references(True).items():
        reads[name] = [w for w in where if not w.startswith("roles/stack/meta/") and not w.endswith(".md")]
    unused = sorted(n for n in declared() if not reads.get(n))
    assert not unused, "declared mlflow_stack_* values that nothing reads: %s" % unused


def test_defaults_and_declarations_agree():
    defaults = set(_load(STACK / "defaults" / "main.yml"))
    assert defaults <= declared()
    # Only the public hostname has no sensible default.
    assert declared() - defaults == {"mlflow_stack_public_hostname"}


def test_the_wiring_feeds_only_variables_the_roles_have():
    wiring = _load(STACK / "vars" / "main.yml")
    known = set()
    for role in (ROOT / "roles").iterdir():
        spec = role / "meta" / "argument_specs.yml"
        if spec.is_file() and role.name != "stack":
            for entry in _load(spec)["argument_specs"].values():
                known |= set((entry.get("options") or {}))
    dead = sorted(name for name in set(wiring) - known if not name.startswith("__"))
    assert not dead, "the stack wires variables no role declares (renamed or removed?): %s" % dead


def test_inventories_hold_only_values():
    for inventory in ("prod", "local"):
        group_vars = ROOT / "inventories" / inventory / "group_vars"
        files = sorted(str(p.relative_to(group_vars)) for p in group_vars.rglob("*") if p.is_file())
        assert files == ["all/stack.yml", "all/vault.yml"], (inventory, files)
        stack = _load(group_vars / "all" / "stack.yml")
        assert all(k.startswith("mlflow_stack_") for k in stack), (inventory, sorted(stack))
