import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "_shared"))

from testinfra_helpers import pytest_runtest_makereport  # noqa: E402,F401  (failure journals)

# The stack converges on the previous MLflow release; the upgrade to the collection's runs before
# everything else. Files that destroy or replace the stack's data run after every other test, in
# this order: the backup's restore first, the adoption of another deployment's database last.
FIRST = ("test_rolling_upgrade.py",)
LAST = ("test_backup.py", "test_adopt.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = os.path.basename(str(item.fspath))
        if name in FIRST:
            return 0
        if name in LAST:
            return 2 + LAST.index(name)
        return 1
    items.sort(key=rank)
