# -*- coding: utf-8 -*-
# Copyright: mlops.mlflow_stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The network addresses of inventory hosts, from their gathered facts: the one source of the
peers the firewall admits and the client networks pg_hba allows."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: host_addresses
short_description: The IP addresses of inventory hosts, from their facts
version_added: 0.2.0
author:
  - mlops.mlflow_stack contributors
description:
  - Returns the sorted, unique addresses of the given hosts, taken from their gathered facts (C(all_ipv4_addresses),
    C(all_ipv6_addresses) without link-local ones) and from C(ansible_host) when it is an address.
  - A host with neither fails with a message naming it, so a firewall or pg_hba never silently leaves out a peer.
  - The stack role gathers the network facts of the stack's hosts before anything uses this.
options:
  _input:
    description: Inventory host names, for example C(groups['mlflow_server']).
    type: list
    elements: str
    required: true
  hostvars:
    description: C(hostvars).
    type: raw
    required: true
  cidr:
    description: Return networks (C(/32), C(/128)) instead of bare addresses, as pg_hba wants them.
    type: bool
    default: false
"""

EXAMPLES = r"""
postgresql_hba_client_networks: "{{ groups['mlflow_server'] | mlops.mlflow_stack.host_addresses(hostvars, cidr=true) }}"
"""

RETURN = r"""
_value:
  description: The addresses (or networks), IPv4 first.
  type: list
  elements: str
"""


def _address(value):
    try:
        return ipaddress.ip_address(str(value).strip())
    except ValueError:
        return None


def host_addresses(hosts, hostvars, cidr=False):
    found = set()
    for host in hosts or []:
        try:
            hv = hostvars[host]
        except KeyError:
            raise AnsibleFilterError("host_addresses: %s is not in the inventory" % host)
        facts = hv.get("ansible_facts") or {}
        addresses = [a for a in (_address(x) for x in facts.get("all_ipv4_addresses") or []) if a]
        addresses += [a for a in (_address(x) for x in facts.get("all_ipv6_addresses") or [])
                      if a and not a.is_link_local]
        explicit = _address(hv.get("ansible_host", ""))
        if explicit:
            addresses.append(explicit)
        if not addresses:
            raise AnsibleFilterError(
                "host_addresses: no address known for %s: gather its facts first (the stack role does so for the "
                "stack's groups), or give it an IP address as ansible_host" % host)
        found.update(a for a in addresses if not a.is_loopback)
    ordered = sorted(found, key=lambda a: (a.version, int(a)))
    return [("%s/%d" % (a, a.max_prefixlen)) if cidr else str(a) for a in ordered]


class FilterModule(object):
    def filters(self):
        return {"host_addresses": host_addresses}
