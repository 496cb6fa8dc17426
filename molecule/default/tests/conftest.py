import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "_shared"))

from testinfra_helpers import pytest_runtest_makereport  # noqa: E402,F401  (failure journals)

# The stack converges on the previous MLflow release; the upgrade to the collection's runs before
# everything else. Files that destroy and restore the stack's data run after every other test.
FIRST = ("test_rolling_upgrade.py",)
LAST = ("test_backup.py",)


def pytest_collection_modifyitems(items):
    def rank(item):
        name = os.path.basename(str(item.fspath))
        return 0 if name in FIRST else 2 if name in LAST else 1
    items.sort(key=rank)
