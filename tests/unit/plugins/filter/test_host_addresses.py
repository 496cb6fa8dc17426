"""The addresses the firewall admits and pg_hba allows come from the hosts' facts: every
address of every host, loopback and link-local left out, and a host without any named."""

import importlib.util
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

ROOT = Path(__file__).resolve().parents[4]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "plugins" / "filter" / ("%s.py" % name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


host_addresses = load("host_addresses").host_addresses
invalid_networks = load("invalid_networks").invalid_networks

HOSTVARS = {
    "mlflow1": {"ansible_facts": {"all_ipv4_addresses": ["10.0.0.12", "127.0.0.1", "192.168.5.3"],
                                  "all_ipv6_addresses": ["fe80::1", "2001:db8::12"]}},
    "mlflow2": {"ansible_facts": {"all_ipv4_addresses": ["10.0.0.2"]}, "ansible_host": "10.0.0.2"},
    "nofacts": {"ansible_host": "10.0.0.9"},
    "unknown": {"ansible_host": "unknown.example.com"},
}


def test_every_address_of_every_host_sorted_without_loopback_and_link_local():
    assert host_addresses(["mlflow2", "mlflow1"], HOSTVARS) == ["10.0.0.2", "10.0.0.12", "192.168.5.3",
                                                               "2001:db8::12"]


def test_networks_for_pg_hba():
    assert host_addresses(["mlflow1"], HOSTVARS, cidr=True) == ["10.0.0.12/32", "192.168.5.3/32",
                                                                "2001:db8::12/128"]


def test_an_address_as_ansible_host_is_enough():
    assert host_addresses(["nofacts"], HOSTVARS) == ["10.0.0.9"]


def test_a_host_without_any_address_is_named():
    with pytest.raises(AnsibleFilterError, match="no address known for unknown: gather its facts"):
        host_addresses(["mlflow1", "unknown"], HOSTVARS)


def test_no_hosts_no_addresses():
    assert host_addresses([], HOSTVARS) == [] and host_addresses(None, HOSTVARS) == []


def test_invalid_networks_names_what_is_not_an_address():
    assert invalid_networks(["10.0.0.1", "10.0.0.0/24", "10.0.0.1/24", "2001:db8::/64", "db1", "10.0.0.300", ""]) == [
        "db1", "10.0.0.300", ""]
