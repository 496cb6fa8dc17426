"""Helpers shared by every scenario's testinfra tests.

A scenario's tests/conftest.py imports this module. Test modules may set
``JOURNAL_UNITS`` to a list of ``"unit"`` or ``("unit", "user")`` entries; when a test
fails, the journal of those units on the test's host is printed with the failure so the
cause is on screen without logging in.
"""

import subprocess
import time

import pytest


def wait_until(predicate, timeout=60, interval=1.0, what="condition"):
    """Poll ``predicate`` until it returns a truthy value; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # a host restarting refuses commands for a moment
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last result: {last!r}")


def user_uid(host, user):
    return int(host.check_output(f"id -u {user}"))


def user_systemctl(host, user, args):
    """Run ``systemctl --user`` as ``user`` the way a login shell would (XDG_RUNTIME_DIR set)."""
    uid = user_uid(host, user)
    return host.run(
        f"sudo -u {user} env XDG_RUNTIME_DIR=/run/user/{uid} "
        f"DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{uid}/bus systemctl --user {args}"
    )


def journal(host, unit, user=None, lines=80):
    if user:
        uid = user_uid(host, user)
        cmd = f"journalctl --no-pager -n {lines} _SYSTEMD_USER_UNIT={unit} _UID={uid}"
        out = host.run(cmd)
        if not out.stdout.strip():
            out = host.run(f"journalctl --no-pager -n {lines} --user-unit {unit}")
    else:
        out = host.run(f"journalctl --no-pager -n {lines} -u {unit}")
    return out.stdout + out.stderr


def container_name(host):
    """The Docker container behind a testinfra host: Molecule names each container after its inventory host."""
    backend = host.backend
    return getattr(backend, "host", None) or backend.get_hostname()


def restart_container(host, timeout=120):
    """Restart the host's container and wait until systemd has finished booting."""
    subprocess.run(["docker", "restart", container_name(host)], check=True, capture_output=True)
    wait_until(
        lambda: host.run("systemctl is-system-running").stdout.strip() in ("running", "degraded"),
        timeout=timeout,
        what=f"systemd in {container_name(host)} to finish booting",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    units = getattr(item.module, "JOURNAL_UNITS", [])
    host = item.funcargs.get("host")
    if not units or host is None:
        return
    sections = []
    for entry in units:
        unit, user = (entry, None) if isinstance(entry, str) else entry
        try:
            sections.append(f"--- journal of {unit}{' (user ' + user + ')' if user else ''} ---\n"
                            + journal(host, unit, user))
        except Exception as exc:  # the host may be the thing that broke
            sections.append(f"--- journal of {unit} unavailable: {exc} ---")
    report.sections.append(("unit journals", "\n".join(sections)))

