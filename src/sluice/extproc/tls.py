"""TLS for the ext_proc server: `--cert-path` (tls.crt + tls.key) or a self-signed certificate.

Upstream serves TLS by default with a self-signed certificate, and gateways connect without
verifying it (the EPP is addressed by a Service inside the cluster). The certificate is made
with the `openssl` CLI because the `cryptography` package is not a Sluice dependency.
"""

from __future__ import annotations

import shutil
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
