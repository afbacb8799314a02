"""A self-signed STARTTLS certificate made at first start, as distributions do for Postfix.

Opportunistic STARTTLS between MTAs does not verify certificates (RFC 7435), so a self-signed
pair already protects mail from passive eavesdropping; an operator replaces the two files with
a CA-issued pair (or points ``MXGATE_RECEIVER__TLS_CERT``/``TLS_KEY`` elsewhere) and the
receiver picks it up without a restart.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["ensure_self_signed"]

_VALID_DAYS = 3650  # like Debian's ssl-cert snakeoil pair


def ensure_self_signed(directory: Path, hostname: str) -> tuple[Path, Path]:
    """``(cert, key)`` in ``directory``: the existing pair, or a new self-signed one."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    if cert.exists() and key.exists():
        return cert, key
    directory.mkdir(parents=True, exist_ok=True)
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(private, hashes.SHA256())
    )
    key_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # The key is written private first; the certificate last, so a pair is whole once both exist.
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert, key
