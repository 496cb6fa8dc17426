"""A throwaway PostgreSQL with TLS on loopback, for the postgresql_tls_check integration tests.

Uses Debian's server binaries (/usr/lib/postgresql/<ver>/bin); installs the `postgresql`
package with apt when they are missing and the test runs as root. initdb refuses to run as
root, so the cluster belongs to an unprivileged user (the `postgres` user the package creates).
Certificates are made here with `cryptography`: a CA, a server certificate for `localhost`
only (so 127.0.0.1 is a hostname mismatch), and an unrelated CA to prove verify failures.
"""

import datetime
import glob
import ipaddress
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PASSWORD = "integration-pass-9f2c1e"
STRANGER_PASSWORD = "stranger-pass-4b7d0a"


def find_bindir():
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not dirs and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"],
                       check=True, env=env, capture_output=True)
        dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(dirs[-1]) if dirs else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(_name(cn))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(ca_key, ca_cert, dns_names, ips=(), days=20):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = [x509.DNSName(n) for n in dns_names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(dns_names[0])).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _pem_cert(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class TlsPostgres:
    """initdb + pg_ctl on 127.0.0.1:<free port> with ssl=on and a hostssl/scram pg_hba."""

    def __init__(self, bindir, owner="postgres"):
        self.bindir = bindir
        self.owner = pwd.getpwnam(owner) if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
        self.port = free_port()
        self.base = tempfile.mkdtemp(prefix="pg-tls-it-")
        os.chmod(self.base, 0o755)
        if os.geteuid() == 0:
            os.chown(self.base, self.owner.pw_uid, self.owner.pw_gid)
        self.datadir = os.path.join(self.base, "data")
        self.sockdir = os.path.join(self.base, "sock")
        self.ca_file = os.path.join(self.base, "ca.crt")
        self.other_ca_file = os.path.join(self.base, "other-ca.crt")

    def _as_owner(self, argv, **kwargs):
        if os.geteuid() == 0:
            argv = ["runuser", "-u", self.owner.pw_name, "--"] + argv
        proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)
        if proc.returncode != 0:
            raise RuntimeError("%s failed (%d): %s%s" % (" ".join(argv), proc.returncode, proc.stdout, proc.stderr))
        return proc

    def _write(self, path, data, mode):
        with open(path, "wb") as fh:
            fh.write(data)
        os.chmod(path, mode)
        if os.geteuid() == 0:
            os.chown(path, self.owner.pw_uid, self.owner.pw_gid)

    def psql(self, sql):
        return self._as_owner([os.path.join(self.bindir, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                               "-h", self.sockdir, "-p", str(self.port), "-d", "postgres", "-tAc", sql]).stdout

    def start(self):
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self):
        ca_key, ca_cert = make_ca("integration test CA")
        _, other_ca = make_ca("some other CA")
        server_key, server_cert = make_server_cert(ca_key, ca_cert, ["localhost"])
        self._write(self.ca_file, _pem_cert(ca_cert), 0o644)
        self._write(self.other_ca_file, _pem_cert(other_ca), 0o644)
        os.mkdir(self.sockdir)
        if os.geteuid() == 0:
            os.chown(self.sockdir, self.owner.pw_uid, self.owner.pw_gid)
        pwfile = os.path.join(self.base, "pw")
        self._write(pwfile, b"superuser-not-used-over-tcp\n", 0o600)
        self._as_owner([os.path.join(self.bindir, "initdb"), "-D", self.datadir, "-U", "postgres",
                        "--pwfile", pwfile, "--auth-local=peer", "--auth-host=reject", "-E", "UTF8",
                        "--locale=C.UTF-8", "--no-sync"])
        os.unlink(pwfile)
        self._write(os.path.join(self.datadir, "server.crt"), _pem_cert(server_cert), 0o644)
        self._write(os.path.join(self.datadir, "server.key"), _pem_key(server_key), 0o600)
        with open(os.path.join(self.datadir, "pg_hba.conf"), "w") as fh:
            fh.write(
                "local all all peer map=test\n"
                "hostssl all app 127.0.0.1/32 scram-sha-256\n"
                "hostssl all app ::1/128 scram-sha-256\n"
                "hostnossl all all 127.0.0.1/32 reject\n"
                "hostnossl all all ::1/128 reject\n"
            )
        with open(os.path.join(self.datadir, "pg_ident.conf"), "a") as fh:
            fh.write("test %s postgres\ntest %s %s\n" % (self.owner.pw_name, self.owner.pw_name, self.owner.pw_name))
        with open(os.path.join(self.datadir, "postgresql.auto.conf"), "a") as fh:
            fh.write(
                "listen_addresses = '127.0.0.1'\n"
                "port = %d\n"
                "unix_socket_directories = '%s'\n"
                "ssl = on\n"
                "ssl_min_protocol_version = 'TLSv1.2'\n"
                "password_encryption = 'scram-sha-256'\n"
                "shared_buffers = '16MB'\n"
                "max_connections = 20\n"
                "fsync = off\n" % (self.port, self.sockdir)
            )
        self._as_owner([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-l",
                        os.path.join(self.base, "server.log"), "-w", "-t", "30", "start"])
        # Test-only passwords, living as long as this throwaway cluster.
        self.psql("CREATE ROLE app LOGIN PASSWORD '%s'" % PASSWORD)
        self.psql("CREATE ROLE stranger LOGIN PASSWORD '%s'" % STRANGER_PASSWORD)
        self.psql("CREATE DATABASE appdb OWNER app")
        return self

    def set_ssl(self, on):
        self.psql("ALTER SYSTEM SET ssl = %s" % ("on" if on else "off"))
        self.psql("SELECT pg_reload_conf()")
        time.sleep(0.3)  # the postmaster applies SIGHUP asynchronously

    def stop(self):
        try:
            if os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
                self._as_owner([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir,
                                "-m", "immediate", "-w", "stop"])
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
