"""Test helpers for sender authentication: DNS records in the test server's shape, DKIM keys."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

__all__ = ["DkimKey", "ed25519_key", "rsa_key", "served"]


def served(zones: dict[str, list[tuple[str, str]]]) -> dict[str, dict[str, list[str]]]:
    """``{name: [(type, text)]}`` as ``DnsServer`` records: TXT quoted, in 255-octet strings."""
    out: dict[str, dict[str, list[str]]] = {}
    for name, recs in zones.items():
        node = out.setdefault(name, {})
        for rtype, text in recs:
            if rtype == "TXT":
                text = " ".join(f'"{text[i : i + 255]}"' for i in range(0, max(len(text), 1), 255))
            node.setdefault(rtype, []).append(text)
    return out


@dataclass(frozen=True)
class DkimKey:
    """A signing key as dkimpy wants it, and its DNS TXT record."""

    private: bytes
    record: str
    algorithm: bytes


def rsa_key(bits: int = 2048) -> DkimKey:
    """A fresh RSA key (PEM private key, ``k=rsa`` record)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return DkimKey(pem, f"v=DKIM1; k=rsa; p={base64.b64encode(pub).decode()}", b"rsa-sha256")


def ed25519_key() -> DkimKey:
    """A fresh Ed25519 key (RFC 8463: base64 seed, ``k=ed25519`` record of the raw key)."""
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return DkimKey(
        base64.b64encode(seed),
        f"v=DKIM1; k=ed25519; p={base64.b64encode(pub).decode()}",
        b"ed25519-sha256",
    )
