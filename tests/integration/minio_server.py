"""A real MinIO server on loopback for integration tests: the binary from scripts/build-minio.sh,
a random free port, a temporary data directory, generated root credentials, and optionally
TLS with a throwaway CA made with `cryptography`. Stopped when the test session ends."""

import datetime
import ipaddress
import os
import secrets
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def minio_binary():
    """The cached MinIO build; build it once (through the Go proxy) when it is missing."""
    cache = Path(os.environ.get("MLFLOW_STACK_CACHE", Path.home() / ".cache" / "mlflow-stack"))
    binary = cache / "minio" / "current" / "minio"
    if not binary.exists() and os.environ.get("MINIO_TEST_NO_BUILD") != "1":
        subprocess.run([str(ROOT / "scripts" / "build-minio.sh")], check=False, stdout=subprocess.DEVNULL)
    return binary if binary.exists() else None


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_ca_and_server_cert(certs_dir, names=("localhost",), ips=()):
    """Write a CA and a server certificate in MinIO's certs-dir layout; return the CA path."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "s3_bucket_check test CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    certs_dir = Path(certs_dir)
    (certs_dir / "CAs").mkdir(parents=True, exist_ok=True)
    (certs_dir / "private.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.chmod(certs_dir / "private.key", 0o600)
    (certs_dir / "public.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    ca_path = certs_dir / "CAs" / "ca.crt"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return ca_path


class MinioServer:
    """One MinIO process. ``endpoint`` is host:port, ``url`` has the scheme."""

    def __init__(self, binary, workdir, tls=False):
        self.binary = binary
        self.workdir = Path(workdir)
        self.tls = tls
        self.port = free_port()
        self.console_port = free_port()
        self.root_user = "root-" + secrets.token_hex(4)
        self.root_password = secrets.token_urlsafe(24)
        self.ca_path = None
        self.proc = None
        self.log = self.workdir / "minio.log"

    @property
    def endpoint(self):
        return "127.0.0.1:%d" % self.port

    @property
    def url(self):
        # The TLS certificate names only "localhost", so a URL with the IP proves name checking.
        return "https://localhost:%d" % self.port if self.tls else "http://" + self.endpoint

    def start(self, timeout=30):
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        cmd = [str(self.binary), "server", "--quiet", "--address", self.endpoint,
               "--console-address", "127.0.0.1:%d" % self.console_port]
        if self.tls:
            certs = self.workdir / "certs"
            self.ca_path = make_ca_and_server_cert(certs)
            cmd += ["--certs-dir", str(certs)]
        cmd.append(str(data))
        # Credentials travel in the environment, never on the command line.
        env = dict(os.environ, MINIO_ROOT_USER=self.root_user, MINIO_ROOT_PASSWORD=self.root_password,
                   MINIO_BROWSER="off", MINIO_UPDATE="off", HOME=str(self.workdir))
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        self._wait_live(timeout)
        return self

    def _wait_live(self, timeout):
        context = ssl.create_default_context(cafile=str(self.ca_path)) if self.tls else None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("minio exited with %s:\n%s" % (self.proc.returncode, self.log.read_text()))
            try:
                with urllib.request.urlopen(self.url + "/minio/health/live", timeout=2, context=context) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("minio did not become live within %ss:\n%s" % (timeout, self.log.read_text()))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def clients(self):
        """(Minio, MinioAdmin) clients with the root credentials."""
        import urllib3
        from minio import Minio, MinioAdmin
        from minio.credentials import StaticProvider

        http = urllib3.PoolManager(ca_certs=str(self.ca_path)) if self.tls else None
        endpoint = "localhost:%d" % self.port if self.tls else self.endpoint
        s3 = Minio(endpoint, access_key=self.root_user, secret_key=self.root_password,
                   secure=self.tls, http_client=http)
        admin = MinioAdmin(endpoint=endpoint, credentials=StaticProvider(self.root_user, self.root_password),
                           secure=self.tls, http_client=http)
        return s3, admin


def bucket_policy(buckets, write=True):
    """IAM policy allowing only ``buckets`` (read-write or read-only)."""
    object_actions = ["s3:GetObject"] + (["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                                          "s3:ListMultipartUploadParts"] if write else [])
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"],
             "Resource": ["arn:aws:s3:::%s" % b for b in buckets]},
            {"Effect": "Allow", "Action": object_actions, "Resource": ["arn:aws:s3:::%s/*" % b for b in buckets]},
        ],
    }
