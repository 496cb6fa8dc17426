# -*- coding: utf-8 -*-
# Copyright: mlops.mlflow_stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A model quality gate over MLflow's REST API: compare the metrics of a candidate model
version with a baseline version rule by rule, and move an alias to the candidate when it
is no worse.

Three layers, so unit tests can drive each without a server: ``MlflowRest`` speaks HTTP
(any ``open_url``-like opener) and classifies transport failures; ``Registry`` maps the few
registry and run calls the gate needs onto it; ``compare``/``run_gate`` hold the logic.
The standard library and ansible.module_utils only: the gate runs on any controller."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import math
import socket
import ssl
import time

from urllib.error import HTTPError, URLError
from urllib.parse import urlencode, urlsplit, urlunsplit

ERROR_CLASSES = (
    "unreachable",
    "tls",
    "auth",
    "no_such_model",
    "no_such_version",
    "no_such_run",
    "metric_missing",
    "regressed",
    "invalid_input",
    "other",
)

VERDICT_TAG = "mlflow_stack.gate.verdict"
BASELINE_TAG = "mlflow_stack.gate.baseline"

# Statuses a proxy or a busy server answers for a moment (nginx's rate limit answers 429).
_RETRY_STATUSES = (429, 502, 503, 504)
_TLS_MARKERS = ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed", "WRONG_VERSION_NUMBER",
                "hostname mismatch", "doesn't match", "self-signed certificate", "self signed certificate",
                "SSL:", "Failed to validate the SSL certificate")
_DETAIL_LIMIT = 300


class GateError(Exception):
    """A classified failure: ``error_class`` is one of ERROR_CLASSES, ``msg`` names the fix,
    ``result`` carries whatever was learned before the failure."""

    def __init__(self, error_class, msg, result=None):
        super(GateError, self).__init__(msg)
        self.error_class = error_class
        self.msg = msg
        self.result = result if result is not None else {}


class NotFound(Exception):
    """MLflow answered RESOURCE_DOES_NOT_EXIST; the caller knows what was missing."""

    def __init__(self, message):
        super(NotFound, self).__init__(message)
        self.message = message


def redact_url(url):
    """The URL without user:password@ and without a query string, fit for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = "[%s]" % host
    netloc = host + (":%d" % parts.port if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _short(text):
    text = " ".join(str(text).split())
    return text if len(text) <= _DETAIL_LIMIT else text[:_DETAIL_LIMIT] + "..."


def _looks_like_tls(exc):
    reason = getattr(exc, "reason", None)
    if isinstance(exc, ssl.SSLError) or isinstance(reason, ssl.SSLError):
        return True
    text = "%s %s" % (exc, reason or "")
    return any(marker in text for marker in _TLS_MARKERS)


def classify_transport(exc):
    """The error class of an exception raised before any HTTP answer arrived."""
    if _looks_like_tls(exc):
        return "tls"
    if isinstance(exc, (URLError, socket.timeout, ConnectionError, OSError)):
        return "unreachable"
    # ansible.module_utils.urls.ConnectionError (and its SSLValidationError) are not OSErrors.
    if type(exc).__name__ in ("ConnectionError", "ProxyError"):
        return "unreachable"
    return "other"


class MlflowRest:
    """POST/GET against ``<tracking_uri>/api/2.0/mlflow/<endpoint>`` with JSON in and out.

    ``opener`` has the signature of ansible.module_utils.urls.open_url. HTTP 401/403 and
    transport failures become GateError; RESOURCE_DOES_NOT_EXIST becomes NotFound; any other
    error answer becomes GateError('other') with MLflow's own message."""

    def __init__(self, tracking_uri, opener, username=None, password=None, ca_path=None, validate_certs=True,
                 timeout=30, retries=3, sleep=time.sleep):
        self.base = tracking_uri.rstrip("/")
        self.where = redact_url(self.base)
        self.opener = opener
        self.username = username
        self.password = password
        self.ca_path = ca_path
        self.validate_certs = validate_certs
        self.timeout = timeout
        self.retries = retries
        self.sleep = sleep

    def call(self, method, endpoint, params=None, body=None):
        url = "%s/api/2.0/mlflow/%s" % (self.base, endpoint)
        if params:
            url += "?" + urlencode(params, doseq=True)
        data = json.dumps(body).encode("utf-8") if body is not None else None
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.opener(
                    url, data=data, method=method,
                    headers={"Content-Type": "application/json", "Accept": "application/json"},
                    url_username=self.username, url_password=self.password,
                    force_basic_auth=bool(self.username), ca_path=self.ca_path,
                    validate_certs=self.validate_certs, timeout=self.timeout,
                    http_agent="mlops.mlflow_stack.mlflow_model_gate")
                return self._decode(response.read(), endpoint, 200)
            except HTTPError as exc:
                if exc.code in _RETRY_STATUSES and attempt <= self.retries:
                    self.sleep(min(2 ** attempt, 10))
                    continue
                raise self._http_error(exc, endpoint)
            except GateError:
                raise
            except Exception as exc:
                raise self._transport_error(exc)

    def _decode(self, raw, endpoint, status):
        try:
            return json.loads(raw.decode("utf-8") if raw else "{}")
        except ValueError:
            raise GateError("other", "%s answered %s on /api/2.0/mlflow/%s with something that is not JSON (%s). "
                                     "Check that tracking_uri is the base URL of the MLflow server, without a path."
                            % (self.where, status, endpoint, _short(raw[:200].decode("utf-8", "replace"))))

    def _http_error(self, exc, endpoint):
        try:
            raw = exc.read() or b""
        except Exception:
            raw = b""
        try:
            answer = json.loads(raw.decode("utf-8", "replace"))
        except ValueError:
            answer = None
        error_code = answer.get("error_code") if isinstance(answer, dict) else None
        message = answer.get("message", "") if isinstance(answer, dict) else ""
        if exc.code == 401:
            if not self.username:
                return GateError("auth", "%s asks for credentials (HTTP 401) and none were sent. Set username and "
                                         "password (or MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD), e.g. the "
                                         "CI user of the nginx_auth users." % self.where)
            return GateError("auth", "%s refused the credentials of user '%s' (HTTP 401). Check the password (or "
                                     "MLFLOW_TRACKING_PASSWORD) against that user's vault entry, and that the user is "
                                     "present in mlflow_stack_users." % (self.where, self.username))
        if exc.code == 403:
            return GateError("auth", "%s does not allow user '%s' to call %s (HTTP 403%s). Grant the user access to the "
                                     "registered model, or use a user that has it."
                             % (self.where, self.username or "(anonymous)", endpoint,
                                ": " + _short(message) if message else ""))
        if error_code == "RESOURCE_DOES_NOT_EXIST":
            return NotFound(message)
        if error_code:
            return GateError("other", "%s rejected %s: %s (%s, HTTP %s)."
                             % (self.where, endpoint, _short(message), error_code, exc.code))
        if exc.code in _RETRY_STATUSES:
            return GateError("other", "%s answered HTTP %s on %s after %d retries: the server or the proxy in front "
                                      "of it is overloaded or down (nginx answers 429 beyond its rate limit, 502 when "
                                      "MLflow is down). Try again later or check the MLflow service."
                             % (self.where, exc.code, endpoint, self.retries))
        return GateError("other", "%s answered HTTP %s on /api/2.0/mlflow/%s without an MLflow error (%s). Check that "
                                  "tracking_uri is the base URL of the MLflow server (scheme, host, port, no path)."
                         % (self.where, exc.code, endpoint, _short(raw[:200].decode("utf-8", "replace"))))

    def _transport_error(self, exc):
        error_class = classify_transport(exc)
        detail = _short(getattr(exc, "reason", None) or exc)
        if error_class == "tls":
            return GateError("tls", "TLS verification failed for %s (%s). Pass the CA that signed the server certificate "
                                    "as ca_path (or MLFLOW_TRACKING_SERVER_CERT_PATH; the stack's is the ca.crt next to "
                                    "the client env file), make sure the certificate names the host in tracking_uri, and "
                                    "that the server speaks HTTPS on that port." % (self.where, detail))
        if error_class == "unreachable":
            return GateError("unreachable", "Cannot connect to %s (%s). Check that the server is running, that "
                                            "tracking_uri has the right scheme, host and port, and that no firewall "
                                            "blocks the way from this host." % (self.where, detail))
        return GateError("other", "Calling %s failed: %s" % (self.where, detail))


def _filter_value(value):
    # MLflow's search filter takes single- or double-quoted strings; pick the one the value lacks.
    return "'%s'" % value if "'" not in value else '"%s"' % value


class Registry:
    """The registry and run calls the gate needs, with MLflow's answers unwrapped."""

    def __init__(self, rest):
        self.rest = rest

    def get_model(self, name):
        try:
            return self.rest.call("GET", "registered-models/get", params={"name": name})["registered_model"]
        except NotFound:
            raise GateError("no_such_model", "%s has no registered model '%s'. Check name, or register the model first "
                                             "(registered_model_name= in log_model)." % (self.rest.where, name))

    def get_version(self, name, version):
        try:
            return self.rest.call("GET", "model-versions/get",
                                  params={"name": name, "version": str(version)})["model_version"]
        except NotFound:
            raise GateError("no_such_version", "Registered model '%s' has no version %s on %s. Check the version "
                                               "number the training job printed." % (name, version, self.rest.where))

    def search_versions(self, name, run_id=None, max_results=100, below=None):
        """Versions of ``name`` newest first: at most ``max_results`` of them, only those
        registered from ``run_id`` if given, only those numbered below ``below`` if given."""
        expression = "name=%s" % _filter_value(name)
        if run_id:
            expression += " AND run_id=%s" % _filter_value(run_id)
        found, token = [], None
        while True:
            params = {"filter": expression, "order_by": ["version_number DESC"], "max_results": 200}
            if token:
                params["page_token"] = token
            answer = self.rest.call("GET", "model-versions/search", params=params)
            found.extend(v for v in answer.get("model_versions") or []
                         if below is None or int(v["version"]) < int(below))
            token = answer.get("next_page_token")
            if not token or len(found) >= max_results:
                break
        return sorted(found, key=lambda v: int(v["version"]), reverse=True)[:max_results]

    def alias_version(self, name, alias):
        """The version behind ``alias``, or None when the model has no such alias yet. Read from
        the registered model's alias list: the alias endpoint's answer for a missing alias
        differs between MLflow releases (404 or 400)."""
        aliases = self.get_model(name).get("aliases") or []
        number = next((a.get("version") for a in aliases if a.get("alias") == alias), None)
        return None if number is None else self.get_version(name, number)

    def run_metrics(self, run_id):
        """Latest value of every metric of the run, as {key: float}."""
        try:
            run = self.rest.call("GET", "runs/get", params={"run_id": run_id})["run"]
        except NotFound:
            raise GateError("no_such_run", "Run %s does not exist on %s (deleted and garbage-collected?)."
                            % (run_id, self.rest.where))
        return dict((m["key"], _as_float(m.get("value"))) for m in (run.get("data") or {}).get("metrics") or [])

    def set_alias(self, name, alias, version):
        self.rest.call("POST", "registered-models/alias", body={"name": name, "alias": alias, "version": str(version)})

    def set_version_tag(self, name, version, key, value):
        self.rest.call("POST", "model-versions/set-tag",
                       body={"name": name, "version": str(version), "key": key, "value": value})


def _as_float(value):
    # MLflow's JSON carries NaN and infinities as strings.
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# --- The comparison ---------------------------------------------------------------------------------

def normalize_rules(rules):
    """Fill defaults and reject rules that cannot be evaluated; raises GateError('invalid_input')."""
    if not rules:
        raise GateError("invalid_input", "rules is empty: give at least one {metric, direction}.")
    normalized, seen = [], set()
    for rule in rules:
        metric = rule.get("metric")
        if not metric:
            raise GateError("invalid_input", "Every rule needs a metric name (got %r)." % (rule,))
        if metric in seen:
            raise GateError("invalid_input", "Metric '%s' has two rules; merge them into one." % metric)
        seen.add(metric)
        if rule.get("direction") not in ("higher", "lower"):
            raise GateError("invalid_input", "The rule for '%s' needs direction 'higher' or 'lower' (which is better), "
                                             "got %r." % (metric, rule.get("direction")))
        abs_tolerance = float(rule.get("abs_tolerance") or 0.0)
        rel_tolerance = float(rule.get("rel_tolerance") or 0.0)
        if abs_tolerance < 0 or rel_tolerance < 0 or math.isnan(abs_tolerance) or math.isnan(rel_tolerance):
            raise GateError("invalid_input", "The tolerances of '%s' must be zero or positive (got abs_tolerance=%s, "
                                             "rel_tolerance=%s)." % (metric, abs_tolerance, rel_tolerance))
        required = rule.get("required")
        normalized.append({"metric": metric, "direction": rule["direction"], "abs_tolerance": abs_tolerance,
                           "rel_tolerance": rel_tolerance, "required": True if required is None else bool(required)})
    return normalized


def _finite(value):
    return value is not None and not math.isnan(value)


def compare_metric(rule, candidate, baseline):
    """One row of the table. ``worse_by`` is how much worse the candidate is (negative: better);
    ``tolerance`` is how much worse it may be: max(abs_tolerance, rel_tolerance * |baseline|)."""
    row = {"metric": rule["metric"], "direction": rule["direction"], "required": rule["required"],
           "candidate": candidate, "baseline": baseline, "delta": None, "rel_delta": None,
           "worse_by": None, "tolerance": None}
    if candidate is None:
        row["verdict"] = "missing" if rule["required"] else "missing_optional"
        return row
    if not _finite(baseline):
        row["verdict"] = "no_baseline"
        return row
    row["tolerance"] = max(rule["abs_tolerance"], rule["rel_tolerance"] * abs(baseline))
    if math.isnan(candidate):
        row["verdict"] = "regressed"
        return row
    delta = candidate - baseline
    worse_by = -delta if rule["direction"] == "higher" else delta
    # isclose absorbs float noise: 0.30 - 0.29 is not exactly 0.01, and equal must pass at zero tolerance.
    within = worse_by <= row["tolerance"] or math.isclose(worse_by, row["tolerance"], rel_tol=1e-9, abs_tol=1e-12)
    row["verdict"] = "pass" if within else "regressed"
    row["delta"] = _tidy(delta)
    row["rel_delta"] = _tidy(delta / abs(baseline)) if baseline != 0 else None
    row["worse_by"] = _tidy(worse_by)
    row["tolerance"] = _tidy(row["tolerance"])
    return row


def _tidy(value):
    """Twelve significant digits: 0.1 rather than 0.09999999999999998 in the table people read."""
    return float("%.12g" % value) + 0.0


def compare(rules, candidate_metrics, baseline_metrics):
    """(rows, verdict): verdict is metric_missing when a required metric is absent from the
    candidate, else regressed when any metric is worse than its tolerance, else no_baseline
    when there was nothing to compare against, else passed."""
    rows = [compare_metric(rule, candidate_metrics.get(rule["metric"]),
                           None if baseline_metrics is None else baseline_metrics.get(rule["metric"]))
            for rule in rules]
    verdicts = set(row["verdict"] for row in rows)
    if "missing" in verdicts:
        return rows, "metric_missing"
    if "regressed" in verdicts:
        return rows, "regressed"
    if baseline_metrics is None or not any(row["verdict"] == "pass" for row in rows):
        return rows, "no_baseline"
    return rows, "passed"


def pick_best(versions_metrics, metric, direction):
    """The (version, metrics) with the best value of ``metric``; the newer version wins a tie.
    Versions without a finite value of the metric cannot be ranked and are skipped."""
    ranked = [(v, m) for v, m in versions_metrics if _finite(m.get(metric))]
    if not ranked:
        return None
    sign = 1.0 if direction == "higher" else -1.0
    return max(ranked, key=lambda vm: (sign * vm[1][metric], int(vm[0]["version"])))


def _fmt(value):
    if value is None:
        return "-"
    return "%.6g" % value


def _pct(value):
    return "" if value is None else ", %+.1f%%" % (value * 100.0)


def describe_regressions(rows):
    parts = []
    for row in rows:
        if row["verdict"] == "regressed":
            if _finite(row["candidate"]):
                parts.append("%s %s vs %s (%s is better): worse by %s (delta %+.6g%s), tolerance %s"
                             % (row["metric"], _fmt(row["candidate"]), _fmt(row["baseline"]), row["direction"],
                                _fmt(row["worse_by"]), row["delta"], _pct(row["rel_delta"]), _fmt(row["tolerance"])))
            else:
                parts.append("%s is NaN in the candidate (baseline %s)" % (row["metric"], _fmt(row["baseline"])))
        elif row["verdict"] == "missing":
            parts.append("%s was not logged in the candidate's run (required)" % row["metric"])
    return "; ".join(parts)


def describe_rows(rows):
    return "; ".join("%s %s vs %s: %s" % (row["metric"], _fmt(row["candidate"]), _fmt(row["baseline"]), row["verdict"])
                     for row in rows)


# --- The gate ----------------------------------------------------------------------------------------

def _tags(version):
    return dict((t["key"], t.get("value")) for t in version.get("tags") or [])


def resolve_candidate(registry, name, candidate_version=None, candidate_run_id=None):
    if candidate_version is not None:
        return registry.get_version(name, candidate_version)
    versions = registry.search_versions(name, run_id=candidate_run_id, max_results=1)
    if not versions:
        raise GateError("no_such_version", "No version of registered model '%s' was registered from run %s on %s. "
                                           "Register the run's logged model (registered_model_name= in log_model, or "
                                           "mlflow.register_model) before gating it."
                        % (name, candidate_run_id, registry.rest.where))
    return versions[0]


def metrics_of(registry, version, role):
    run_id = version.get("run_id")
    if not run_id:
        raise GateError("no_such_run", "The %s, version %s of '%s', was not registered from a run, so it has no "
                                       "metrics to compare. Register models from runs that log the gate's metrics."
                        % (role, version["version"], version["name"]))
    return registry.run_metrics(run_id)


def resolve_baseline(registry, name, candidate, rules, baseline_alias=None, best_of_last=None, baseline_metric=None):
    """(version or None, metrics or None, description)."""
    if best_of_last:
        rule = next(r for r in rules if r["metric"] == baseline_metric)
        older = registry.search_versions(name, max_results=best_of_last, below=candidate["version"])
        scored = []
        for version in older:
            if version.get("status", "READY") != "READY" or not version.get("run_id"):
                continue
            try:
                scored.append((version, registry.run_metrics(version["run_id"])))
            except GateError as exc:
                if exc.error_class != "no_such_run":
                    raise
                # A version whose run was garbage-collected cannot be ranked, like one without the metric.
        best = pick_best(scored, baseline_metric, rule["direction"])
        what = "the best %s (%s is better) of the last %d versions before version %s" % (
            baseline_metric, rule["direction"], best_of_last, candidate["version"])
        if best is None:
            return None, None, what
        return best[0], best[1], what
    version = registry.alias_version(name, baseline_alias)
    what = "alias '%s'" % baseline_alias
    if version is None:
        return None, None, what
    return version, metrics_of(registry, version, "baseline"), what


def run_gate(registry, params, check_mode=False):
    """Compare, and promote when asked. Returns (changed, result); raises GateError with the
    result so far (the table included) when the gate fails or the registry cannot be read."""
    name = params["name"]
    rules = normalize_rules(params["rules"])
    best_of_last = params.get("baseline_best_of_last")
    baseline_metric = params.get("baseline_metric") or rules[0]["metric"]
    alias = params.get("alias") or "champion"
    baseline_alias = params.get("baseline_alias") or (None if best_of_last else alias)
    if best_of_last is not None and best_of_last < 1:
        raise GateError("invalid_input", "baseline_best_of_last must be 1 or more (got %s)." % best_of_last)
    if best_of_last and baseline_metric not in [r["metric"] for r in rules]:
        raise GateError("invalid_input", "baseline_metric '%s' has no rule, so its direction is unknown. Use one of "
                                         "the rules' metrics: %s." % (baseline_metric, ", ".join(r["metric"] for r in rules)))
    result = {"model_name": name, "candidate_version": None, "candidate_run_id": None, "baseline_version": None,
              "baseline": None, "metrics": [], "passed": False, "verdict": None, "promoted": False,
              "alias": alias if params.get("promote") else None, "previous_alias_version": None, "tags": {}}
    try:
        registry.get_model(name)
        candidate = resolve_candidate(registry, name, params.get("candidate_version"), params.get("candidate_run_id"))
        result["candidate_version"] = str(candidate["version"])
        result["candidate_run_id"] = candidate.get("run_id") or None
        candidate_metrics = metrics_of(registry, candidate, "candidate")
        baseline, baseline_metrics, what = resolve_baseline(
            registry, name, candidate, rules, baseline_alias, best_of_last, baseline_metric)
        result["baseline"] = what
        result["baseline_version"] = str(baseline["version"]) if baseline else None
        rows, verdict = compare(rules, candidate_metrics, baseline_metrics)
        result.update(metrics=rows, verdict=verdict, passed=verdict in ("passed", "no_baseline"))
        changed = False
        if params.get("promote"):
            changed = promote(registry, name, candidate, alias, result, check_mode)
    except GateError as exc:
        exc.result = dict(result, **exc.result)
        raise
    if not result["passed"]:
        raise GateError(result["verdict"], failure_message(result, params.get("promote")), dict(result, changed=changed))
    result["msg"] = success_message(result, params.get("promote"), check_mode)
    return changed, result


def failure_message(result, promoting):
    subject = "'%s' version %s" % (result["model_name"], result["candidate_version"])
    if result["verdict"] == "metric_missing":
        what_failed = "is missing required metrics"
    else:
        what_failed = "regressed against version %s (%s)" % (result["baseline_version"], result["baseline"])
    return "%s %s: %s.%s" % (subject, what_failed, describe_regressions(result["metrics"]),
                             " Not promoted." if promoting else "")


def success_message(result, promoting, check_mode):
    subject = "'%s' version %s" % (result["model_name"], result["candidate_version"])
    if result["verdict"] == "no_baseline" and result["baseline_version"] is None:
        msg = "%s passed: there is no baseline to compare against yet (no version found for %s)." % (
            subject, result["baseline"])
    elif result["verdict"] == "no_baseline":
        msg = "%s passed: the baseline, version %s (%s), has none of the gate's metrics, so nothing was compared." % (
            subject, result["baseline_version"], result["baseline"])
    elif result["baseline_version"] == result["candidate_version"]:
        msg = "%s passed: it is the baseline (%s) itself." % (subject, result["baseline"])
    else:
        msg = "%s passed against version %s (%s): %s." % (
            subject, result["baseline_version"], result["baseline"], describe_rows(result["metrics"]))
    if promoting:
        previous = result["previous_alias_version"]
        if previous == result["candidate_version"]:
            msg += " Alias '%s' already points to it." % result["alias"]
        else:
            msg += " %s alias '%s' from %s to version %s." % (
                "Would move" if check_mode else "Moved", result["alias"],
                "version " + previous if previous else "nowhere", result["candidate_version"])
    return msg


def promote(registry, name, candidate, alias, result, check_mode):
    """Tag the candidate with the verdict and, when it passed, point ``alias`` at it.
    Writes only what differs; returns whether anything did (or would, in check mode)."""
    version = str(candidate["version"])
    current = registry.alias_version(name, alias)
    result["previous_alias_version"] = str(current["version"]) if current else None
    wanted = {VERDICT_TAG: result["verdict"], BASELINE_TAG: result["baseline_version"] or "none"}
    result["tags"] = wanted
    existing = _tags(candidate)
    changed = False
    if result["baseline_version"] == version:
        # A re-run after the promotion compared the candidate with itself: keep the tags of the
        # run that promoted it, which name the version it really beat.
        result["tags"] = dict((key, existing.get(key)) for key in wanted)
    else:
        for key, value in sorted(wanted.items()):
            if existing.get(key) != value:
                changed = True
                if not check_mode:
                    registry.set_version_tag(name, version, key, value)
    if result["passed"]:
        result["promoted"] = True
        if result["previous_alias_version"] != version:
            changed = True
            if not check_mode:
                registry.set_alias(name, alias, version)
    return changed
