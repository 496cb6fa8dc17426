# -*- coding: utf-8 -*-
# Copyright: mlops.mlflow_stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Adopt the artifacts of an MLflow database written in direct-S3 mode (``s3://bucket/key``
URIs that only clients holding S3 keys can read) into the stack's proxied store
(``mlflow-artifacts:/key``, served by MLflow from ``--artifacts-destination s3://bucket/prefix``).

The mapping is pure (unit-tested); the database and S3 work take ready clients, so the module
stays thin. The key below the old bucket is kept: ``s3://old/1/<run>/artifacts`` becomes
``mlflow-artifacts:/1/<run>/artifacts``, the layout the stack itself gives experiment 1's runs."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

PROXIED_SCHEME = "mlflow-artifacts:"
ERROR_CLASSES = ("destination", "source_bucket", "unexpected_bucket", "conflict", "copy", "database", "dump")

# (table, column, extra WHERE): every place MLflow 2.x / 3.x stores an artifact location. Tables or
# columns the schema does not have (3.x tables in a 2.x database, or the reverse) are skipped.
URI_COLUMNS = (
    ("experiments", "artifact_location", None),
    ("runs", "artifact_uri", None),
    ("model_versions", "source", None),
    ("model_versions", "storage_location", None),
    ("logged_models", "artifact_location", None),
    ("trace_tags", "value", "key = 'mlflow.artifactLocation'"),
)

_S3_URI = re.compile(r"^s3://(?P<bucket>[^/]+)(?:/(?P<key>.*))?$")


class AdoptError(Exception):
    """A classified failure: ``error_class`` is one of ERROR_CLASSES, the message names the fix."""

    def __init__(self, error_class, msg):
        super(AdoptError, self).__init__(msg)
        self.error_class = error_class
        self.msg = msg


def parse_s3_uri(uri):
    """(bucket, key without surrounding slashes) of an ``s3://`` URI, or None for anything else."""
    match = _S3_URI.match(uri or "")
    if not match:
        return None
    return match.group("bucket"), (match.group("key") or "").strip("/")


def parse_destination(destination):
    """(bucket, prefix) of the stack's artifacts destination; raise AdoptError when it is not s3://bucket[/prefix]."""
    parsed = parse_s3_uri(destination)
    if parsed is None:
        raise AdoptError("destination", "artifacts_destination must look like s3://<bucket>/<prefix> (the server's "
                                        "--artifacts-destination), got %r." % (destination,))
    return parsed


def join_key(*parts):
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def proxied_uri(relative):
    return PROXIED_SCHEME + "/" + relative.strip("/")


def map_uri(uri, dest_bucket, dest_prefix):
    """What an artifact URI becomes, or None when it stays (not s3://, or already proxied).

    Returns a dict: ``new`` (the mlflow-artifacts:/ URI), ``src_bucket``/``src_key`` (where the
    objects are), ``dest_key`` (where the stack serves them from) and ``copy`` (False when the
    objects already live under the destination)."""
    parsed = parse_s3_uri(uri)
    if parsed is None:
        return None
    bucket, key = parsed
    if bucket == dest_bucket and (not dest_prefix or key == dest_prefix or key.startswith(dest_prefix + "/")):
        relative = key[len(dest_prefix):].strip("/") if dest_prefix else key
        return {"new": proxied_uri(relative), "src_bucket": bucket, "src_key": key, "dest_key": key, "copy": False}
    return {"new": proxied_uri(key), "src_bucket": bucket, "src_key": key,
            "dest_key": join_key(dest_prefix, key), "copy": True}


def plan(values, dest_bucket, dest_prefix, source_buckets=None):
    """Map every distinct (table, column, old value).

    ``values`` is an iterable of (table, column, value, rows). Returns a dict with ``rewrites``
    (list of dicts: table, column, old, new, rows), ``copies`` (distinct (src_bucket, src_key,
    dest_key) prefixes to copy, nested ones folded into their parent), ``untouched`` (count of
    rows by scheme left as they are) and ``buckets`` (source buckets seen). Raises AdoptError
    when ``source_buckets`` is given and a URI points at a bucket outside it."""
    rewrites, prefixes, untouched, buckets = [], set(), {}, set()
    for table, column, value, rows in values:
        if value is None or value == "":
            continue
        mapped = map_uri(value, dest_bucket, dest_prefix)
        if mapped is None:
            scheme = value.split(":", 1)[0] if ":" in value else "path"
            if not value.startswith(PROXIED_SCHEME):
                untouched[scheme] = untouched.get(scheme, 0) + rows
            continue
        buckets.add(mapped["src_bucket"])
        rewrites.append({"table": table, "column": column, "old": value, "new": mapped["new"], "rows": rows})
        if mapped["copy"]:
            prefixes.add((mapped["src_bucket"], mapped["src_key"], mapped["dest_key"]))
    if source_buckets is not None:
        outside = sorted(buckets - set(source_buckets) - set([dest_bucket]))
        if outside:
            raise AdoptError("unexpected_bucket",
                             "The database's artifact URIs point at bucket(s) %s, which are not among the old store's "
                             "buckets %s. Add them to the old store's bucket list (adopt_source_buckets) with "
                             "settings that can read them, or fix the bucket name." % (outside, sorted(source_buckets)))
    return {"rewrites": sorted(rewrites, key=lambda r: (r["table"], r["column"], r["old"])),
            "copies": fold_prefixes(prefixes), "untouched": untouched, "buckets": sorted(buckets)}


def fold_prefixes(prefixes):
    """Drop a prefix already covered by a shorter one of the same bucket (a run under its experiment)."""
    kept = []
    for bucket, key, dest in sorted(prefixes, key=lambda p: (p[0], len(p[1]), p[1])):
        if any(b == bucket and (not k or key == k or key.startswith(k + "/")) for b, k, _ in kept):
            continue
        kept.append((bucket, key, dest))
    return sorted(kept)


def same_object(src, dest):
    """Whether two HEAD/list results describe the same content: equal size, and equal ETag unless
    one of them is a multipart ETag (``md5-N``), which depends on the part size, not the content."""
    if dest is None or src["size"] != dest["size"]:
        return False
    src_etag, dest_etag = src["etag"].strip('"'), dest["etag"].strip('"')
    if "-" in src_etag or "-" in dest_etag:
        return True
    return src_etag == dest_etag


def summary_counts(rewrites):
    counts = {}
    for r in rewrites:
        name = "%s.%s" % (r["table"], r["column"])
        counts[name] = counts.get(name, 0) + r["rows"]
    return counts


# ---- database -------------------------------------------------------------------------------

def present_columns(cursor):
    """The URI_COLUMNS entries this database has (in its current schema)."""
    cursor.execute("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()")
    have = set(cursor.fetchall())
    return [entry for entry in URI_COLUMNS if (entry[0], entry[1]) in have]


def read_values(cursor, columns, lock=True):
    """(table, column, value, rows) for every distinct value; rows are locked until the transaction ends."""
    values = []
    for table, column, where in columns:
        condition = "WHERE %s" % where if where else ""
        if lock:
            # Nobody else may change these rows between the plan and the rewrite.
            cursor.execute('SELECT 1 FROM "%s" %s FOR UPDATE' % (table, condition))
        cursor.execute('SELECT "%s", count(*) FROM "%s" %s GROUP BY 1' % (column, table, condition))
        values.extend((table, column, value, rows) for value, rows in cursor.fetchall())
    return values


def apply_rewrites(cursor, rewrites, page_size=1000):
    """One UPDATE per table.column, joined to a temporary old -> new map (a hash join, not one scan per URI)."""
    if not rewrites:
        return 0
    where = dict((table, w) for table, _, w in URI_COLUMNS if w)
    cursor.execute("CREATE TEMPORARY TABLE adopt_uri_map (tbl text, col text, old text, new text) ON COMMIT DROP")
    for start in range(0, len(rewrites), page_size):
        page = rewrites[start:start + page_size]
        cursor.execute("INSERT INTO adopt_uri_map VALUES " + ", ".join(["(%s, %s, %s, %s)"] * len(page)),
                       [v for r in page for v in (r["table"], r["column"], r["old"], r["new"])])
    total = 0
    for table, column in sorted(set((r["table"], r["column"]) for r in rewrites)):
        extra = ' AND "%s".%s' % (table, where[table]) if table in where else ""
        cursor.execute('UPDATE "%s" SET "%s" = m.new FROM adopt_uri_map m WHERE m.tbl = %%s AND m.col = %%s '
                       'AND "%s"."%s" = m.old%s' % (table, column, table, column, extra), (table, column))
        total += cursor.rowcount
    return total


# ---- pg_dump custom-format archive (the dry run before a restore) --------------------------------

_COPY_HEADER = re.compile(r'^COPY (?:"?[\w]+"?\.)?"?(?P<table>\w+)"? \((?P<columns>[^)]*)\) FROM stdin;$')
_COPY_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def _unescape_copy(field):
    if field == "\\N":
        return None
    return re.sub(r"\\(.)", lambda m: _COPY_ESCAPES.get(m.group(1), m.group(1)), field)


def values_from_copy_text(text):
    """(table, column, value, rows) from the COPY blocks of ``pg_restore --data-only -f -`` output."""
    wanted = dict(((t, c), w) for t, c, w in URI_COLUMNS)
    counts, table, indexes = {}, None, []
    for line in text.splitlines():
        if table is None:
            match = _COPY_HEADER.match(line)
            if match:
                table = match.group("table")
                names = [c.strip().strip('"') for c in match.group("columns").split(",")]
                indexes = [(i, n) for i, n in enumerate(names) if (table, n) in wanted]
                key_index = names.index("key") if "key" in names else None
            continue
        if line == "\\.":
            table = None
            continue
        fields = line.split("\t")
        for index, column in indexes:
            if wanted[(table, column)] and (key_index is None or _unescape_copy(fields[key_index]) != "mlflow.artifactLocation"):
                continue
            value = _unescape_copy(fields[index])
            counts[(table, column, value)] = counts.get((table, column, value), 0) + 1
    return [(t, c, v, n) for (t, c, v), n in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or ""))]


# ---- objects ------------------------------------------------------------------------------------

def list_prefix(client, bucket, key):
    """{relative key: {size, etag}} of the object ``key`` itself and everything below ``key/``."""
    found = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=key):
        for obj in page.get("Contents") or []:
            name = obj["Key"]
            if key and not (name == key or name.startswith(key + "/")):
                continue  # "1" must not pick up "10/..."
            found[name[len(key):].lstrip("/")] = {"size": obj["Size"], "etag": obj.get("ETag", "")}
    return found


def copy_objects(src_client, dest_client, dest_bucket, copies, server_side, check_mode):
    """Copy what the destination lacks; never overwrite a different object, never delete. Returns counts."""
    stats = {"objects_copied": 0, "objects_present": 0, "bytes_copied": 0, "objects_total": 0}
    for src_bucket, src_key, dest_key in copies:
        source = list_prefix(src_client, src_bucket, src_key)
        existing = list_prefix(dest_client, dest_bucket, dest_key)
        for relative in sorted(source):
            stats["objects_total"] += 1
            src_obj, dest_obj = source[relative], existing.get(relative)
            from_key, to_key = join_key(src_key, relative), join_key(dest_key, relative)
            if same_object(src_obj, dest_obj):
                stats["objects_present"] += 1
                continue
            if dest_obj is not None:
                raise AdoptError("conflict",
                                 "s3://%s/%s already exists and differs from s3://%s/%s (size %s vs %s). Nothing was "
                                 "rewritten. Move the destination object aside or choose another artifacts prefix."
                                 % (dest_bucket, to_key, src_bucket, from_key, dest_obj["size"], src_obj["size"]))
            stats["objects_copied"] += 1
            stats["bytes_copied"] += src_obj["size"]
            if check_mode:
                continue
            if server_side:
                dest_client.copy({"Bucket": src_bucket, "Key": from_key}, dest_bucket, to_key)
            else:
                body = src_client.get_object(Bucket=src_bucket, Key=from_key)["Body"]
                dest_client.upload_fileobj(body, dest_bucket, to_key)
            head = dest_client.head_object(Bucket=dest_bucket, Key=to_key)
            if head["ContentLength"] != src_obj["size"]:
                raise AdoptError("copy", "The copy of s3://%s/%s has %d bytes instead of %d. Nothing was rewritten; "
                                         "run again." % (src_bucket, from_key, head["ContentLength"], src_obj["size"]))
    return stats
