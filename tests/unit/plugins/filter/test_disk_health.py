"""The disk rule of every health entry point: the filesystem holding each path, judged by its free share."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.mlops.mlflow_stack.plugins.filter.disk_health import disk_health  # noqa: E402

MIB = 1048576
MOUNTS = [
    {"mount": "/", "size_total": 1000 * MIB, "size_available": 500 * MIB},
    {"mount": "/var", "size_total": 1000 * MIB, "size_available": 50 * MIB},
    {"mount": "/var/lib/minio", "size_total": 2000 * MIB, "size_available": 1800 * MIB},
]


def test_each_path_is_judged_on_the_filesystem_holding_it():
    records = disk_health({"home": "/home/mlflow", "logs": "/var/log", "data": "/var/lib/minio/data"}, MOUNTS, 10, "h1")
    assert records == [
        {"host": "h1", "component": "disk", "check": "free space on / (home)", "ok": True, "detail": "500 MiB free, 50% used"},
        {"host": "h1", "component": "disk", "check": "free space on /var (logs)", "ok": False, "detail": "50 MiB free, 95% used"},
        {"host": "h1", "component": "disk", "check": "free space on /var/lib/minio (data)", "ok": True,
         "detail": "1800 MiB free, 10% used"},
    ]


def test_a_mount_point_that_only_shares_a_prefix_does_not_hold_the_path():
    records = disk_health({"data": "/var/lib/minio-other"}, MOUNTS, 10, "h1")
    assert records[0]["check"] == "free space on /var (data)"


def test_paths_on_one_filesystem_give_one_record():
    records = disk_health({"data": "/srv/a", "cache": "/srv/b"}, MOUNTS, 10, "h1")
    assert [r["check"] for r in records] == ["free space on / (data, cache)"]


def test_the_threshold_is_inclusive():
    assert disk_health({"home": "/home"}, MOUNTS, 50, "h1")[0]["ok"] is True
    assert disk_health({"home": "/home"}, MOUNTS, 51, "h1")[0]["ok"] is False


def test_a_path_on_a_filesystem_the_facts_do_not_report_is_shown_not_judged():
    records = disk_health({"data": "/data"}, [], 10, "h1")
    assert records == [{"host": "h1", "component": "disk", "check": "free space for /data (data)", "ok": True,
                        "detail": "not judged: its filesystem is not in ansible_facts.mounts"
                                  " (no device, e.g. a container's overlay root)"}]


def test_bad_input_is_refused():
    with pytest.raises(AnsibleFilterError):
        disk_health(["/"], MOUNTS, 10, "h1")
    with pytest.raises(AnsibleFilterError):
        disk_health({"home": "/"}, MOUNTS, "ten", "h1")
