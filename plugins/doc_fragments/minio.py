# -*- coding: utf-8 -*-
# Copyright: mlops.mlflow_stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The MinIO connection options, documented once for the modules that share their argument spec
(plugins/module_utils/minio_admin.py connection_argument_spec); validate_certs comes from the
validate_certs fragment."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
requirements:
  - minio (Python package)
options:
  endpoint_url:
    description: URL of the MinIO API, for example V(https://minio1.example.org:9000).
    type: str
    required: true
  login_access_key:
    description:
      - Access key to act as, with the rights the module needs (the root user, or a key allowed to manage buckets,
        users and policies).
    type: str
    required: true
  login_secret_key:
    description: Secret key of O(login_access_key).
    type: str
    required: true
  region:
    description: Region to sign requests for (and, for a new bucket, to create it in).
    type: str
    default: us-east-1
  ca_bundle:
    description: PEM file with the CA certificates to trust for an HTTPS endpoint, on the host that runs the module.
    type: path
  timeout:
    description: Connect and read timeout in seconds.
    type: int
    default: 15
"""
