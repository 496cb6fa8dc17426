import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "_shared"))

from testinfra_helpers import pytest_runtest_makereport  # noqa: E402,F401  (failure journals)

# Files that destroy and restore the stack's data run after every other test of the scenario.
LAST = ("test_backup.py",)


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: os.path.basename(str(item.fspath)) in LAST)
