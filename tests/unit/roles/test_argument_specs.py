"""Every role's meta/argument_specs.yml agrees with its defaults/main.yml.

An option documented but not defaulted (or defaulted but not documented) is how roles
drift: operators read the spec, the role reads the defaults."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
PREFIX = {"stack": "mlflow_stack_"}  # the internal stack role holds the stack's own values
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())


def _load(path):
    with path.open() as fh:
        return yaml.safe_load(fh) or {}


def test_there_are_roles():
    assert ROLES, "no roles found under roles/"


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_argument_specs_match_defaults(role):
    spec_file = role / "meta" / "argument_specs.yml"
    defaults_file = role / "defaults" / "main.yml"
    assert spec_file.is_file(), f"{role.name}: meta/argument_specs.yml is missing"
    specs = _load(spec_file)["argument_specs"]
    assert "main" in specs, f"{role.name}: argument_specs has no 'main' entry point"
    defaults = _load(defaults_file) if defaults_file.is_file() else {}

    documented = set()
    for entry in specs.values():
        documented |= set((entry.get("options") or {}).keys())

    undocumented = sorted(set(defaults) - documented)
    assert not undocumented, f"{role.name}: defaults without argument_specs entries: {undocumented}"

    main_options = specs["main"].get("options") or {}
    for name, option in main_options.items():
        assert option.get("description"), f"{role.name}: option {name} has no description"
        if option.get("required"):
            assert name not in defaults, f"{role.name}: required option {name} should not have a default"
            continue
        assert name in defaults, f"{role.name}: option {name} is documented but has no default in defaults/main.yml"
        if "default" in option:
            assert option["default"] == defaults[name], (
                f"{role.name}: {name} default differs: spec {option['default']!r} vs defaults {defaults[name]!r}"
            )


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_public_variables_carry_the_role_prefix(role):
    defaults_file = role / "defaults" / "main.yml"
    if not defaults_file.is_file():
        pytest.skip("no defaults")
    prefix = PREFIX.get(role.name, role.name + "_")
    bad = [k for k in _load(defaults_file) if not k.startswith(prefix)]
    assert not bad, f"{role.name}: public variables must start with '{prefix}': {bad}"
