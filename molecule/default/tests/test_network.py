"""Who can reach what. From a host on the same network that is in none of the stack's groups
(default-outsider), MLflow's port, PostgreSQL and MinIO's API and console refuse the connection
while nginx answers; the peers that need a port reach it. The firewall is the stack's own
nftables table, kept when nftables.service restarts (which flushes the whole ruleset)."""

import os
import sys

import pytest
import testinfra

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "_shared"))
from testinfra_helpers import wait_until  # noqa: E402

testinfra_hosts = ["default-outsider"]

INVENTORY = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "inventory")
PROBE = ("python3 -c 'import socket, sys\n"
         "try:\n"
         "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close(); print(\"open\")\n"
         "except ConnectionRefusedError: print(\"refused\")\n"
         "except OSError as exc: print(\"error\", exc)' {} {}")


def stack_host(name):
    return testinfra.get_host("ansible://%s?ansible_inventory=%s" % (name, INVENTORY))


def reach(host, target, port):
    return host.check_output(PROBE.format(target, port))


@pytest.mark.parametrize("target,port,what", [
    ("default-mlflow", 5000, "MLflow"),
    ("default-mlflow2", 5000, "MLflow (second replica)"),
    ("default-db", 5432, "PostgreSQL"),
    ("default-s3", 9000, "MinIO API"),
    ("default-s3", 9001, "MinIO console"),
])
def test_an_outsider_is_refused(host, target, port, what):
    assert reach(host, target, port) == "refused", "%s on %s:%d is reachable from outside the stack" % (what, target, port)


def test_an_outsider_reaches_nginx(host):
    assert reach(host, "default-mlflow", 443) == "open"


@pytest.mark.parametrize("source,target,port", [
    ("default-mlflow", "default-db", 5432),
    ("default-mlflow", "default-s3", 9000),
    ("default-mlflow2", "default-db", 5432),
    ("default-mlflow2", "default-s3", 9000),
    # nginx (on default-mlflow) to the replica on another host.
    ("default-mlflow", "default-mlflow2", 5000),
])
def test_the_peers_that_need_a_port_reach_it(source, target, port):
    assert reach(stack_host(source), target, port) == "open"


def test_mlflow_listens_on_loopback_only_where_nginx_is_local():
    mlflow = stack_host("default-mlflow")
    listening = mlflow.check_output("ss -Htln 'sport = :5000'")
    assert "127.0.0.1:5000" in listening and "0.0.0.0:5000" not in listening and "*:5000" not in listening, listening
    health = mlflow.check_output("python3 -c 'import urllib.request; "
                                 "print(urllib.request.urlopen(\"http://127.0.0.1:5000/health\").read().decode())'")
    assert health.strip() == "OK"


def test_a_replica_without_nginx_listens_on_its_own_address_only():
    replica = stack_host("default-mlflow2")
    address = replica.ansible("setup", "gather_subset=network")["ansible_facts"]["ansible_default_ipv4"]["address"]
    listening = replica.check_output("ss -Htln 'sport = :5000'")
    assert "%s:5000" % address in listening, listening
    assert "0.0.0.0:5000" not in listening and "*:5000" not in listening, listening


def test_the_table_comes_back_when_nftables_restarts(host):
    db = stack_host("default-db")
    db.check_output("systemctl restart nftables.service")
    wait_until(lambda: db.run("nft list table inet mlflow_stack").rc == 0, timeout=30,
               what="the mlflow_stack table after nftables.service flushed the ruleset")
    assert reach(host, "default-db", 5432) == "refused"
    # The operator's own tables are left alone: nftables.service's table is still there.
    assert "table inet filter" in db.check_output("nft list tables")
