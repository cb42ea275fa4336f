"""TLS for the ext_proc server: `--cert-path` (tls.crt + tls.key) or a self-signed certificate,
and `--enable-cert-reload`: a rotated pair is served to new connections without a restart.

Upstream serves TLS by default with a self-signed certificate, and gateways connect without
verifying it (the EPP is addressed by a Service inside the cluster). The certificate is made
with the `openssl` CLI because the `cryptography` package is not a Sluice dependency.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path

import grpc

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"


class TlsUnavailable(RuntimeError):
    """Neither a certificate directory nor a way to generate one."""


def load_pair(cert_path: Path) -> tuple[bytes, bytes]:
    """(certificate chain PEM, private key PEM) from a directory such as a mounted Secret."""
    return (cert_path / CERT_FILE).read_bytes(), (cert_path / KEY_FILE).read_bytes()


def self_signed_pair(common_name: str = "sluice-epp", days: int = 3650) -> tuple[bytes, bytes]:
    """A fresh self-signed ECDSA P-256 certificate and key (PEM)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TlsUnavailable(
            "secure serving needs --cert-path or the `openssl` CLI to generate a certificate; "
            "pass --no-secure-serving to serve plaintext"
        )
    with tempfile.TemporaryDirectory(prefix="sluice-tls-") as tmp:
        key, crt = Path(tmp) / KEY_FILE, Path(tmp) / CERT_FILE
        subprocess.run(
            [
                openssl, "req", "-x509", "-nodes", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-keyout", str(key), "-out", str(crt), "-days", str(days),
                "-subj", f"/CN={common_name}",
                "-addext", f"subjectAltName=DNS:{common_name},DNS:localhost,IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        return crt.read_bytes(), key.read_bytes()


def server_credentials(cert_path: Path | None) -> grpc.ServerCredentials:
    cert, key = load_pair(cert_path) if cert_path is not None else self_signed_pair()
    return grpc.ssl_server_credentials([(key, cert)])


def _signature(cert_path: Path) -> tuple[int, ...]:
    # A Kubernetes Secret rotates by swapping a symlink: stat follows it, so inode and mtime move.
    out: list[int] = []
    for name in (CERT_FILE, KEY_FILE):
        st = (cert_path / name).stat()
        out += [st.st_ino, st.st_mtime_ns, st.st_size]
    return tuple(out)


class CertificateWatch:
    """The pair in `cert_path`, taken again when its files change and the new pair loads (a
    half-written rotation, cert and key not matching yet, is left for the next look)."""

    def __init__(self, cert_path: Path) -> None:
        self.cert_path = cert_path
        self._seen = _signature(cert_path)

    def changed_pair(self) -> tuple[bytes, bytes] | None:
        """(cert, key) PEM when the files changed since the last pair taken and form a valid
        pair; None otherwise."""
        try:
            seen = _signature(self.cert_path)
            if seen == self._seen:
                return None
            check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            check.load_cert_chain(self.cert_path / CERT_FILE, self.cert_path / KEY_FILE)
            pair = load_pair(self.cert_path)
        except (OSError, ssl.SSLError):
            return None
        self._seen = seen
        return pair


def reloading_server_credentials(cert_path: Path) -> grpc.ServerCredentials:
    """grpc.aio credentials that look at the files before every new connection's handshake."""
    cert, key = load_pair(cert_path)
    watch = CertificateWatch(cert_path)

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        pair = watch.changed_pair()
        return None if pair is None else grpc.ssl_server_certificate_configuration([pair[::-1]])

    return grpc.dynamic_ssl_server_credentials(
        grpc.ssl_server_certificate_configuration([(key, cert)]), fetch
    )
