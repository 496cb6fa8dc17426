"""mlflow_model_gate against a real MLflow tracking server that this test starts on loopback
(SQLite backend, one worker). Versions are registered with the real MLflow client from runs
that logged metrics; the gate then runs the way a pipeline runs it, through
`ansible-playbook mlops.mlflow_stack.model_gate -e @gate.yml`, and the alias moves only for the
better candidate. Check mode writes nothing. A small HTTPS + basic-auth proxy with a throwaway
CA stands in for the stack's nginx (the `default` Molecule scenario goes through the real one)."""

import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minio_server import ROOT, free_port, make_ca_and_server_cert  # noqa: E402

MODULE = ROOT / "plugins" / "modules" / "mlflow_model_gate.py"
MLFLOW = Path(sys.executable).parent / "mlflow"
pytestmark = pytest.mark.skipif(not MLFLOW.exists(), reason="no mlflow next to the test's Python (make venv)")

RULES = [{"metric": "rmse", "direction": "lower", "rel_tolerance": 0.02},
         {"metric": "r2", "direction": "higher", "abs_tolerance": 0.01},
         {"metric": "mae", "direction": "lower", "required": False}]
CI_USER = "ci"
CI_PASSWORD = "ci-" + uuid.uuid4().hex
CLIENT_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
              "MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_TRACKING_INSECURE_TLS")


class MlflowServer:
    """`mlflow server` from the venv: its own session, so stopping it stops uvicorn too."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.log = self.workdir / "mlflow.log"
        self.proc = None

    def start(self):
        env = dict((k, v) for k, v in os.environ.items() if k not in CLIENT_ENV)
        self.proc = subprocess.Popen(
            [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", "sqlite:///%s" % (self.workdir / "mlflow.db"),
             "--artifacts-destination", str(self.workdir / "artifacts")],
            env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_healthy(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mlflow server exited with %s:\n%s" % (self.proc.returncode, self.log.read_text()))
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("mlflow server not healthy within %ss:\n%s" % (timeout, self.log.read_text()[-3000:]))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class AuthTlsProxy:
    """HTTPS with a throwaway CA and basic auth for one user, forwarding to MLflow: the part of
    the stack's nginx the gate depends on. 401 without the right credentials, like nginx."""

    def __init__(self, upstream, workdir):
        self.ca_path = make_ca_and_server_cert(Path(workdir) / "certs")
        certs = Path(workdir) / "certs"
        expected = "Basic " + base64.b64encode(("%s:%s" % (CI_USER, CI_PASSWORD)).encode()).decode()
        self.requests = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self):
                proxy.requests.append((self.command, self.path, self.headers.get("Authorization") == expected))
                if self.headers.get("Authorization") != expected:
                    self._answer(401, b"<html>401 Authorization Required</html>", "text/html",
                                 {"WWW-Authenticate": 'Basic realm="MLflow"'})
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
                request = urllib.request.Request(upstream + self.path, data=body, method=self.command,
                                                 headers={"Content-Type": self.headers.get("Content-Type",
                                                                                           "application/json")})
                try:
                    with urllib.request.urlopen(request, timeout=30) as resp:
                        self._answer(resp.status, resp.read(), resp.headers.get("Content-Type"))
                except urllib.error.HTTPError as exc:
                    self._answer(exc.code, exc.read(), exc.headers.get("Content-Type"))

            def _answer(self, status, payload, content_type, headers=None):
                self.send_response(status)
                self.send_header("Content-Type", content_type or "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(certs / "public.crt"), str(certs / "private.key"))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        # The certificate names localhost only.
        self.url = "https://localhost:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    mlflow_server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    try:
        import mlflow  # noqa: F401  (imports while the server starts: both take seconds)

        mlflow_server.wait_healthy()
        yield mlflow_server
    finally:
        mlflow_server.stop()


@pytest.fixture(scope="module")
def client(server):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=server.url, registry_uri=server.url)


@pytest.fixture(scope="module")
def proxy(server, tmp_path_factory):
    front = AuthTlsProxy(server.url, tmp_path_factory.mktemp("proxy")).start()
    yield front
    front.stop()


@pytest.fixture
def model(client):
    name = "gate-it-" + uuid.uuid4().hex[:8]
    client.create_registered_model(name)
    return name


def register(client, model, **metrics):
    """A finished run that logged ``metrics``, registered as the next version of ``model``."""
    experiment = client.get_experiment_by_name("gate-it") or client.get_experiment(client.create_experiment("gate-it"))
    run = client.create_run(experiment.experiment_id)
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    version = client.create_model_version(model, "runs:/%s/model" % run.info.run_id, run_id=run.info.run_id)
    return version.version, run.info.run_id


def champion(client, model):
    try:
        return client.get_model_version_by_alias(model, "champion").version
    except Exception:  # MlflowException: the alias is not set
        return None


def gate_tags(client, model, version):
    tags = client.get_model_version(model, version).tags
    return dict((k, v) for k, v in tags.items() if k.startswith("mlflow_stack.gate."))


def clean_env(**extra):
    env = dict((k, v) for k, v in os.environ.items() if k not in CLIENT_ENV)
    env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"),
               PYTHONPATH=str(ROOT / ".collections"))
    env.update(extra)
    return env


def run_playbook(tmp_path, server_url, check=False, **gate_vars):
    """The pipeline's way: the connection in the environment, the gate in an -e file."""
    gate_file = tmp_path / ("gate-%s.yml" % uuid.uuid4().hex[:6])
    gate_file.write_text(yaml.safe_dump(gate_vars))
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "mlops.mlflow_stack.model_gate", "-e", "@%s" % gate_file]
    if check:
        cmd.append("--check")
    # JSON results: messages stay on one line, unquoted, for the assertions below.
    env = clean_env(MLFLOW_TRACKING_URI=server_url, ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    return subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)


def run_module(tmp_path, check_mode=False, env=None, **args):
    """The module file run as Ansible runs it (an args file), which is quicker than a playbook."""
    args.setdefault("rules", RULES)
    if check_mode:
        args["_ansible_check_mode"] = True
    args_file = tmp_path / ("args-%s.json" % uuid.uuid4().hex[:6])
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    proc = subprocess.run([sys.executable, str(MODULE), str(args_file)], env=clean_env(**(env or {})),
                          capture_output=True, text=True, timeout=120)
    assert CI_PASSWORD not in proc.stdout + proc.stderr, "the password leaked into the module output"
    return json.loads(proc.stdout)


def test_the_alias_moves_only_for_the_better_candidate(client, model, server, tmp_path):
    gate = dict(model_gate_name=model, model_gate_rules=RULES, model_gate_promote=True)
    first, _ = register(client, model, rmse=1.0, r2=0.50)

    out = run_playbook(tmp_path, server.url, model_gate_candidate_version=int(first), **gate)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "there is no baseline to compare against yet" in out.stdout
    assert champion(client, model) == first

    better, _ = register(client, model, rmse=0.9, r2=0.55, mae=0.7)
    out = run_playbook(tmp_path, server.url, model_gate_candidate_version=int(better), **gate)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Moved alias 'champion' from version %s to version %s" % (first, better) in out.stdout
    assert champion(client, model) == better
    assert gate_tags(client, model, better) == {"mlflow_stack.gate.verdict": "passed",
                                                "mlflow_stack.gate.baseline": first}

    worse, _ = register(client, model, rmse=0.95, r2=0.56)  # rmse 5.6 % worse, beyond the 2 % allowed
    out = run_playbook(tmp_path, server.url, model_gate_candidate_version=int(worse), **gate)
    assert out.returncode != 0, out.stdout
    assert '"error_class": "regressed"' in out.stdout
    error = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("[ERROR]")][0]
    assert "rmse 0.95 vs 0.9 (lower is better): worse by 0.05" in error
    assert "r2" not in error, "only the regressed metric is named"
    assert champion(client, model) == better, "a worse candidate moved the alias"
    assert gate_tags(client, model, worse) == {"mlflow_stack.gate.verdict": "regressed",
                                               "mlflow_stack.gate.baseline": better}

    # Re-running the pipeline for the promoted version changes nothing.
    result = run_module(tmp_path, tracking_uri=server.url, name=model, candidate_version=int(better), promote=True)
    assert not result.get("failed"), result
    assert result["changed"] is False and champion(client, model) == better


def test_check_mode_changes_nothing(client, model, server, tmp_path):
    first, _ = register(client, model, rmse=1.0, r2=0.5)
    client.set_registered_model_alias(model, "champion", first)
    better, _ = register(client, model, rmse=0.5, r2=0.9)

    out = run_playbook(tmp_path, server.url, check=True, model_gate_name=model, model_gate_rules=RULES,
                       model_gate_candidate_version=int(better), model_gate_promote=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Would move alias 'champion' from version %s to version %s" % (first, better) in out.stdout
    assert "changed=1" in out.stdout
    result = run_module(tmp_path, check_mode=True, tracking_uri=server.url, name=model, candidate_version=int(better),
                        promote=True)
    assert result["changed"] is True and result["promoted"] is True
    assert result["tags"] == {"mlflow_stack.gate.verdict": "passed", "mlflow_stack.gate.baseline": first}
    assert champion(client, model) == first
    assert gate_tags(client, model, better) == {}


def test_candidate_by_run_and_best_of_last(client, model, server, tmp_path):
    for rmse in (0.2, 0.8, 0.6, 0.7):   # version 1 is the best, but outside a window of 3
        register(client, model, rmse=rmse, r2=0.5)
    candidate, run_id = register(client, model, rmse=0.61, r2=0.5)
    rules = [{"metric": "rmse", "direction": "lower"}]
    result = run_module(tmp_path, tracking_uri=server.url, name=model, candidate_run_id=run_id, rules=rules,
                        baseline_best_of_last=3, baseline_metric="rmse")
    assert result["failed"] and result["error_class"] == "regressed", result
    assert result["candidate_version"] == candidate and result["baseline_version"] == "3"
    result = run_module(tmp_path, tracking_uri=server.url, name=model, candidate_run_id=run_id,
                        rules=[dict(rules[0], abs_tolerance=0.02)], baseline_best_of_last=3)
    assert not result.get("failed"), result
    assert result["metrics"][0]["worse_by"] == pytest.approx(0.01)


@pytest.mark.parametrize("case, error_class", [
    ("no_model", "no_such_model"),
    ("no_version", "no_such_version"),
    ("missing_metric", "metric_missing"),
    ("unreachable", "unreachable"),
])
def test_failures_are_classified(client, model, server, tmp_path, case, error_class):
    version, _ = register(client, model, rmse=1.0)
    args = dict(tracking_uri=server.url, name=model, candidate_version=int(version))
    if case == "no_model":
        args["name"] = model + "-missing"
    elif case == "no_version":
        args["candidate_version"] = 99
    elif case == "unreachable":
        args.update(tracking_uri="http://127.0.0.1:%d" % free_port(), timeout=5)
    result = run_module(tmp_path, **args)
    assert result["failed"] is True
    assert result["error_class"] == error_class, result["msg"]


def test_through_tls_and_basic_auth_with_the_client_env(client, model, proxy, tmp_path):
    first, _ = register(client, model, rmse=1.0, r2=0.5)
    client.set_registered_model_alias(model, "champion", first)
    better, _ = register(client, model, rmse=0.8, r2=0.6)
    env = {"MLFLOW_TRACKING_URI": proxy.url, "MLFLOW_TRACKING_USERNAME": CI_USER,
           "MLFLOW_TRACKING_PASSWORD": CI_PASSWORD, "MLFLOW_TRACKING_SERVER_CERT_PATH": str(proxy.ca_path)}

    result = run_module(tmp_path, env=env, name=model, candidate_version=int(better), promote=True)
    assert not result.get("failed"), result
    assert champion(client, model) == better
    assert proxy.requests and all(authorized for _, _, authorized in proxy.requests)

    without_ca = dict((k, v) for k, v in env.items() if k != "MLFLOW_TRACKING_SERVER_CERT_PATH")
    result = run_module(tmp_path, env=without_ca, name=model, candidate_version=int(better))
    assert result["error_class"] == "tls", result["msg"]
    wrong_password = dict(env, MLFLOW_TRACKING_PASSWORD="not-" + CI_PASSWORD)
    result = run_module(tmp_path, env=wrong_password, name=model, candidate_version=int(better))
    assert result["error_class"] == "auth" and "user 'ci'" in result["msg"], result["msg"]
    anonymous = dict((k, v) for k, v in env.items() if "USERNAME" not in k and "PASSWORD" not in k)
    result = run_module(tmp_path, env=anonymous, name=model, candidate_version=int(better))
    assert result["error_class"] == "auth" and "none were sent" in result["msg"], result["msg"]
