import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "_shared"))

from testinfra_helpers import pytest_runtest_makereport  # noqa: E402,F401  (failure journals)
