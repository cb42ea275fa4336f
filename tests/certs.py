"""Certificates made in the test, with `cryptography`: a CA, and server pairs it signs or that
sign themselves, valid for 127.0.0.1 and localhost."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Pair:
    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, cert: str = "tls.crt", key: str = "tls.key") -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / cert).write_bytes(self.cert_pem)
        (directory / key).write_bytes(self.key_pem)
        return directory


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pair(
    common_name: str, *, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None
) -> tuple[Pair, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A server certificate for 127.0.0.1/localhost, signed by `issuer` or by itself; `issuer`
    None with common name ending in "CA" makes a CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    is_ca = issuer is None and common_name.endswith("CA")
    signer_cert, signer_key = issuer if issuer is not None else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(signer_cert.subject if signer_cert is not None else _name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if not is_ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(signer_key, hashes.SHA256())
    pair = Pair(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return pair, cert, key


def common_name(cert_der: bytes) -> str:
    """The subject CN of a DER certificate (what a TLS peer presented)."""
    cert = x509.load_der_x509_certificate(cert_der)
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
