"""The backup role's script (roles/backup/files/mlflow-stack-backup) without network: a fake S3
client stands in for MinIO, so these prove the bookkeeping a restore relies on — whole backups
only, checksums that catch damage, retention, refusals that name the fix."""

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import types
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "roles" / "backup" / "files" / "mlflow-stack-backup"


@pytest.fixture()
def mod(tmp_path, monkeypatch):
    loader = importlib.machinery.SourceFileLoader("mlflow_stack_backup", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    for key in list(os.environ):
        if key.startswith(("BACKUP_", "PG", "AWS_")):
            monkeypatch.delenv(key)
    env = tmp_path / "backup.env"
    env.write_text(
        "# comment\n"
        f"BACKUP_DIR={tmp_path / 'backups'}\n"
        "BACKUP_RETENTION_COUNT=2\n"
        "BACKUP_S3_ENDPOINT_URL=http://s3.invalid:9000\n"
        "BACKUP_S3_BUCKET=mlflow\n"
        "BACKUP_S3_PREFIX=artifacts\n"
        "AWS_SECRET_ACCESS_KEY=a=b#c d\n"
    )
    module.load_env(str(env))
    return module


class FakeS3:
    def __init__(self, objects):
        self.objects = dict(objects)
        self.uploaded = {}

    def get_paginator(self, _name):
        objects = self.objects

        class Paginator:
            def paginate(self, Bucket, Prefix):
                yield {"Contents": [{"Key": k} for k in sorted(objects) if k.startswith(Prefix)]}

        return Paginator()

    def download_file(self, _bucket, key, path):
        Path(path).write_bytes(self.objects[key])

    def upload_file(self, path, _bucket, key):
        self.uploaded[key] = Path(path).read_bytes()


def _args(**kw):
    return types.SimpleNamespace(**{"id": "", "what": ["artifacts"], **kw})


def test_env_values_are_taken_verbatim(mod):
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "a=b#c d"


def test_backup_copies_objects_with_checksums_and_keeps_no_partial(mod, monkeypatch):
    s3 = FakeS3({"artifacts/1/a/model.bin": b"weights", "artifacts/1/a/": b"", "other/x": b"not ours"})
    monkeypatch.setattr(mod, "s3_client", lambda: s3)
    result = mod.cmd_backup(_args())
    root = Path(os.environ["BACKUP_DIR"])
    assert sorted(p.name for p in root.iterdir()) == [result["id"]]
    manifest = json.loads((root / result["id"] / "manifest.json").read_text())
    assert manifest["artifacts"]["objects"] == {
        "artifacts/1/a/model.bin": {"sha256": hashlib.sha256(b"weights").hexdigest(), "bytes": 7}}
    assert (root / result["id"] / "artifacts" / "artifacts/1/a/model.bin").read_bytes() == b"weights"


def test_failed_backup_leaves_nothing_behind(mod, monkeypatch):
    class Broken(FakeS3):
        def download_file(self, *_a):
            raise OSError("connection reset")

    monkeypatch.setattr(mod, "s3_client", lambda: Broken({"artifacts/k": b"x"}))
    with pytest.raises(OSError):
        mod.cmd_backup(_args())
    assert mod.complete_backups() == []
    assert list(Path(os.environ["BACKUP_DIR"]).iterdir()) == []


def test_retention_keeps_the_newest(mod, monkeypatch):
    monkeypatch.setattr(mod, "s3_client", lambda: FakeS3({"artifacts/k": b"x"}))
    ids = [mod.cmd_backup(_args(id=f"2026010{i}T000000Z"))["id"] for i in range(1, 5)]
    assert mod.complete_backups() == ids[-2:]


def test_restore_refuses_unknown_or_malformed_ids_and_lists_the_real_ones(mod, monkeypatch):
    monkeypatch.setattr(mod, "s3_client", lambda: FakeS3({"artifacts/k": b"x"}))
    real = mod.cmd_backup(_args())["id"]
    with pytest.raises(mod.BackupError, match=real):
        mod.read_manifest("20200101T000000Z")
    with pytest.raises(mod.BackupError, match="YYYYMMDDTHHMMSSZ"):
        mod.read_manifest("../../etc")


def test_damaged_backup_is_refused_before_anything_is_written(mod, monkeypatch):
    s3 = FakeS3({"artifacts/k": b"original"})
    monkeypatch.setattr(mod, "s3_client", lambda: s3)
    backup_id = mod.cmd_backup(_args())["id"]
    (Path(os.environ["BACKUP_DIR"]) / backup_id / "artifacts" / "artifacts" / "k").write_bytes(b"tampered")
    with pytest.raises(mod.BackupError, match="checksum"):
        mod.cmd_restore(_args(id=backup_id))
    assert s3.uploaded == {}


def test_restore_writes_every_object_back_under_its_key(mod, monkeypatch):
    s3 = FakeS3({"artifacts/1/r/a.txt": b"a", "artifacts/1/r/b/c.bin": b"c" * 1000})
    monkeypatch.setattr(mod, "s3_client", lambda: s3)
    backup_id = mod.cmd_backup(_args())["id"]
    mod.cmd_restore(_args(id=backup_id))
    assert s3.uploaded == s3.objects


def test_restore_of_a_part_the_backup_lacks_is_refused(mod, monkeypatch):
    monkeypatch.setattr(mod, "s3_client", lambda: FakeS3({"artifacts/k": b"x"}))
    backup_id = mod.cmd_backup(_args())["id"]
    with pytest.raises(mod.BackupError, match="database"):
        mod.cmd_restore(_args(id=backup_id, what=["database", "artifacts"]))


def test_keys_cannot_escape_the_backup_directory(mod):
    with pytest.raises(mod.BackupError, match="escape"):
        mod.safe_local_path("/var/backups/x/artifacts", "artifacts/../../../../etc/passwd")


def test_adopting_refuses_a_missing_file_or_one_that_is_not_a_custom_format_dump(mod, tmp_path):
    with pytest.raises(mod.BackupError, match="does not exist on this host"):
        mod.inspect_dump(str(tmp_path / "missing.dump"))
    plain = tmp_path / "mlflow.sql"
    plain.write_text("--\n-- PostgreSQL database dump\n--\n")
    with pytest.raises(mod.BackupError, match="pg_dump --format=custom"):
        mod.inspect_dump(str(plain))


def test_adopting_refuses_a_dump_of_another_database(mod, tmp_path, monkeypatch):
    dump = tmp_path / "other.dump"
    dump.write_bytes(b"PGDMP\x01\x0e\x00")
    listing = ";\n215; 1259 16390 TABLE public customers app\n216; 1259 16391 TABLE public orders app\n"
    monkeypatch.setattr(mod, "run_pg", lambda argv: listing)
    with pytest.raises(mod.BackupError, match="not of an MLflow database .*alembic_version, experiments, runs"):
        mod.inspect_dump(str(dump))
    listing += "217; 1259 1 TABLE public alembic_version app\n218; 1259 2 TABLE public experiments app\n" \
               "219; 1259 3 TABLE public runs -\n"
    assert mod.inspect_dump(str(dump))["tables"] == 5
