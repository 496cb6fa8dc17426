# -*- coding: utf-8 -*-
"""The validate_certs option, documented once for every module of the collection that speaks HTTPS."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  validate_certs:
    description:
      - Whether to verify the server certificate. Only turn this off for a throwaway test.
    type: bool
    default: true
"""
