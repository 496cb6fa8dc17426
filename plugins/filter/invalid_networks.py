# -*- coding: utf-8 -*-
# Copyright: mlops.mlflow_stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The entries of a list that are not an IP address or network, for input checks."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress

DOCUMENTATION = r"""
name: invalid_networks
short_description: The entries of a list that are not an IP address or network
version_added: 0.2.0
author:
  - mlops.mlflow_stack contributors
description:
  - Returns the entries that Python's C(ipaddress) does not read as an IPv4 or IPv6 address or network (host bits
    allowed), so a preflight can name them. Needs no netaddr.
options:
  _input:
    description: Addresses or networks.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Refuse sources that are not addresses
  ansible.builtin.assert:
    that: firewall_admin_sources | mlops.mlflow_stack.invalid_networks | length == 0
"""

RETURN = r"""
_value:
  description: The entries that are not addresses or networks; empty when all are.
  type: list
  elements: str
"""


def invalid_networks(values):
    bad = []
    for value in values or []:
        try:
            ipaddress.ip_network(str(value).strip(), strict=False)
        except ValueError:
            bad.append(value)
    return bad


class FilterModule(object):
    def filters(self):
        return {"invalid_networks": invalid_networks}
