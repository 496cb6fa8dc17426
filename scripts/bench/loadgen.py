#!/usr/bin/env python3
"""The load generator of `make bench`. It runs on the MLflow test host (with the MLflow
virtualenv's Python, for `requests` and `boto3`) and measures, side by side and interleaved so
that noise hits every target alike:

- MLflow as deployed, straight to its port;
- the same MLflow through nginx (TLS and basic auth, as clients use it);
- the guides' plain `mlflow server` with default options, on the same database and bucket.

Each cell is one operation at one number of concurrent clients; the targets take turns in it, a
few seconds each, for several rounds. A client is a thread with its own keep-alive session (kept
from round to round) that sends the operation in a loop; every request is timed and its outcome
classified. Output: a table on stdout and everything in a JSON file.

Traffic goes only to the URLs given (loopback of the test host). Time is bounded: a round of a target lasts
--duration seconds and every request times out after --timeout seconds.
"""

import argparse
import json
import os
import statistics
import threading
import time
import uuid

import requests

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
OPERATIONS = ["log-batch", "runs-create", "runs-search", "runs-get", "experiments-search", "mixed"]


class Target:
    def __init__(self, name, url, auth=None, verify=True):
        self.name, self.url, self.auth, self.verify = name, url.rstrip("/"), auth, verify

    def session(self):
        session = requests.Session()
        session.auth = self.auth
        session.verify = self.verify
        # One connection per client, kept alive, like an MLflow client in a training loop.
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session


class Fixture:
    """What the operations need: one experiment, a run per client, enough runs to search."""

    def __init__(self, target, clients, timeout):
        session = target.session()
        self.timeout = timeout
        name = f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.experiment_id = self._post(session, target, "/experiments/create", {"name": name})["experiment_id"]
        self.runs = [self.create_run(session, target) for _ in range(max(clients, 60))]

    def _post(self, session, target, path, body):
        response = session.post(target.url + API + path, json=body, timeout=self.timeout)
        response.raise_for_status()
        return response.json()

    def create_run(self, session, target):
        body = {"experiment_id": self.experiment_id, "start_time": int(time.time() * 1000)}
        return self._post(session, target, "/runs/create", body)["run"]["info"]["run_id"]


def _metrics(step, count=10):
    now = int(time.time() * 1000)
    return [{"key": f"m{i}", "value": step * 0.001 + i, "timestamp": now, "step": step} for i in range(count)]


class Client:
    """One concurrent client: its session, its own run, and the requests of each operation."""

    def __init__(self, target, fixture, index, timeout):
        self.target, self.fixture, self.timeout = target, fixture, timeout
        self.session = target.session()
        self.run_id = fixture.runs[index % len(fixture.runs)]
        self.step = 0
        self.pending = None  # the requests of a training run that a round's deadline paused

    def request(self, method, path, body=None, params=None):
        response = self.session.request(method, self.target.url + API + path, json=body, params=params,
                                        timeout=self.timeout)
        response.content  # noqa: B018 -- read the whole body, as a client does
        return response

    def log_batch(self, run_id=None):
        self.step += 1
        return self.request("POST", "/runs/log-batch", {"run_id": run_id or self.run_id, "metrics": _metrics(self.step)})

    def runs_create(self):
        return self.request("POST", "/runs/create",
                            {"experiment_id": self.fixture.experiment_id, "start_time": int(time.time() * 1000)})

    def runs_search(self):
        return self.request("POST", "/runs/search", {"experiment_ids": [self.fixture.experiment_id], "max_results": 50})

    def runs_get(self):
        return self.request("GET", "/runs/get", params={"run_id": self.run_id})

    def experiments_search(self):
        return self.request("POST", "/experiments/search", {"max_results": 50})

    def mixed(self):
        """One training run as the MLflow client logs it: create, params and tags, ten steps of
        metrics, a read back, finish. Yields each request's response."""
        response = self.runs_create()
        yield response
        if response.status_code != 200:
            return
        run_id = response.json()["run"]["info"]["run_id"]
        params = [{"key": f"p{i}", "value": str(i)} for i in range(5)]
        tags = [{"key": "mlflow.source.name", "value": "bench"}, {"key": "team", "value": "bench"}]
        yield self.request("POST", "/runs/log-batch", {"run_id": run_id, "params": params, "tags": tags})
        for _ in range(10):
            yield self.log_batch(run_id)
        yield self.request("GET", "/runs/get", params={"run_id": run_id})
        yield self.request("POST", "/runs/update", {"run_id": run_id, "status": "FINISHED",
                                                   "end_time": int(time.time() * 1000)})

    def calls(self, operation):
        if operation == "mixed":
            return self.mixed()
        method = getattr(self, operation.replace("-", "_"))
        return (method() for _ in range(1))


def _classify(exc_or_response):
    if isinstance(exc_or_response, requests.Timeout):
        return "timeout"
    if isinstance(exc_or_response, requests.ConnectionError):
        return "connection"
    if isinstance(exc_or_response, Exception):
        return type(exc_or_response).__name__
    status = exc_or_response.status_code
    if status == 200:
        return None
    if status == 429:
        return "http_429"
    return "http_5xx" if status >= 500 else f"http_{status}"


def run_cell(target, fixture, operation, clients, duration, timeout, workers=None):
    """One slice of a cell: `clients` threads send the operation for `duration` seconds. Given
    `workers` (Clients of an earlier slice), their sessions and connections are used again."""
    latencies, errors, samples, lock = [], {}, {}, threading.Lock()
    start_gate = threading.Barrier(clients + 1)
    own = workers is None
    if own:
        workers = [Client(target, fixture, i, timeout) for i in range(clients)]
    deadline = [0.0]

    def work(client):
        mine, my_errors = [], {}
        start_gate.wait()
        while time.monotonic() < deadline[0]:
            # A training run pauses at the deadline and goes on in the client's next round, so a
            # round overruns by one request at most and every round sends the same mix.
            calls = client.pending or client.calls(operation)
            client.pending = calls
            while time.monotonic() < deadline[0]:
                t0 = time.monotonic()
                try:
                    outcome = next(calls)
                except StopIteration:
                    client.pending = None
                    break
                except Exception as exc:  # noqa: BLE001 -- every failure is counted by its kind
                    outcome = exc
                kind = _classify(outcome)
                if kind is None:
                    mine.append(time.monotonic() - t0)
                else:
                    my_errors[kind] = my_errors.get(kind, 0) + 1
                    samples.setdefault(kind, str(getattr(outcome, "text", outcome))[:300])
                    if isinstance(outcome, Exception):
                        client.pending = None
                        break
        with lock:
            latencies.extend(mine)
            for kind, count in my_errors.items():
                errors[kind] = errors.get(kind, 0) + count

    threads = [threading.Thread(target=work, args=(c,), daemon=True) for c in workers]
    for thread in threads:
        thread.start()
    t0 = time.monotonic()
    deadline[0] = t0 + duration
    start_gate.wait()
    for thread in threads:
        thread.join(duration + 2 * timeout + 5)
    wall = time.monotonic() - t0
    if own:
        for client in workers:
            client.session.close()
    return _summary(target.name, operation, clients, wall, latencies, errors, samples)


def _summary(target, operation, clients, wall, latencies, errors, samples):
    latencies = sorted(latencies)

    def pct(p):
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 1) if latencies else None

    return {"target": target, "operation": operation, "clients": clients, "seconds": round(wall, 2),
            "ok": len(latencies), "req_s": round(len(latencies) / wall, 1), "p50_ms": pct(0.50),
            "p95_ms": pct(0.95), "p99_ms": pct(0.99), "errors": errors, "error_samples": samples,
            "_latencies": latencies}


def _pool(parts):
    """One cell from its rounds: requests and time added up, latencies pooled, errors summed."""
    errors, samples = {}, {}
    for part in parts:
        for kind, count in part["errors"].items():
            errors[kind] = errors.get(kind, 0) + count
        samples.update(part["error_samples"])
    cell = _summary(parts[0]["target"], parts[0]["operation"], parts[0]["clients"], sum(p["seconds"] for p in parts),
                    [x for p in parts for x in p["_latencies"]], errors, samples)
    cell["rounds_req_s"] = [p["req_s"] for p in parts]
    return cell


# --- artifacts ------------------------------------------------------------------------------

def _blob(path, megabytes):
    if not os.path.exists(path) or os.path.getsize(path) != megabytes * 2**20:
        with open(path, "wb") as f:
            for _ in range(megabytes):
                f.write(os.urandom(2**20))
    return path


def transfer_proxy(target, path, key, timeout):
    session = target.session()
    url = f"{target.url}{ARTIFACTS}/{key}"
    t0 = time.monotonic()
    with open(path, "rb") as f:
        response = session.put(url, data=f, timeout=timeout)
    response.raise_for_status()
    up = time.monotonic() - t0
    t0 = time.monotonic()
    with session.get(url, stream=True, timeout=timeout) as response:
        response.raise_for_status()
        size = sum(len(chunk) for chunk in response.iter_content(2**20))
    down = time.monotonic() - t0
    assert size == os.path.getsize(path), f"{target.name}: downloaded {size} bytes"
    return up, down


class _Sink:
    """A write-only file that counts what it is given."""

    def __init__(self):
        self.size = 0

    def write(self, data):
        self.size += len(data)
        return len(data)


def transfer_boto3(env, bucket, path, key):
    import boto3

    s3 = boto3.client("s3", endpoint_url=env["MLFLOW_S3_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env.get("AWS_DEFAULT_REGION"),
                      verify=env.get("AWS_CA_BUNDLE") or True)
    t0 = time.monotonic()
    s3.upload_file(path, bucket, key)
    up = time.monotonic() - t0
    t0 = time.monotonic()
    # Bytes are counted and dropped, as the proxied download does: no disk in the measurement.
    sink = _Sink()
    s3.download_fileobj(bucket, key, sink)
    down = time.monotonic() - t0
    assert sink.size == os.path.getsize(path), f"boto3: downloaded {sink.size} bytes"
    s3.delete_object(Bucket=bucket, Key=key)
    return up, down


def bench_artifacts(targets, env, bucket, megabytes, reps, timeout):
    path = _blob("/var/tmp/mlflow-bench.bin", megabytes)
    rows = []
    for rep in range(reps):
        for target in targets[rep % len(targets):] + targets[:rep % len(targets)]:
            key = f"bench/{uuid.uuid4().hex}/blob.bin"
            if target.name == "boto3 → MinIO":
                up, down = transfer_boto3(env, bucket, path, key)
            else:
                up, down = transfer_proxy(target, path, key, timeout)
            rows.append({"target": target.name, "rep": rep, "upload_mb_s": round(megabytes / up, 1),
                         "download_mb_s": round(megabytes / down, 1)})
    summary = {}
    for name in dict.fromkeys(r["target"] for r in rows):
        mine = [r for r in rows if r["target"] == name]
        summary[name] = {"upload_mb_s": statistics.median(r["upload_mb_s"] for r in mine),
                         "download_mb_s": statistics.median(r["download_mb_s"] for r in mine)}
    return {"megabytes": megabytes, "reps": reps, "runs": rows, "median": summary}


# --- memory ---------------------------------------------------------------------------------

def _parent(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def server_memory(port):
    """Resident memory of the whole server: the `mlflow server` process started with this port
    and every descendant (uvicorn, its workers, the job runner). RSS from /proc/<pid>/status,
    which root may read without ptrace rights; PSS (shared pages split between processes) where
    smaps_rollup is readable."""
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    roots = [p for p in pids if " server " in _cmdline(p) and "mlflow" in _cmdline(p)
             and f"--port {port} " in _cmdline(p) + " "]
    if not roots:
        return None
    children = {}
    for pid in pids:
        try:
            children.setdefault(_parent(pid), []).append(pid)
        except (OSError, ValueError, IndexError):
            continue
    tree, todo = [], [min(roots)]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    rss = pss = 0
    for pid in tree:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pss = None if pss == 0 else pss
            continue
    return {"processes": len(tree), "rss_mib": round(rss / 1024), "pss_mib": round(pss / 1024) if pss else "n/a"}


# --- report ---------------------------------------------------------------------------------

def _errors(cell):
    return ", ".join(f"{n} {k}" for k, n in sorted(cell["errors"].items())) or "0"


def render(result):
    lines = []
    targets = result["targets"]
    lines.append("| operation | clients | " + " | ".join(f"{t}: req/s, p50/p95/p99 ms, errors" for t in targets) + " |")
    lines.append("|---|---|" + "---|" * len(targets))
    cells = {(c["operation"], c["clients"], c["target"]): c for c in result["cells"]}
    for operation in result["operations"]:
        for clients in result["clients"]:
            row = [operation, str(clients)]
            for target in targets:
                c = cells.get((operation, clients, target))
                row.append("—" if c is None else f"{c['req_s']} ({c['p50_ms']}/{c['p95_ms']}/{c['p99_ms']}) {_errors(c)}")
            lines.append("| " + " | ".join(row) + " |")
    art = result.get("artifacts")
    if art:
        lines.append("")
        lines.append(f"| {art['megabytes']} MB artifact (median of {art['reps']}) | upload MB/s | download MB/s |")
        lines.append("|---|---|---|")
        for name, values in art["median"].items():
            lines.append(f"| {name} | {values['upload_mb_s']} | {values['download_mb_s']} |")
    lines.append("")
    lines.append("| server | processes | RSS MiB | PSS MiB |")
    lines.append("|---|---|---|---|")
    for name, mem in result["memory"].items():
        lines.append(f"| {name} | " + (" | ".join(str(mem[k]) for k in ("processes", "rss_mib", "pss_mib"))
                                       if mem else "not running | | ") + " |")
    ratios = result.get("ratios")
    if ratios:
        lines.append("")
        lines.extend(f"- {line}" for line in ratios)
    return "\n".join(lines)


def ratios(result):
    """The ratios the performance targets are stated in (reported, never asserted)."""
    cells = {(c["operation"], c["clients"], c["target"]): c for c in result["cells"]}
    direct, nginx, plain = result["targets"][:3]
    out = []
    for clients in result["clients"]:
        d, p = cells.get(("mixed", clients, direct)), cells.get(("mixed", clients, plain))
        if d and p and p["req_s"]:
            out.append(f"mixed @{clients}: deployed/plain = {d['req_s'] / p['req_s']:.2f}x req/s, "
                       f"p95 {d['p95_ms']} vs {p['p95_ms']} ms")
    for label, counts in (("8 and 32 clients", [c for c in result["clients"] if c <= 32]),
                          ("every cell", result["clients"])):
        worst = None
        for operation in result["operations"]:
            for clients in counts:
                d, n = cells.get((operation, clients, direct)), cells.get((operation, clients, nginx))
                if d and n and d["req_s"]:
                    r = n["req_s"] / d["req_s"]
                    if worst is None or r < worst[0]:
                        worst = (r, operation, clients)
        if worst:
            out.append(f"through nginx / direct, worst of {label}: {worst[0]:.2f}x ({worst[1]} @{worst[2]})")
    art = result.get("artifacts")
    if art and "boto3 → MinIO" in art["median"] and nginx in art["median"]:
        b, n = art["median"]["boto3 → MinIO"], art["median"][nginx]
        out.append(f"artifacts through nginx / boto3: upload {n['upload_mb_s'] / b['upload_mb_s']:.2f}x, "
                   f"download {n['download_mb_s'] / b['download_mb_s']:.2f}x")
    errors = sum(sum(c["errors"].values()) for c in result["cells"] if c["target"] in (direct, nginx))
    out.append(f"errors of the deployed stack (direct and through nginx): {errors}")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--direct", required=True, help="URL of MLflow as deployed (its own port)")
    parser.add_argument("--nginx", required=True, help="URL of the front door")
    parser.add_argument("--plain", required=True, help="URL of the plain `mlflow server`")
    parser.add_argument("--ca", help="CA certificate of the front door")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--server-env", help="the server's environment file (S3 endpoint and key for boto3)")
    parser.add_argument("--bucket", default="mlflow")
    parser.add_argument("--operations", default=",".join(OPERATIONS))
    parser.add_argument("--clients", default="8,32,64")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds of one round of one target in a cell")
    parser.add_argument("--rounds", type=int, default=4,
                        help="turns of every target in a cell; a cell's numbers pool its rounds, so a passing hiccup "
                             "(a timer on the host, autovacuum) weighs on one round of one target only")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--artifact-mb", type=int, default=100)
    parser.add_argument("--artifact-reps", type=int, default=3)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()

    password = open(args.password_file).read().split()[0]
    direct = Target("deployed direct", args.direct)
    nginx = Target("through nginx", args.nginx, auth=(args.user, password), verify=args.ca or True)
    plain = Target("plain mlflow server", args.plain)
    targets = [direct, nginx, plain]
    operations = [o for o in args.operations.split(",") if o]
    clients = [int(c) for c in args.clients.split(",") if c]
    unknown = set(operations) - set(OPERATIONS)
    if unknown:
        parser.error(f"unknown operations {sorted(unknown)}; choose from {OPERATIONS}")

    started = time.time()
    fixture = Fixture(direct, max(clients), args.timeout)
    for target in targets:  # warm every target (connections, caches, lazy imports) before measuring
        run_cell(target, fixture, "mixed", 4, min(1.0, args.duration / 2), args.timeout)
    # A cell's rounds run back to back, the targets taking turns in a rotating order, each with its
    # own clients whose connections stay open from round to round: the targets share the machine's
    # moment-to-moment noise, and connection setup weighs on none of them more than once.
    rounds, index = {}, 0
    for operation in operations:
        for count in clients:
            pools = {target.name: [Client(target, fixture, i, args.timeout) for i in range(count)] for target in targets}
            for round_ in range(args.rounds):
                order = targets[index % 3:] + targets[:index % 3]
                index += 1
                for target in order:
                    cell = run_cell(target, fixture, operation, count, args.duration, args.timeout, pools[target.name])
                    print(f"  [{round_ + 1}/{args.rounds}] {operation:<18} {count:>3} clients  {target.name:<20} "
                          f"{cell['req_s']:>7} req/s  p95 {cell['p95_ms']} ms  errors {_errors(cell)}", flush=True)
                    rounds.setdefault((operation, count, target.name), []).append(cell)
            for workers in pools.values():
                for client in workers:
                    client.session.close()
    cells = [_pool(parts) for parts in rounds.values()]

    artifacts = None
    if args.artifact_mb > 0:
        env = {}
        if args.server_env:
            for line in open(args.server_env):
                if "=" in line and not line.startswith("#"):
                    key, value = line.rstrip("\n").split("=", 1)
                    env[key] = value.strip('"')
        art_targets = [nginx, direct, plain] + ([Target("boto3 → MinIO", "")] if env else [])
        artifacts = bench_artifacts(art_targets, env, args.bucket, args.artifact_mb, args.artifact_reps, 600)

    memory = {}
    for target in (direct, plain):
        port = int(target.url.rsplit(":", 1)[1].split("/")[0])
        memory[target.name] = server_memory(port)
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": os.uname().nodename, "cpus": os.cpu_count(),
              "seconds": round(time.time() - started), "duration_per_cell": args.duration, "rounds": args.rounds,
              "targets": [t.name for t in targets], "operations": operations, "clients": clients,
              "cells": cells, "artifacts": artifacts, "memory": memory}
    for cell in cells:
        del cell["_latencies"]
    result["ratios"] = ratios(result)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print()
    print(render(result))


if __name__ == "__main__":
    main()
