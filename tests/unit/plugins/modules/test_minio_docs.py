"""What ansible-doc shows for the MinIO modules, their own options merged with the minio and
validate_certs doc fragments, is what the modules accept: the fragment stays in step with the
connection argument spec both modules share."""

import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.mlops.mlflow_stack.plugins.modules import minio_bucket, minio_user_policy  # noqa: E402

ATTRIBUTES = ("type", "default", "required", "choices", "elements")


class _SpecCaught(Exception):
    pass


def accepted_options(module):
    """The argument spec main() hands to AnsibleModule, caught before anything runs."""
    caught = {}

    def capture(argument_spec, **_kwargs):
        caught.update(argument_spec)
        raise _SpecCaught()

    with mock.patch.object(module, "AnsibleModule", side_effect=capture), pytest.raises(_SpecCaught):
        module.main()
    return {name: {"type": "str", "required": False, "default": None, "choices": None, "elements": None, **{
        key: value for key, value in spec.items() if key in ATTRIBUTES}} for name, spec in caught.items()}


def documented_options(fqcn):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), "--json", fqcn],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    options = json.loads(proc.stdout)[fqcn]["doc"]["options"]
    return {name: {key: option.get(key) for key in ATTRIBUTES} for name, option in options.items()}


@pytest.mark.parametrize("module", [minio_bucket, minio_user_policy], ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_documented_options_are_the_accepted_ones(module):
    fqcn = "mlops.mlflow_stack." + module.__name__.rsplit(".", 1)[1]
    documented = documented_options(fqcn)
    for option in documented.values():
        option["required"] = bool(option["required"])
    assert documented == accepted_options(module)
