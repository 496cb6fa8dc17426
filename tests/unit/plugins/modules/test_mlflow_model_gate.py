"""mlflow_model_gate compares metric by metric in the right direction and within the stated
tolerance, picks the right baseline, moves the alias only for a candidate that passed (never in
check mode), sorts every failure into the class a pipeline branches on, and never prints the
password. The HTTP layer is a fake MLflow registry behind an open_url-shaped opener."""

import importlib
import io
import json
import math
import os
import re
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible.module_utils.testing import patch_module_args  # noqa: E402
from ansible.module_utils.urls import SSLValidationError  # noqa: E402

from ansible_collections.mlops.mlflow_stack.plugins.module_utils import mlflow_gate  # noqa: E402
from ansible_collections.mlops.mlflow_stack.plugins.modules import mlflow_model_gate  # noqa: E402

SECRET = "ci-pa55-never-printed-0123456789"
URL = "https://mlflow.example.test"
RMSE_LOWER = {"metric": "rmse", "direction": "lower"}
R2_HIGHER = {"metric": "r2", "direction": "higher"}


def http_error(url, status, body):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HTTPError(url, status, "status %d" % status, {}, io.BytesIO(raw))


def not_found(what):
    return {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "%s not found" % what}


class FakeMlflow:
    """An in-memory tracking server behind the open_url signature. ``fail`` maps an endpoint to an
    exception, or to a list of them consumed one per call; every call is kept in ``calls``."""

    def __init__(self):
        self.models = {}
        self.runs = {}
        self.fail = {}
        self.calls = []
        self.requests = []

    def add_version(self, name, metrics, run_id=None, status="READY"):
        model = self.models.setdefault(name, {"versions": {}, "aliases": {}})
        number = str(len(model["versions"]) + 1)
        run_id = run_id or "run%s%s" % (name, number)
        if metrics is not None:
            self.runs[run_id] = metrics
        model["versions"][number] = {"name": name, "version": number, "run_id": run_id if metrics is not None else "",
                                     "status": status, "tags": {}}
        return number

    def version(self, name, number):
        v = self.models[name]["versions"][number]
        return dict(v, tags=[{"key": k, "value": val} for k, val in sorted(v["tags"].items())])

    @property
    def writes(self):
        return [call for call in self.calls if call[0] == "POST"]

    def __call__(self, url, data=None, method=None, headers=None, **kwargs):
        self.requests.append(dict(kwargs, url=url))
        parts = urlsplit(url)
        endpoint = parts.path.split("/api/2.0/mlflow/", 1)[1]
        query = dict((k, v if k == "order_by" else v[0]) for k, v in parse_qs(parts.query).items())
        body = json.loads(data) if data else {}
        self.calls.append((method, endpoint, body or query))
        failure = self.fail.get(endpoint)
        if isinstance(failure, list):
            failure = failure.pop(0) if failure else None
        if failure is not None:
            raise failure
        answer = getattr(self, "_" + endpoint.replace("/", "_").replace("-", "_"))(url, query, body)
        return io.BytesIO(json.dumps(answer).encode())

    def _model(self, url, name):
        if name not in self.models:
            raise http_error(url, 404, not_found("Registered Model with name=%s" % name))
        return self.models[name]

    def _registered_models_get(self, url, query, body):
        model = self._model(url, query["name"])
        return {"registered_model": {"name": query["name"], "aliases": [
            {"alias": a, "version": v} for a, v in sorted(model["aliases"].items())]}}

    def _model_versions_get(self, url, query, body):
        model = self.models.get(query["name"], {"versions": {}})
        if query["version"] not in model["versions"]:
            raise http_error(url, 404, not_found("Model Version (name=%s, version=%s)" % (query["name"], query["version"])))
        return {"model_version": self.version(query["name"], query["version"])}

    def _model_versions_search(self, url, query, body):
        assert query["order_by"] == ["version_number DESC"]
        terms = dict((key, single or double) for key, single, double
                     in re.findall(r"(\w+)=(?:'([^']*)'|\"([^\"]*)\")", query["filter"]))
        model = self.models.get(terms["name"], {"versions": {}})
        found = [self.version(terms["name"], n) for n in sorted(model["versions"], key=int, reverse=True)
                 if "run_id" not in terms or model["versions"][n]["run_id"] == terms["run_id"]]
        start = int(query.get("page_token", 0))
        end = start + int(query["max_results"])
        page = {"model_versions": found[start:end]}
        if end < len(found):
            page["next_page_token"] = str(end)
        return page

    def _runs_get(self, url, query, body):
        if query["run_id"] not in self.runs:
            raise http_error(url, 404, not_found("Run with id=%s" % query["run_id"]))
        metrics = [{"key": k, "value": v if not (isinstance(v, float) and math.isnan(v)) else "NaN", "step": 0}
                   for k, v in self.runs[query["run_id"]].items()]
        return {"run": {"info": {"run_id": query["run_id"]}, "data": {"metrics": metrics}}}

    def _registered_models_alias(self, url, query, body):
        self._model(url, body["name"])["aliases"][body["alias"]] = body["version"]
        return {}

    def _model_versions_set_tag(self, url, query, body):
        self.models[body["name"]]["versions"][body["version"]]["tags"][body["key"]] = body["value"]
        return {}


def registry(fake, **kwargs):
    return mlflow_gate.Registry(mlflow_gate.MlflowRest(URL, fake, sleep=lambda s: None, **kwargs))


def gate(fake, check_mode=False, **params):
    full = dict(name="m", rules=[RMSE_LOWER], alias="champion", promote=False)
    full.update(params)
    return mlflow_gate.run_gate(registry(fake), full, check_mode=check_mode)


def failing_gate(fake, **params):
    with pytest.raises(mlflow_gate.GateError) as err:
        gate(fake, **params)
    return err.value


def rule(metric="m", direction="lower", abs_tolerance=0.0, rel_tolerance=0.0, required=True):
    return dict(metric=metric, direction=direction, abs_tolerance=abs_tolerance, rel_tolerance=rel_tolerance,
                required=required)


# --- The comparison ----------------------------------------------------------------------------------

@pytest.mark.parametrize("direction, candidate, baseline, verdict", [
    ("lower", 0.9, 1.0, "pass"),
    ("lower", 1.1, 1.0, "regressed"),
    ("higher", 1.1, 1.0, "pass"),
    ("higher", 0.9, 1.0, "regressed"),
    ("lower", 1.0, 1.0, "pass"),
    ("higher", 1.0, 1.0, "pass"),
])
def test_direction_decides_what_is_worse(direction, candidate, baseline, verdict):
    row = mlflow_gate.compare_metric(rule(direction=direction), candidate, baseline)
    assert row["verdict"] == verdict
    assert row["delta"] == pytest.approx(candidate - baseline)
    assert (row["worse_by"] > 0) == (verdict == "regressed")


@pytest.mark.parametrize("candidate, verdict", [
    (0.30, "pass"),        # worse by exactly the tolerance (0.30 - 0.29 is 0.010000000000000009 in floats)
    (0.3001, "regressed"),
    (0.25, "pass"),
])
def test_absolute_tolerance_is_inclusive_and_ignores_float_noise(candidate, verdict):
    assert mlflow_gate.compare_metric(rule(abs_tolerance=0.01), candidate, 0.29)["verdict"] == verdict


@pytest.mark.parametrize("direction, candidate, baseline, verdict", [
    ("higher", 0.98, 1.0, "pass"),      # 2 % of 1.0 = 0.02
    ("higher", 0.979, 1.0, "regressed"),
    ("lower", 102.0, 100.0, "pass"),
    ("lower", 102.5, 100.0, "regressed"),
    ("higher", -10.2, -10.0, "pass"),   # the tolerance scales with |baseline| for negative metrics too
    ("higher", -10.3, -10.0, "regressed"),
])
def test_relative_tolerance_scales_with_the_baseline(direction, candidate, baseline, verdict):
    row = mlflow_gate.compare_metric(rule(direction=direction, rel_tolerance=0.02), candidate, baseline)
    assert row["verdict"] == verdict
    assert row["tolerance"] == pytest.approx(0.02 * abs(baseline))


def test_the_larger_tolerance_wins():
    both = rule(abs_tolerance=0.5, rel_tolerance=0.01)
    assert mlflow_gate.compare_metric(both, 10.4, 10.0)["verdict"] == "pass"          # abs 0.5 > rel 0.1
    assert mlflow_gate.compare_metric(both, 10.6, 10.0)["verdict"] == "regressed"
    assert mlflow_gate.compare_metric(both, 1040.0, 1000.0)["tolerance"] == 10.0      # rel 10 > abs 0.5


def test_rel_delta_is_relative_to_the_baseline_and_absent_for_zero():
    assert mlflow_gate.compare_metric(rule(), 1.5, 2.0)["rel_delta"] == -0.25
    assert mlflow_gate.compare_metric(rule(), 0.1, 0.0)["rel_delta"] is None


def test_nan_candidate_regresses_and_nan_baseline_is_no_baseline():
    assert mlflow_gate.compare_metric(rule(), float("nan"), 1.0)["verdict"] == "regressed"
    assert mlflow_gate.compare_metric(rule(), 1.0, float("nan"))["verdict"] == "no_baseline"


def test_missing_metrics_required_and_optional():
    rules = [rule("a"), rule("b", required=False), rule("c")]
    rows, verdict = mlflow_gate.compare(rules, {"c": 1.0}, {"a": 1.0, "b": 1.0, "c": 1.0})
    assert [r["verdict"] for r in rows] == ["missing", "missing_optional", "pass"]
    assert verdict == "metric_missing"


def test_missing_required_metric_outranks_a_regression():
    rows, verdict = mlflow_gate.compare([rule("a"), rule("b")], {"b": 2.0}, {"a": 1.0, "b": 1.0})
    assert verdict == "metric_missing"
    assert "a was not logged" in mlflow_gate.describe_regressions(rows)
    assert "b 2 vs 1" in mlflow_gate.describe_regressions(rows)


def test_no_baseline_passes_but_still_needs_required_metrics():
    rows, verdict = mlflow_gate.compare([rule("a"), rule("b", required=False)], {"a": 1.0}, None)
    assert verdict == "no_baseline" and [r["verdict"] for r in rows] == ["no_baseline", "missing_optional"]
    assert mlflow_gate.compare([rule("a")], {}, None)[1] == "metric_missing"


def test_a_baseline_without_the_metrics_compares_nothing():
    rows, verdict = mlflow_gate.compare([rule("a")], {"a": 5.0}, {"other": 1.0})
    assert verdict == "no_baseline" and rows[0]["verdict"] == "no_baseline"


@pytest.mark.parametrize("rules, fragment", [
    ([], "rules is empty"),
    ([rule("a"), rule("a")], "two rules"),
    ([rule("a", direction="up")], "direction"),
    ([rule("a", abs_tolerance=-0.1)], "zero or positive"),
    ([rule("a", rel_tolerance=float("nan"))], "zero or positive"),
])
def test_unusable_rules_are_invalid_input(rules, fragment):
    with pytest.raises(mlflow_gate.GateError) as err:
        mlflow_gate.normalize_rules(rules)
    assert err.value.error_class == "invalid_input" and fragment in err.value.msg


def test_pick_best_by_direction_newest_wins_ties_and_unranked_are_skipped():
    scored = [({"version": "1"}, {"auc": 0.9}), ({"version": "2"}, {"auc": 0.7}), ({"version": "3"}, {"auc": 0.9}),
              ({"version": "4"}, {}), ({"version": "5"}, {"auc": float("nan")})]
    assert mlflow_gate.pick_best(scored, "auc", "higher")[0]["version"] == "3"
    assert mlflow_gate.pick_best(scored, "auc", "lower")[0]["version"] == "2"
    assert mlflow_gate.pick_best(scored[3:], "auc", "higher") is None


def test_redact_url_drops_credentials_and_query():
    assert mlflow_gate.redact_url("https://ci:%s@mlflow.example.test:8443/?token=x" % SECRET) == \
        "https://mlflow.example.test:8443/"


# --- The gate against the fake registry ----------------------------------------------------------------

@pytest.fixture
def champion_at_1():
    fake = FakeMlflow()
    fake.add_version("m", {"rmse": 1.0, "r2": 0.5})
    fake.models["m"]["aliases"]["champion"] = "1"
    return fake


def test_better_candidate_is_promoted_and_tagged(champion_at_1):
    fake = champion_at_1
    better = fake.add_version("m", {"rmse": 0.8, "r2": 0.6})
    changed, result = gate(fake, candidate_version=int(better), rules=[RMSE_LOWER, R2_HIGHER], promote=True)
    assert changed is True and result["passed"] is True and result["verdict"] == "passed"
    assert result["promoted"] is True and result["previous_alias_version"] == "1"
    assert fake.models["m"]["aliases"]["champion"] == better
    assert fake.models["m"]["versions"][better]["tags"] == {"mlflow_stack.gate.verdict": "passed",
                                                           "mlflow_stack.gate.baseline": "1"}
    assert [(r["metric"], r["verdict"]) for r in result["metrics"]] == [("rmse", "pass"), ("r2", "pass")]
    assert "Moved alias 'champion' from version 1 to version 2" in result["msg"]


def test_worse_candidate_fails_naming_every_regression_and_keeps_the_alias(champion_at_1):
    fake = champion_at_1
    worse = fake.add_version("m", {"rmse": 1.3, "r2": 0.4})
    err = failing_gate(fake, candidate_version=int(worse), promote=True,
                       rules=[dict(RMSE_LOWER, rel_tolerance=0.1), R2_HIGHER])
    assert err.error_class == "regressed"
    assert "rmse 1.3 vs 1 (lower is better): worse by 0.3 (delta +0.3, +30.0%), tolerance 0.1" in err.msg
    assert "r2 0.4 vs 0.5 (higher is better): worse by 0.1" in err.msg
    assert "Not promoted" in err.msg
    assert fake.models["m"]["aliases"]["champion"] == "1"
    assert err.result["promoted"] is False and err.result["passed"] is False
    # The failed candidate carries the verdict, so the registry shows why it was not promoted.
    assert fake.models["m"]["versions"][worse]["tags"]["mlflow_stack.gate.verdict"] == "regressed"
    assert err.result["changed"] is True


def test_without_promote_nothing_is_written(champion_at_1):
    fake = champion_at_1
    better = fake.add_version("m", {"rmse": 0.5})
    changed, result = gate(fake, candidate_version=int(better))
    assert changed is False and result["passed"] is True and fake.writes == []
    assert result["alias"] is None


def test_check_mode_reports_the_promotion_without_writing(champion_at_1):
    fake = champion_at_1
    better = fake.add_version("m", {"rmse": 0.5})
    changed, result = gate(fake, check_mode=True, candidate_version=int(better), promote=True)
    assert changed is True and result["promoted"] is True
    assert "Would move alias 'champion' from version 1 to version 2" in result["msg"]
    assert fake.writes == []
    assert fake.models["m"]["aliases"]["champion"] == "1"


def test_rerun_after_promotion_changes_nothing(champion_at_1):
    fake = champion_at_1
    better = fake.add_version("m", {"rmse": 0.5})
    gate(fake, candidate_version=int(better), promote=True)
    writes = len(fake.writes)
    changed, result = gate(fake, candidate_version=int(better), promote=True)
    assert changed is False and result["passed"] is True and len(fake.writes) == writes
    assert result["tags"]["mlflow_stack.gate.baseline"] == "1", "the re-run must keep the version it really beat"
    assert "it is the baseline" in result["msg"]


def test_no_baseline_passes_says_so_and_promotes_the_first_version():
    fake = FakeMlflow()
    first = fake.add_version("m", {"rmse": 3.0})
    changed, result = gate(fake, candidate_version=int(first), promote=True)
    assert changed is True and result["passed"] is True and result["verdict"] == "no_baseline"
    assert result["baseline_version"] is None
    assert "no baseline to compare against yet" in result["msg"]
    assert fake.models["m"]["aliases"]["champion"] == first
    assert fake.models["m"]["versions"][first]["tags"]["mlflow_stack.gate.baseline"] == "none"


def test_baseline_alias_can_differ_from_the_promoted_alias(champion_at_1):
    fake = champion_at_1
    fake.models["m"]["aliases"]["production"] = "1"
    candidate = fake.add_version("m", {"rmse": 0.9})
    changed, result = gate(fake, candidate_version=int(candidate), baseline_alias="production", alias="staging",
                           promote=True)
    assert result["baseline"] == "alias 'production'" and result["baseline_version"] == "1"
    assert fake.models["m"]["aliases"] == {"champion": "1", "production": "1", "staging": candidate}


def test_candidate_by_run_id_takes_the_newest_version_of_that_run(champion_at_1):
    fake = champion_at_1
    fake.add_version("m", {"rmse": 0.9}, run_id="shared")
    newest = fake.add_version("m", {"rmse": 0.9}, run_id="shared")
    changed, result = gate(fake, candidate_run_id="shared")
    assert result["candidate_version"] == newest and result["candidate_run_id"] == "shared"
    search = [c for c in fake.calls if c[1] == "model-versions/search"][0]
    assert search[2]["filter"] == "name='m' AND run_id='shared'"


def test_best_of_last_n_looks_only_at_the_n_versions_before_the_candidate():
    fake = FakeMlflow()
    for rmse in (0.1, 0.9, 0.5, 0.7, 0.6):  # versions 1-5; version 1 is the best but outside the window
        fake.add_version("m", {"rmse": rmse})
    candidate = fake.add_version("m", {"rmse": 0.45})
    fake.add_version("m", {"rmse": 0.01})  # registered after the candidate: never its baseline
    changed, result = gate(fake, candidate_version=int(candidate), baseline_best_of_last=4, baseline_metric="rmse")
    assert result["baseline_version"] == "3" and result["passed"] is True
    assert result["baseline"] == "the best rmse (lower is better) of the last 4 versions before version 6"
    err = failing_gate(fake, candidate_version=int(candidate), baseline_best_of_last=5, baseline_metric="rmse")
    assert err.error_class == "regressed" and err.result["baseline_version"] == "1"


def test_best_of_last_ranks_by_the_rule_direction_and_skips_unrankable_versions():
    fake = FakeMlflow()
    fake.add_version("m", {"r2": 0.9})
    fake.add_version("m", {"r2": 0.95}, status="FAILED_REGISTRATION")
    fake.add_version("m", {"rmse": 1.0})            # no r2: cannot be ranked
    fake.add_version("m", None)                     # registered without a run
    gone = fake.add_version("m", {"r2": 0.99})
    del fake.runs[fake.models["m"]["versions"][gone]["run_id"]]   # its run was garbage-collected
    candidate = fake.add_version("m", {"r2": 0.91, "rmse": 2.0})
    changed, result = gate(fake, candidate_version=int(candidate), baseline_best_of_last=10, baseline_metric="r2",
                           rules=[R2_HIGHER, dict(RMSE_LOWER, required=False)])
    assert result["baseline_version"] == "1" and result["passed"] is True


def test_best_of_last_without_any_ranked_version_is_no_baseline():
    fake = FakeMlflow()
    candidate = fake.add_version("m", {"rmse": 1.0})
    changed, result = gate(fake, candidate_version=int(candidate), baseline_best_of_last=3)
    assert result["verdict"] == "no_baseline" and result["baseline_version"] is None


def test_best_of_last_pages_through_the_search():
    fake = FakeMlflow()
    for i in range(450):
        fake.add_version("m", {"rmse": 1.0 + i})
    candidate = fake.add_version("m", {"rmse": 0.5})
    versions = registry(fake).search_versions("m", max_results=5, below=candidate)
    assert [v["version"] for v in versions] == ["450", "449", "448", "447", "446"]
    assert len(registry(fake).search_versions("m", max_results=1000)) == 451
    pages = [c for c in fake.calls if c[1] == "model-versions/search"]
    assert len(pages) == 4  # 1 page for the first search, 3 pages of 200 for the second


@pytest.mark.parametrize("params, fragment", [
    (dict(baseline_best_of_last=3, baseline_metric="auc"), "baseline_metric 'auc' has no rule"),
    (dict(baseline_best_of_last=0), "must be 1 or more"),
])
def test_unusable_baseline_options_are_invalid_input(champion_at_1, params, fragment):
    err = failing_gate(champion_at_1, candidate_version=1, **params)
    assert err.error_class == "invalid_input" and fragment in err.msg


# --- Error classes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("setup, params, error_class, fragment", [
    (None, dict(name="nope", candidate_version=1), "no_such_model", "has no registered model 'nope'"),
    (None, dict(candidate_version=7), "no_such_version", "has no version 7"),
    (None, dict(candidate_run_id="unknown"), "no_such_version", "registered from run unknown"),
    ("drop_candidate_run", dict(candidate_version=2), "no_such_run", "does not exist"),
    ("drop_baseline_run", dict(candidate_version=2), "no_such_run", "does not exist"),
    ("candidate_without_run", dict(candidate_version=3), "no_such_run", "not registered from a run"),
    ("candidate_without_metric", dict(candidate_version=2, rules=[R2_HIGHER, RMSE_LOWER]), "metric_missing",
     "r2 was not logged"),
])
def test_registry_failures_are_classified(champion_at_1, setup, params, error_class, fragment):
    fake = champion_at_1
    fake.add_version("m", {"rmse": 0.9})
    if setup == "drop_candidate_run":
        del fake.runs[fake.models["m"]["versions"]["2"]["run_id"]]
    elif setup == "drop_baseline_run":
        del fake.runs[fake.models["m"]["versions"]["1"]["run_id"]]
    elif setup == "candidate_without_run":
        fake.add_version("m", None)
    elif setup == "candidate_without_metric":
        fake.models["m"]["versions"]["1"]["run_id"] = fake.models["m"]["versions"]["2"]["run_id"]
    err = failing_gate(fake, **params)
    assert err.error_class == error_class
    assert fragment in err.msg
    assert err.result["model_name"] == params.get("name", "m")


@pytest.mark.parametrize("failure, error_class, fragment", [
    (URLError(ConnectionRefusedError(111, "Connection refused")), "unreachable", "Cannot connect"),
    (URLError(socket.gaierror(-2, "Name or service not known")), "unreachable", "Cannot connect"),
    (socket.timeout("timed out"), "unreachable", "Cannot connect"),
    (ConnectionResetError(104, "Connection reset by peer"), "unreachable", "Cannot connect"),
    (URLError(ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                                                 "self-signed certificate in certificate chain")), "tls", "ca_path"),
    (URLError(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")), "tls", "speaks HTTPS"),
    (SSLValidationError("Failed to validate the SSL certificate for x:443"), "tls", "ca_path"),
    (http_error(URL, 401, b"<html>401 Authorization Required</html>"), "auth", "refused the credentials of user 'ci'"),
    (http_error(URL, 403, {"error_code": "PERMISSION_DENIED", "message": "Permission denied"}), "auth",
     "does not allow user 'ci'"),
    (http_error(URL, 500, b"<html>Internal Server Error</html>"), "other", "without an MLflow error"),
    (http_error(URL, 404, b"<html>404 Not Found</html>"), "other", "base URL of the MLflow server"),
    (http_error(URL, 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "bad name"}), "other",
     "bad name (INVALID_PARAMETER_VALUE, HTTP 400)"),
    (ValueError("weird"), "other", "weird"),
])
def test_transport_and_http_failures_are_classified(champion_at_1, failure, error_class, fragment):
    fake = champion_at_1
    fake.fail["registered-models/get"] = failure
    with pytest.raises(mlflow_gate.GateError) as err:
        mlflow_gate.run_gate(registry(fake, username="ci", password=SECRET),
                             dict(name="m", rules=[RMSE_LOWER], candidate_version=1))
    assert err.value.error_class == error_class, err.value.msg
    assert fragment in err.value.msg
    assert SECRET not in err.value.msg


def test_401_without_credentials_says_to_send_some(champion_at_1):
    champion_at_1.fail["registered-models/get"] = http_error(URL, 401, b"")
    with pytest.raises(mlflow_gate.GateError) as err:
        registry(champion_at_1).get_model("m")
    assert err.value.error_class == "auth" and "none were sent" in err.value.msg


def test_busy_answers_are_retried_then_given_up(champion_at_1):
    fake = champion_at_1
    fake.fail["registered-models/get"] = [http_error(URL, 429, b""), http_error(URL, 503, b"")]
    assert registry(fake).get_model("m")["name"] == "m"
    fake.fail["registered-models/get"] = [http_error(URL, 429, b"")] * 4
    with pytest.raises(mlflow_gate.GateError) as err:
        registry(fake).get_model("m")
    assert err.value.error_class == "other" and "429" in err.value.msg and "rate limit" in err.value.msg


def test_a_non_json_answer_points_at_the_url():
    rest = mlflow_gate.MlflowRest(URL + "/", lambda url, **kw: io.BytesIO(b"<html>login page</html>"))
    with pytest.raises(mlflow_gate.GateError) as err:
        rest.call("GET", "registered-models/get", params={"name": "m"})
    assert err.value.error_class == "other" and "not JSON" in err.value.msg


def test_requests_carry_basic_auth_tls_settings_and_quoted_names():
    fake = FakeMlflow()
    fake.add_version("it's", {"rmse": 1.0})
    rest = mlflow_gate.MlflowRest(URL + "/", fake, username="ci", password=SECRET, ca_path="/ca.crt", timeout=7)
    mlflow_gate.Registry(rest).search_versions("it's")
    request = fake.requests[-1]
    assert request["url"].startswith(URL + "/api/2.0/mlflow/model-versions/search?")
    assert request["url_username"] == "ci" and request["url_password"] == SECRET
    assert request["force_basic_auth"] is True and request["ca_path"] == "/ca.crt"
    assert request["validate_certs"] is True and request["timeout"] == 7
    assert fake.calls[-1][2]["filter"] == 'name="it\'s"'


# --- The module ---------------------------------------------------------------------------------------

def run_module(monkeypatch, capsys, fake, env=None, check_mode=False, **args):
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                "MLFLOW_TRACKING_SERVER_CERT_PATH"):
        monkeypatch.delenv(key, raising=False)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(mlflow_model_gate, "open_url", fake)
    module_args = dict(name="m", rules=[RMSE_LOWER])
    module_args.update(args)
    if check_mode:
        module_args["_ansible_check_mode"] = True
    with patch_module_args(module_args), pytest.raises(SystemExit):
        mlflow_model_gate.main()
    out = capsys.readouterr().out
    assert SECRET not in out, "the password leaked into the module output"
    return json.loads(out)


def test_module_reads_the_client_env_file_settings(monkeypatch, capsys, champion_at_1):
    fake = champion_at_1
    better = fake.add_version("m", {"rmse": 0.5})
    result = run_module(monkeypatch, capsys, fake, candidate_version=int(better), promote=True, env={
        "MLFLOW_TRACKING_URI": URL, "MLFLOW_TRACKING_USERNAME": "ci", "MLFLOW_TRACKING_PASSWORD": SECRET,
        "MLFLOW_TRACKING_SERVER_CERT_PATH": "/etc/ca.crt"})
    assert not result.get("failed"), result
    assert result["changed"] is True and result["promoted"] is True
    assert all(r["url"].startswith(URL) and r["url_username"] == "ci" and r["url_password"] == SECRET
               and r["ca_path"] == "/etc/ca.crt" for r in fake.requests)


def test_module_failure_carries_the_table_and_error_class(monkeypatch, capsys, champion_at_1):
    fake = champion_at_1
    worse = fake.add_version("m", {"rmse": 2.0})
    result = run_module(monkeypatch, capsys, fake, tracking_uri=URL, password=SECRET, username="ci",
                        candidate_version=int(worse))
    assert result["failed"] is True and result["error_class"] == "regressed"
    assert result["changed"] is False
    assert result["metrics"][0]["verdict"] == "regressed" and "rmse 2 vs 1" in result["msg"]


def test_module_auth_failure_hides_the_password(monkeypatch, capsys, champion_at_1):
    champion_at_1.fail["registered-models/get"] = http_error(URL, 401, b"")
    result = run_module(monkeypatch, capsys, champion_at_1, tracking_uri="https://ci:%s@mlflow.example.test" % SECRET,
                        password=SECRET, username="ci", candidate_version=1)
    assert result["error_class"] == "auth"


def test_module_check_mode_writes_nothing(monkeypatch, capsys, champion_at_1):
    fake = champion_at_1
    better = fake.add_version("m", {"rmse": 0.5})
    result = run_module(monkeypatch, capsys, fake, tracking_uri=URL, candidate_version=int(better), promote=True,
                        check_mode=True)
    assert result["changed"] is True and fake.writes == []


@pytest.mark.parametrize("args, fragment", [
    (dict(tracking_uri="file:///tmp/mlruns", candidate_version=1), "must be an http"),
    (dict(tracking_uri=URL), "one of the following is required: candidate_version, candidate_run_id"),
    (dict(tracking_uri=URL, candidate_version=1, baseline_alias="a", baseline_best_of_last=2), "mutually exclusive"),
    (dict(candidate_version=1), "missing required arguments: tracking_uri"),
    (dict(tracking_uri=URL, candidate_version=1, rules=[{"metric": "x", "direction": "up"}]), "direction"),
])
def test_module_rejects_unusable_arguments(monkeypatch, capsys, champion_at_1, args, fragment):
    result = run_module(monkeypatch, capsys, champion_at_1, **args)
    assert result["failed"] is True and fragment in result["msg"]
    assert champion_at_1.calls == []


def _shape(options, nested):
    """Type, default, choices, required and elements of every option, recursing into ``nested``
    (DOCUMENTATION calls them suboptions, the argument spec options)."""
    shape = {}
    for name, option in options.items():
        entry = dict((key, option.get(key)) for key in ("default", "choices", "elements"))
        entry.update(type=option.get("type", "str"), required=option.get("required", False))
        if nested in option:
            entry["options"] = _shape(option[nested], nested)
        shape[name] = entry
    return shape


def test_documentation_matches_the_argument_spec():
    doc = yaml.safe_load(mlflow_model_gate.DOCUMENTATION)
    for fragment in doc.get("extends_documentation_fragment", []):
        module = importlib.import_module("ansible_collections.mlops.mlflow_stack.plugins.doc_fragments."
                                         + fragment.rsplit(".", 1)[1])
        doc["options"].update(yaml.safe_load(module.ModuleDocFragment.DOCUMENTATION)["options"])
    assert _shape(doc["options"], "suboptions") == _shape(mlflow_model_gate.argument_spec(), "options")
    returned = yaml.safe_load(mlflow_model_gate.RETURN)
    assert set(mlflow_gate.ERROR_CLASSES) == set(re.findall(r"V\((\w+)\) - ", " ".join(
        returned["error_class"]["description"])))
    yaml.safe_load(mlflow_model_gate.EXAMPLES)


def test_ansible_doc_renders_documentation_examples_and_return():
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"))
    ansible_doc = str(Path(sys.executable).parent / "ansible-doc")
    out = subprocess.run([ansible_doc, "--json", "mlops.mlflow_stack.mlflow_model_gate"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rendered = json.loads(out.stdout)["mlops.mlflow_stack.mlflow_model_gate"]
    assert "rules" in rendered["doc"]["options"] and "regressed" in rendered["examples"]
    assert set(rendered["return"]) >= {"metrics", "passed", "verdict", "baseline_version", "promoted", "error_class"}
    assert "WARNING" not in out.stderr.upper(), out.stderr
