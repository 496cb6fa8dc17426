"""The front door keeps its promises: HTTPS only, credentials on every path but /health,
Mozilla intermediate TLS, upload limits, rate limiting, secrets not world-readable, and a
configuration nginx accepts. Requests are made with curl/openssl inside the host; the two
echo upstreams (prepare.yml) stand in for MLflow replicas and echo what nginx sent them."""

import json
import math
import os
import re
import shlex
import time

import pytest
import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts(
    "nginx_auth"
)

JOURNAL_UNITS = ["nginx.service", "echo-upstream@5000.service", "echo-upstream@5001.service"]

NAME = "mlflow.test"
CA = "/etc/nginx_auth/tls/ca.crt"
HTPASSWD = "/etc/nginx_auth/htpasswd"
KEY = "/etc/nginx_auth/tls/nginx_auth.key"
# Verified HTTPS to the public name, over loopback (exempt from the rate limit).
HTTPS = f"--cacert {CA} --resolve {NAME}:443:127.0.0.1 https://{NAME}"


def _password(host, user):
    users = host.ansible.get_variables()["nginx_auth_users"]
    return next(u["password"] for u in users if u["name"] == user)


def curl(host, args):
    """Run curl on the host; return (status code, response headers, body)."""
    out = host.run(f"curl -sS -D /dev/stderr -o /dev/stdout {args}")
    assert out.rc == 0, out.stderr
    headers = out.stderr
    status = int(re.findall(r"^HTTP/\S+ (\d{3})", headers, re.M)[-1])
    return status, headers, out.stdout


def auth(host, user, password=None):
    return f"-u {shlex.quote(user + ':' + (password if password is not None else _password(host, user)))}"


def header_values(headers, name):
    return [v.strip() for k, v in re.findall(r"^([^:\r\n]+):(.*)$", headers, re.M) if k.lower() == name.lower()]


def test_nginx_runs_and_configuration_passes_nginx_t(host):
    assert host.service("nginx").is_running
    assert host.service("nginx").is_enabled
    assert host.run("nginx -t").rc == 0


def test_listens_on_http_and_https(host):
    assert host.socket("tcp://0.0.0.0:80").is_listening
    assert host.socket("tcp://0.0.0.0:443").is_listening


def test_no_credentials_gets_401_with_a_basic_challenge(host):
    status, headers, _ = curl(host, f"{HTTPS}/api/2.0/mlflow/experiments/search")
    assert status == 401
    assert header_values(headers, "WWW-Authenticate") == ['Basic realm="MLflow"']


def test_wrong_password_and_unknown_user_get_401(host):
    assert curl(host, f"{auth(host, 'alice', 'not-alices-password')} {HTTPS}/")[0] == 401
    assert curl(host, f"{auth(host, 'mallory', 'whatever-password-1')} {HTTPS}/")[0] == 401


def test_user_marked_absent_is_not_in_the_htpasswd_file(host):
    names = [line.split(":", 1)[0] for line in host.file(HTPASSWD).content_string.splitlines()]
    assert names == ["alice", "bob"]


def test_right_credentials_reach_the_upstream_with_forwarding_headers(host):
    status, _, body = curl(host, f"{auth(host, 'alice')} {HTTPS}/api/2.0/mlflow/experiments/search?x=1")
    assert status == 200
    echo = json.loads(body)
    assert echo["path"] == "/api/2.0/mlflow/experiments/search?x=1"
    sent = echo["headers"]
    # MLflow's allowed-hosts check needs the public name; the rest tells it the client's view.
    assert sent["Host"] == NAME
    assert sent["X-Forwarded-Proto"] == "https"
    assert sent["X-Forwarded-Host"] == NAME
    assert sent["X-Forwarded-For"] == "127.0.0.1"
    assert sent["X-Real-IP"] == "127.0.0.1"
    # The client's credentials never travel on to MLflow.
    assert not [k for k in sent if k.lower() == "authorization"], sent


@pytest.mark.parametrize("path", ["/api/2.0/mlflow-artifacts/artifacts/a.txt", "/static-files/static/x.js",
                                  "/ajax-api/2.0/mlflow/runs/search"])
def test_no_location_forwards_the_credentials(host, path):
    status, _, body = curl(host, f"{auth(host, 'alice')} {HTTPS}{path}")
    assert status == 200, body
    assert not [k for k in json.loads(body)["headers"] if k.lower() == "authorization"], path


def test_bcrypt_entries_for_every_user(host):
    for line in host.file(HTPASSWD).content_string.splitlines():
        assert re.match(r"^[^:]+:\$2b\$06\$[./A-Za-z0-9]{53}$", line), line.split(":", 1)[0]
    assert curl(host, f"{auth(host, 'bob')} {HTTPS}/")[0] == 200


def test_health_is_open_without_credentials(host):
    status, _, body = curl(host, f"{HTTPS}/health")
    assert (status, body) == (200, "OK")


def test_metrics_need_credentials(host):
    assert curl(host, f"{HTTPS}/metrics")[0] == 401
    status, _, body = curl(host, f"{auth(host, 'alice')} {HTTPS}/metrics")
    assert status == 200 and "echo_requests" in body


def test_requests_are_spread_over_both_replicas_and_reuse_connections(host):
    seen = [json.loads(curl(host, f"{auth(host, 'alice')} {HTTPS}/replica")[2]) for _ in range(8)]
    assert {e["port"] for e in seen} == {5000, 5001}
    # Upstream keepalive: nginx reuses its connections instead of opening one per request.
    connections = {(e["port"], e["peer"]) for e in seen}
    assert len(connections) < len(seen), connections


def test_http_redirects_to_https_health_included(host):
    for path in ("/", "/health", "/api/2.0/mlflow/runs/get?run_id=1"):
        status, headers, _ = curl(host, f"-H 'Host: {NAME}' http://127.0.0.1{path}")
        assert status == 301
        assert header_values(headers, "Location") == [f"https://{NAME}{path}"]


def test_security_headers_once_each(host):
    _, headers, _ = curl(host, f"{auth(host, 'alice')} {HTTPS}/")
    assert header_values(headers, "Strict-Transport-Security") == ["max-age=63072000"]
    assert header_values(headers, "X-Content-Type-Options") == ["nosniff"]
    # The upstream sends X-Frame-Options too; nginx's value replaces it.
    assert header_values(headers, "X-Frame-Options") == ["SAMEORIGIN"]
    assert header_values(headers, "Server") == ["nginx"]  # no version
    # On errors as well (always).
    _, headers, _ = curl(host, f"{HTTPS}/")
    assert header_values(headers, "Strict-Transport-Security") == ["max-age=63072000"]


def _handshake(host, options):
    return host.run(
        f"openssl s_client -connect 127.0.0.1:443 -servername {NAME} -CAfile {CA} "
        f"-verify_hostname {NAME} -verify_return_error {options} </dev/null"
    )


def test_tls_1_0_and_1_1_refused_by_the_server(host):
    for version in ("-tls1", "-tls1_1"):
        # SECLEVEL=0 lets the client offer the old protocol; the refusal must be the server's.
        out = _handshake(host, f"{version} -cipher DEFAULT:@SECLEVEL=0")
        assert out.rc != 0
        assert "alert protocol version" in out.stderr + out.stdout, version


def test_tls_1_2_and_1_3_accepted_with_a_verified_certificate(host):
    for version, protocol in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        out = _handshake(host, version)
        assert out.rc == 0, out.stderr
        assert f"New, {protocol}, Cipher is " in out.stdout
        assert "Verify return code: 0 (ok)" in out.stdout


def test_tls_1_2_offers_only_intermediate_ciphers(host):
    assert _handshake(host, "-tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256").rc == 0
    # CBC suites are outside Mozilla intermediate.
    assert _handshake(host, "-tls1_2 -cipher ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384").rc != 0


def test_body_over_the_limit_gets_413_and_under_it_streams_through(host):
    host.run("head -c 2097152 /dev/zero > /tmp/over.bin && head -c 524288 /dev/zero > /tmp/under.bin")
    status, _, _ = curl(host, f"{auth(host, 'alice')} --data-binary @/tmp/over.bin {HTTPS}/api/2.0/mlflow-artifacts/a")
    assert status == 413
    status, _, body = curl(
        host, f"{auth(host, 'alice')} -X PUT --data-binary @/tmp/under.bin {HTTPS}/api/2.0/mlflow-artifacts/b"
    )
    assert status == 200
    assert json.loads(body)["received"] == 524288


def test_htpasswd_and_key_not_world_readable(host):
    htpasswd = host.file(HTPASSWD)
    assert (htpasswd.user, htpasswd.group, htpasswd.mode) == ("root", "www-data", 0o640)
    key = host.file(KEY)
    assert key.user == "root" and key.mode & 0o077 == 0
    assert host.file("/etc/nginx_auth").mode & 0o007 == 0
    # nginx's workers (www-data) still read the htpasswd file: right credentials worked above.


def _parallel_codes(host, target, credentials, count):
    return host.check_output(
        f"mkdir -p /tmp/rl && curl -sk --parallel --parallel-immediate --parallel-max {count} "
        f"{target.split(' https://')[0]} -u {shlex.quote(credentials)} -o '/tmp/rl/#1' -w '%{{http_code}}\\n' "
        f"'https://{NAME}/guess/[1-{count}]'"
    ).split()


def test_failed_logins_are_rate_limited_per_address(host):
    # Over the container's own address, which is not in the exempt loopback network.
    address = host.check_output("hostname -I").split()[0]
    target = f"-k --resolve {NAME}:443:{address} https://{NAME}"
    started = time.monotonic()
    codes = _parallel_codes(host, target, "alice:wrong-password-guess", 60)
    elapsed = time.monotonic() - started
    assert len(codes) == 60
    assert set(codes) <= {"401", "429"}, codes
    # At most the burst (10) plus 1 per second got through to the password check.
    assert codes.count("401") <= 10 + math.ceil(elapsed) + 1, (codes, elapsed)
    assert codes.count("429") >= 1
    # While the address is throttled for failures, /health stays open and a client with the
    # right password from that same address (a team behind one NAT address) is not throttled.
    assert curl(host, f"{target}/health")[0] == 200
    assert curl(host, f"{auth(host, 'alice')} {target}/")[0] == 200


def test_a_busy_authenticated_client_is_never_throttled(host):
    # 300 authenticated requests at once from one non-exempt address: every one is answered.
    address = host.check_output("hostname -I").split()[0]
    target = f"-k --resolve {NAME}:443:{address} https://{NAME}"
    codes = _parallel_codes(host, target, f"alice:{_password(host, 'alice')}", 300)
    assert codes == ["200"] * 300, sorted(set(codes))


def test_exempt_network_is_not_rate_limited(host):
    codes = host.check_output(
        "mkdir -p /tmp/rl && curl -s --parallel --parallel-immediate --parallel-max 60 "
        f"--cacert {CA} --resolve {NAME}:443:127.0.0.1 -u alice:wrong-password-guess -o '/tmp/rl/#1' "
        f"-w '%{{http_code}}\\n' 'https://{NAME}/guess/[1-60]'"
    ).split()
    assert codes == ["401"] * 60


def test_validation_helper_refuses_a_broken_site(host):
    site = "/etc/nginx/conf.d/nginx_auth.conf"
    assert host.run(f"/usr/local/sbin/nginx-auth-validate {site} {site}").rc == 0
    host.run(
        f"sed 's/proxy_pass http:\\/\\/$nginx_auth_pool;/proxy_pass http:\\/\\/$nowhere_defined;/' {site} > /tmp/broken.conf"
    )
    out = host.run(f"/usr/local/sbin/nginx-auth-validate /tmp/broken.conf {site}")
    assert out.rc != 0
    assert "nowhere_defined" in out.stderr
    # The live configuration is untouched.
    assert "nowhere_defined" not in host.file(site).content_string


def test_a_login_is_remembered_under_an_hmac_never_the_credential(host):
    password = _password(host, "alice")
    assert curl(host, f"{auth(host, 'alice')} {HTTPS}/remembered")[0] == 200
    remembered = host.run("find /run/nginx_auth/logins -type f | wc -l").stdout.strip()
    assert int(remembered) >= 1
    # The cache files hold an HMAC, never the password or the header that carries it.
    import base64

    header = base64.b64encode(f"alice:{password}".encode()).decode()
    for secret in (password, header):
        assert host.run(f"grep -rlF {shlex.quote(secret)} /run/nginx_auth /var/cache/nginx").stdout == ""
    # Remembering never lets a wrong password, or none, in.
    assert curl(host, f"{auth(host, 'alice', 'not-' + password)} {HTTPS}/remembered")[0] == 401
    status, headers, _ = curl(host, f"{HTTPS}/remembered")
    assert status == 401 and len(header_values(headers, "WWW-Authenticate")) == 1


def test_the_password_check_listener_is_private(host):
    runtime = host.file("/run/nginx_auth")
    assert (runtime.user, runtime.group, runtime.mode) == ("root", "www-data", 0o750)
    assert host.file("/etc/nginx_auth/verify.key").mode & 0o007 == 0
    # Another local account cannot reach it to guess passwords past the rate limit.
    out = host.run("runuser -u nobody -- curl -s --unix-socket /run/nginx_auth/verify.sock http://x/")
    assert out.rc != 0


def test_json_is_gzipped(host):
    # The echo upstream returns JSON holding the request headers: pad them past gzip_min_length.
    # --compressed asks for gzip and unpacks the answer, which must still be the JSON.
    status, headers, body = curl(host, f"{auth(host, 'alice')} --compressed -H 'X-Pad: {'x' * 2000}' "
                                       f"{HTTPS}/api/2.0/mlflow/runs/search")
    assert status == 200
    assert header_values(headers, "Content-Encoding") == ["gzip"]
    assert json.loads(body)["headers"]["X-Pad"] == "x" * 2000


def test_ui_static_files_are_kept_by_nginx_and_cached_long(host):
    path = f"/static-files/static/js/main.{int(time.time())}.js"
    first = curl(host, f"{auth(host, 'alice')} {HTTPS}{path}")
    second = curl(host, f"{auth(host, 'alice')} {HTTPS}{path}")
    assert first[0] == second[0] == 200
    assert header_values(second[1], "X-Cache-Status") == ["HIT"]
    assert header_values(second[1], "Cache-Control") == ["public, max-age=31536000, immutable"]
    assert len(header_values(second[1], "Strict-Transport-Security")) == 1
    # Still behind the password.
    assert curl(host, f"{HTTPS}{path}")[0] == 401
