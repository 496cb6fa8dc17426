"""The policy minio_user_policy gives a key allows its own buckets and nothing else, and the
comparison that keeps the module idempotent ignores the order MinIO returns things in."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.mlops.mlflow_stack.plugins.module_utils.minio_admin import (  # noqa: E402
    bucket_policy,
    normalize_policy,
)


def resources(policy):
    return sorted(r for stmt in policy["Statement"] for r in stmt["Resource"])


def actions(policy):
    return sorted(a for stmt in policy["Statement"] for a in stmt["Action"])


def test_policy_names_only_the_given_buckets():
    policy = bucket_policy(["mlflow"])
    assert resources(policy) == ["arn:aws:s3:::mlflow", "arn:aws:s3:::mlflow/*"]
    assert all(stmt["Effect"] == "Allow" for stmt in policy["Statement"])
    assert not any("*" == r or r.endswith(":::*") for r in resources(policy))


def test_policy_grants_no_admin_or_bucket_management():
    acts = actions(bucket_policy(["mlflow"]))
    assert "s3:PutObject" in acts and "s3:DeleteObject" in acts
    assert not [a for a in acts if a.startswith("admin:") or a in ("s3:*", "s3:CreateBucket", "s3:DeleteBucket",
                                                                     "s3:PutBucketPolicy")]


def test_read_only_policy_cannot_write():
    acts = actions(bucket_policy(["mlflow"], write=False))
    assert "s3:GetObject" in acts
    assert "s3:PutObject" not in acts and "s3:DeleteObject" not in acts


def test_normalized_comparison_ignores_order_and_single_item_strings():
    ours = bucket_policy(["b", "a"])
    theirs = {"Version": "2012-10-17", "Statement": [
        dict(stmt, Action=list(reversed(stmt["Action"])),
             Resource=stmt["Resource"][0] if len(stmt["Resource"]) == 1 else list(reversed(stmt["Resource"])))
        for stmt in reversed(ours["Statement"])]}
    assert normalize_policy(theirs) == normalize_policy(ours)
    assert normalize_policy(bucket_policy(["a"])) != normalize_policy(ours)
