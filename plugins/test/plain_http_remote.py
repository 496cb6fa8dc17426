# -*- coding: utf-8 -*-
# Copyright: mlops.mlflow_stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one rule every role's preflight applies to URLs that must not cross the network in clear text."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: plain_http_remote
short_description: Does a URL travel unencrypted over the network
version_added: 0.1.0
author:
  - mlops.mlflow_stack contributors
description:
  - Returns V(true) when the URL's scheme is C(http) (in any case) and its host is not this host's loopback, so a
    preflight refuses it, or asks for a checksum or an explicit opt-in, before a host changes. Every role of the
    collection judges its download and endpoint URLs with this test, so all of them draw the line in the same place.
  - Loopback is V(localhost) (and names ending in V(.localhost)), any address in 127.0.0.0/8, V(::1) and the
    IPv4-mapped form of a 127.0.0.0/8 address (V(::ffff:127.0.0.1)); traffic to them never leaves the host.
  - Any other scheme (V(https), V(s3), V(file)) and an empty value are V(false); a value that is not a string is an error.
options:
  _input:
    description: The URL to judge.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Refuse a CA downloaded over plain http without a checksum
  ansible.builtin.assert:
    that: not (mlflow_server_db_ca_url is mlops.mlflow_stack.plain_http_remote and mlflow_server_db_ca_checksum | length == 0)
    fail_msg: Use https, set mlflow_server_db_ca_checksum, or give the CA as mlflow_server_db_ca_src.

- name: Refuse a plain-http S3 endpoint on another host unless the operator opts in
  ansible.builtin.assert:
    that: backup_s3_endpoint_url is not mlops.mlflow_stack.plain_http_remote or backup_s3_allow_plain_http | bool
"""

RETURN = r"""
_value:
  description: V(true) when the URL is plain C(http) to a host other than loopback.
  type: boolean
"""

import ipaddress

from ansible.errors import AnsibleFilterError
from ansible.module_utils.six.moves.urllib.parse import urlsplit


def _is_loopback(hostname):
    if hostname == "localhost" or hostname.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def plain_http_remote(url):
    """True when ``url`` is plain http to a host other than loopback (see DOCUMENTATION)."""
    if not isinstance(url, str):
        raise AnsibleFilterError("plain_http_remote: expects a URL string, got %s" % type(url).__name__)
    parts = urlsplit(url.strip())
    if parts.scheme.lower() != "http":
        return False
    hostname = (parts.hostname or "").rstrip(".").lower()
    return not _is_loopback(hostname)


class TestModule(object):
    def tests(self):
        return {"plain_http_remote": plain_http_remote}
