"""The plain_http_remote test flags every http URL that leaves the host (the CA URLs and S3
endpoints the preflights refuse) and lets https, other schemes and loopback through; playbooks
reach it by its full name and ansible-doc reads its documentation."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.mlops.mlflow_stack.plugins.test import plain_http_remote as plugin  # noqa: E402

plain_http_remote = plugin.TestModule().tests()["plain_http_remote"]

REMOTE_HTTP = [
    "http://minio1:9000",
    "HTTP://db.example.org/root.crt",
    "http://10.0.0.5",
    "http://user:pw@s3.example.org:9000/bucket",
    "http://[2001:db8::1]:9000",
    "http://127.example.org:9000",  # a name, not an address
    "http://localhost.example.org",
    " http://minio1:9000 ",
]

NOT_REMOTE_HTTP = [
    "",
    "https://minio1:9000",
    "HTTPS://db.example.org/root.crt",
    "s3://bucket/prefix",
    "file:///etc/ssl/ca.crt",
    "http://localhost:9000",
    "http://LOCALHOST:9000",
    "http://localhost.:9000",
    "http://minio.localhost:9000",
    "http://127.0.0.1:9000",
    "http://127.8.9.10",
    "http://[::1]:9000",
    "http://[::ffff:127.0.0.1]:9000",
]


@pytest.mark.parametrize("url", REMOTE_HTTP)
def test_plain_http_to_another_host_is_flagged(url):
    assert plain_http_remote(url) is True


@pytest.mark.parametrize("url", NOT_REMOTE_HTTP)
def test_https_other_schemes_and_loopback_are_not(url):
    assert plain_http_remote(url) is False


@pytest.mark.parametrize("value", [None, 9000, ["http://minio1:9000"]])
def test_a_value_that_is_not_a_string_is_an_error(value):
    with pytest.raises(AnsibleFilterError, match="plain_http_remote"):
        plain_http_remote(value)


def test_playbooks_reach_it_by_its_full_name(tmp_path):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.assert:\n        quiet: true\n        that:\n"
        "          - \"'http://minio1:9000' is mlops.mlflow_stack.plain_http_remote\"\n"
        "          - \"'http://127.0.0.1:9000' is not mlops.mlflow_stack.plain_http_remote\"\n"
        "          - \"['http://a', 'https://b', 'http://localhost'] | select('mlops.mlflow_stack.plain_http_remote')"
        " | list == ['http://a']\"\n")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook)],
        env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_documentation_parses():
    doc = yaml.safe_load(plugin.DOCUMENTATION)
    assert doc["name"] == "plain_http_remote"
    assert set(doc["options"]) == {"_input"}
    assert yaml.safe_load(plugin.RETURN)["_value"]["type"] == "boolean"
    assert all("plain_http_remote" in str(example) for example in yaml.safe_load(plugin.EXAMPLES))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-doc"), "-t", "test", "mlops.mlflow_stack.plain_http_remote"],
        env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "loopback" in proc.stdout, proc.stdout + proc.stderr
