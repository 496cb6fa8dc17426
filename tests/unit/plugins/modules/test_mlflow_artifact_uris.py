"""The URI mapping of mlflow_artifact_uris: which old URIs move, where their objects go, what stays,
and that nothing is overwritten or deleted (fake S3 client, no network)."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.mlops.mlflow_stack.plugins.module_utils import artifact_uris as au  # noqa: E402
from ansible_collections.mlops.mlflow_stack.plugins.module_utils.artifact_uris import AdoptError  # noqa: E402


@pytest.mark.parametrize("uri, expected", [
    ("s3://old/1/abc/artifacts", {"new": "mlflow-artifacts:/1/abc/artifacts", "src_bucket": "old",
                                  "src_key": "1/abc/artifacts", "dest_key": "artifacts/1/abc/artifacts", "copy": True}),
    # already in the stack's bucket and prefix: no copy, the prefix is dropped from the proxied path
    ("s3://mlflow/artifacts/3/def/artifacts", {"new": "mlflow-artifacts:/3/def/artifacts", "src_bucket": "mlflow",
                                               "src_key": "artifacts/3/def/artifacts",
                                               "dest_key": "artifacts/3/def/artifacts", "copy": False}),
    # the stack's bucket but outside its prefix ("artifacts-old" is not under "artifacts")
    ("s3://mlflow/artifacts-old/7", {"new": "mlflow-artifacts:/artifacts-old/7", "src_bucket": "mlflow",
                                     "src_key": "artifacts-old/7", "dest_key": "artifacts/artifacts-old/7",
                                     "copy": True}),
    ("s3://old/0/", {"new": "mlflow-artifacts:/0", "src_bucket": "old", "src_key": "0", "dest_key": "artifacts/0",
                     "copy": True}),
    ("mlflow-artifacts:/1/abc/artifacts", None),
    ("runs:/abc/model", None),
    ("file:///srv/mlruns/1", None),
    ("/srv/mlruns/1", None),
    ("s3a://old/1", None),
])
def test_map_uri(uri, expected):
    assert au.map_uri(uri, "mlflow", "artifacts") == expected


def test_destination_without_prefix_keeps_the_key():
    assert au.map_uri("s3://old/1/r/artifacts", "mlflow", "")["dest_key"] == "1/r/artifacts"
    assert au.map_uri("s3://mlflow/1/r/artifacts", "mlflow", "") == {
        "new": "mlflow-artifacts:/1/r/artifacts", "src_bucket": "mlflow", "src_key": "1/r/artifacts",
        "dest_key": "1/r/artifacts", "copy": False}


def test_the_destination_root_itself_maps_to_the_proxied_root():
    assert au.map_uri("s3://mlflow/artifacts", "mlflow", "artifacts")["new"] == "mlflow-artifacts:/"


@pytest.mark.parametrize("bad", ["mlflow-artifacts:/", "https://minio/bucket", "", "s3://"])
def test_a_destination_that_is_not_s3_is_refused(bad):
    with pytest.raises(AdoptError) as err:
        au.parse_destination(bad)
    assert err.value.error_class == "destination" and "s3://<bucket>/<prefix>" in err.value.msg


def test_plan_counts_rows_folds_nested_prefixes_and_leaves_other_schemes():
    values = [
        ("experiments", "artifact_location", "s3://old/1", 1),
        ("experiments", "artifact_location", "s3://old/10", 1),
        ("experiments", "artifact_location", "mlflow-artifacts:/2", 1),
        ("runs", "artifact_uri", "s3://old/1/a/artifacts", 1),
        ("runs", "artifact_uri", "s3://old/10/b/artifacts", 1),
        ("runs", "artifact_uri", "file:///srv/mlruns/0/c/artifacts", 2),
        ("model_versions", "source", "s3://old/1/a/artifacts/model", 2),
        ("model_versions", "source", "runs:/a/model", 1),
        ("model_versions", "storage_location", None, 3),
    ]
    plan = au.plan(values, "mlflow", "artifacts", source_buckets=["old"])
    assert au.summary_counts(plan["rewrites"]) == {
        "experiments.artifact_location": 2, "runs.artifact_uri": 2, "model_versions.source": 2}
    # runs live under their experiment: copying 1/ and 10/ covers them ("1" must not swallow "10")
    assert plan["copies"] == [("old", "1", "artifacts/1"), ("old", "10", "artifacts/10")]
    assert plan["untouched"] == {"file": 2, "runs": 1}
    assert plan["buckets"] == ["old"]


def test_a_bucket_outside_the_old_store_stops_the_plan_naming_it():
    with pytest.raises(AdoptError) as err:
        au.plan([("runs", "artifact_uri", "s3://typo-bucket/1/a/artifacts", 1)], "mlflow", "artifacts", ["old"])
    assert err.value.error_class == "unexpected_bucket" and "typo-bucket" in err.value.msg


def test_the_stack_bucket_is_never_an_unexpected_bucket():
    plan = au.plan([("runs", "artifact_uri", "s3://mlflow/artifacts/1/a/artifacts", 1)], "mlflow", "artifacts", ["old"])
    assert plan["copies"] == [] and plan["rewrites"][0]["new"] == "mlflow-artifacts:/1/a/artifacts"


@pytest.mark.parametrize("src, dest, same", [
    ({"size": 3, "etag": '"abc"'}, {"size": 3, "etag": '"abc"'}, True),
    ({"size": 3, "etag": '"abc"'}, {"size": 3, "etag": '"abd"'}, False),
    ({"size": 3, "etag": '"abc"'}, {"size": 4, "etag": '"abc"'}, False),
    ({"size": 3, "etag": '"abc-2"'}, {"size": 3, "etag": '"def"'}, True),
    ({"size": 3, "etag": '"abc"'}, None, False),
])
def test_same_object(src, dest, same):
    assert au.same_object(src, dest) is same


def test_values_from_copy_text_reads_only_uri_columns_and_unescapes():
    text = "\n".join([
        "COPY public.experiments (experiment_id, name, artifact_location, lifecycle_stage) FROM stdin;",
        "0\tDefault\ts3://old/0\tactive",
        "1\ttab\\there\ts3://old/1\tactive",
        "\\.",
        "COPY public.model_versions (name, version, source, storage_location) FROM stdin;",
        "m\t1\ts3://old/1/a/artifacts/model\t\\N",
        "\\.",
        "COPY public.trace_tags (key, value, request_id) FROM stdin;",
        "mlflow.artifactLocation\ts3://old/1/traces/t1/artifacts\tt1",
        "other\ts3://not/a/location\tt1",
        "\\.",
        "COPY public.params (key, value, run_uuid) FROM stdin;",
        "path\ts3://old/data\tabc",
        "\\.",
    ])
    assert au.values_from_copy_text(text) == [
        ("experiments", "artifact_location", "s3://old/0", 1),
        ("experiments", "artifact_location", "s3://old/1", 1),
        ("model_versions", "source", "s3://old/1/a/artifacts/model", 1),
        ("model_versions", "storage_location", None, 1),
        ("trace_tags", "value", "s3://old/1/traces/t1/artifacts", 1),
    ]


class FakeS3:
    """list_objects_v2 pages, copy, get/upload and head over a dict of buckets."""

    def __init__(self, buckets):
        self.buckets = buckets
        self.writes = []

    def get_paginator(self, name):
        fake = self

        class Pages:
            def paginate(self, Bucket, Prefix):
                keys = sorted(k for k in fake.buckets.get(Bucket, {}) if k.startswith(Prefix))
                yield {"Contents": [{"Key": k, "Size": len(fake.buckets[Bucket][k]),
                                     "ETag": '"%x"' % hash(fake.buckets[Bucket][k])} for k in keys]}
        return Pages()

    def copy(self, source, bucket, key):
        self.writes.append((bucket, key))
        self.buckets.setdefault(bucket, {})[key] = self.buckets[source["Bucket"]][source["Key"]]

    def head_object(self, Bucket, Key):
        return {"ContentLength": len(self.buckets[Bucket][Key])}


def test_copy_copies_what_is_missing_skips_what_is_there_and_deletes_nothing():
    s3 = FakeS3({"old": {"1/a/artifacts/x.txt": b"x", "1/a/artifacts/y.txt": b"yy", "10/b/z": b"z"},
                 "mlflow": {"artifacts/1/a/artifacts/x.txt": b"x"}})
    copies = [("old", "1", "artifacts/1")]
    dry = au.copy_objects(s3, s3, "mlflow", copies, server_side=True, check_mode=True)
    assert dry == {"objects_copied": 1, "objects_present": 1, "bytes_copied": 2, "objects_total": 2}
    assert s3.writes == []
    done = au.copy_objects(s3, s3, "mlflow", copies, server_side=True, check_mode=False)
    assert done == dry and s3.writes == [("mlflow", "artifacts/1/a/artifacts/y.txt")]
    again = au.copy_objects(s3, s3, "mlflow", copies, server_side=True, check_mode=False)
    assert again["objects_copied"] == 0 and again["objects_present"] == 2
    assert len(s3.buckets["old"]) == 3, "the originals stay"


def test_a_different_object_at_the_destination_is_not_overwritten():
    s3 = FakeS3({"old": {"1/x": b"new"}, "mlflow": {"artifacts/1/x": b"other!"}})
    with pytest.raises(AdoptError) as err:
        au.copy_objects(s3, s3, "mlflow", [("old", "1", "artifacts/1")], server_side=True, check_mode=False)
    assert err.value.error_class == "conflict" and "s3://mlflow/artifacts/1/x" in err.value.msg
    assert s3.buckets["mlflow"]["artifacts/1/x"] == b"other!"


class RecordingCursor:
    rowcount = 2

    def __init__(self):
        self.statements = []

    def execute(self, sql, params=None):
        self.statements.append((sql, params))


def test_rewrites_are_one_update_per_column_joined_to_a_temporary_map():
    rewrites = [{"table": "runs", "column": "artifact_uri", "old": "s3://o/1/%d" % i, "new": "mlflow-artifacts:/1/%d" % i,
                 "rows": 1} for i in range(5)]
    rewrites.append({"table": "trace_tags", "column": "value", "old": "s3://o/t", "new": "mlflow-artifacts:/t", "rows": 1})
    cursor = RecordingCursor()
    assert au.apply_rewrites(cursor, rewrites, page_size=2) == 4
    updates = [(sql, params) for sql, params in cursor.statements if sql.startswith("UPDATE")]
    inserts = [params for sql, params in cursor.statements if sql.startswith("INSERT")]
    assert [params for _, params in updates] == [("runs", "artifact_uri"), ("trace_tags", "value")]
    assert "\"trace_tags\".key = 'mlflow.artifactLocation'" in updates[1][0]
    assert sum(len(p) for p in inserts) == 4 * len(rewrites)
    assert au.apply_rewrites(RecordingCursor(), []) == 0
