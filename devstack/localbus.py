"""`mxgate up`'s own Kafka broker, secured as production's should be: SASL_SSL and ACLs on.

At first start this makes, under the workdir, a certificate authority and a broker certificate
signed by it (``kafka-tls/``), and a random SCRAM-SHA-512 password for the broker's super user
and for every role of the ACL catalog (``secrets/kafka-users.json``, mode 0600, see
:mod:`devstack.passwords`); later starts reuse them. The broker runs the StandardAuthorizer with
``allow.everyone.if.no.acl.found=false`` and gets the catalog's ACLs, so each role process,
started with its own user (:meth:`LocalBus.role_env`), can do what it needs and nothing more::

    bus = LocalBus(Path("var"))
    servers = bus.start()
    bus.grant(bus.admin(settings.kafka), retry_tiers=4)
    env = base_env | {"MXGATE_KAFKA__BOOTSTRAP_SERVERS": servers} | bus.role_env("receiver")

A broker of the workdir formatted without these users (a PLAINTEXT `up` of an older mxgate,
or a removed passwords file) cannot let them in: its folder is moved aside and a new broker
formatted, and :attr:`LocalBus.retired` says where the old one went.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import os
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import SecretStr

from devstack import passwords
from devstack.kafka import BrokerSecurity, LocalKafka
from mxgate import catalog
from mxgate.settings import KafkaSettings

__all__ = ["ADMIN", "LocalBus", "ensure_broker_tls", "user"]

ADMIN = "admin"
"""The broker's super user: inter-broker traffic, and `up` creating topics and ACLs."""

MECHANISM = "SCRAM-SHA-512"
_VALID_DAYS = 3650
_MARKER = "scram-users.sha256"


def user(role: str) -> str:
    """The SASL user of a catalog role (its principal is :func:`mxgate.catalog.principal`)."""
    return catalog.principal(role).removeprefix("User:")


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file that is mode 0600 from the moment it exists."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _new_ca(
    directory: Path, now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed root that may sign server certificates (and nothing below them)."""
    # EC keys: an RSA key costs noticeable CPU on a small machine, and both ends support P-256.
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mxgate local Kafka CA")])
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(directory / "ca.key", _key_pem(key))
    (directory / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _host_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def ensure_broker_tls(directory: Path, host: str) -> tuple[Path, Path, Path]:
    """``(ca_file, cert_file, key_file)`` in ``directory``: the existing ones, or a new CA and
    a broker certificate for ``host`` signed by it (both ends check the host name)."""
    ca_file, cert_file, key_file = (directory / n for n in ("ca.pem", "broker.pem", "broker.key"))
    if ca_file.exists() and cert_file.exists() and key_file.exists():
        return ca_file, cert_file, key_file
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_file.read_bytes())
        ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise ValueError("not an EC key")
    except (OSError, ValueError):
        # No usable CA: a new one, and with it a new broker certificate below.
        ca_cert, ca_key = _new_ca(directory, now)
    key = ec.generate_private_key(ec.SECP256R1())
    names = {_host_name(host), x509.DNSName("localhost")}
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(sorted(names, key=str)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            # The brokers are clients of each other too (inter-broker SASL_SSL).
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    # Key first, certificate last: the three files are whole once all exist.
    _write_private(key_file, _key_pem(key))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ca_file, cert_file, key_file


def _digest(users: dict[str, str]) -> str:
    """What the broker's storage was formatted with, without keeping the passwords twice."""
    return hashlib.sha256(json.dumps(sorted(users.items())).encode()).hexdigest()


class LocalBus:
    """A one-broker SASL_SSL cluster in ``workdir/kafka`` with a user for every catalog role.

    Construction makes (or reuses) the CA, the broker certificate and the passwords; nothing
    runs until :meth:`start`.
    """

    def __init__(self, workdir: Path, host: str = "127.0.0.1") -> None:
        """Prepare the TLS files and passwords under ``workdir``; start nothing."""
        self.workdir = Path(workdir).resolve()
        self.ca_file, cert, key = ensure_broker_tls(self.workdir / "kafka-tls", host)
        self.secrets_file = self.workdir / "secrets" / "kafka-users.json"
        users = [ADMIN, *(user(r) for r in catalog.ROLES)]
        self._passwords = passwords.ensure(self.secrets_file, users)
        self.kafka = LocalKafka(
            self.workdir / "kafka",
            host=host,
            security=BrokerSecurity(self.ca_file, cert, key, self._passwords, admin=ADMIN),
        )
        self.retired: Path | None = None

    def start(self, timeout: float = 120) -> str:
        """Start the broker (formatting it with the users when new); return bootstrap servers."""
        self.retired = self._retire_foreign_storage()
        kdir = self.kafka.workdir
        if not (kdir / "broker-0" / "data" / "meta.properties").exists():
            kdir.mkdir(parents=True, exist_ok=True)
            (kdir / _MARKER).write_text(_digest(self._passwords) + "\n")
        return self.kafka.start(timeout)

    def stop(self) -> None:
        """Stop the broker (safe to call twice)."""
        self.kafka.stop()

    def _retire_foreign_storage(self) -> Path | None:
        """Move aside a broker folder whose storage was not formatted with these users."""
        kdir = self.kafka.workdir
        if not (kdir / "broker-0" / "data" / "meta.properties").exists():
            return None
        try:
            if (kdir / _MARKER).read_text().strip() == _digest(self._passwords):
                return None
        except OSError:
            pass
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        aside = kdir.with_name(f"{kdir.name}.retired-{stamp}")
        kdir.rename(aside)
        return aside

    def role_env(self, role: str) -> dict[str, str]:
        """The MXGATE_KAFKA__* variables that make a process connect as ``role``'s user."""
        name = user(role)
        return {
            "MXGATE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "MXGATE_KAFKA__SASL_MECHANISM": MECHANISM,
            "MXGATE_KAFKA__SASL_USERNAME": name,
            "MXGATE_KAFKA__SASL_PASSWORD": self._passwords[name],
            "MXGATE_KAFKA__SSL_CA_LOCATION": str(self.ca_file),
        }

    def admin(self, settings: KafkaSettings) -> KafkaSettings:
        """``settings`` reaching this broker as its super user (topics and ACLs)."""
        return self._as_user(settings, ADMIN)

    def as_role(self, settings: KafkaSettings, role: str) -> KafkaSettings:
        """``settings`` reaching this broker as ``role``'s user: what :meth:`role_env` gives a
        process, for a client in this one (the tests' per-role probes)."""
        return self._as_user(settings, user(role))

    def _as_user(self, settings: KafkaSettings, name: str) -> KafkaSettings:
        return settings.model_copy(
            update={
                "bootstrap_servers": self.kafka.bootstrap_servers,
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": MECHANISM,
                "sasl_username": name,
                "sasl_password": SecretStr(self._passwords[name]),
                "ssl_ca_location": self.ca_file,
            }
        )

    def grant(self, admin: KafkaSettings, retry_tiers: int, timeout: float = 60) -> int:
        """Create the catalog's ACLs and wait until the broker enforces them; return how many.

        A role started before its ACLs reach the broker's authorizer would fail its first
        group join or transaction for good, so this returns only once every rule is listed.
        """
        from confluent_kafka.admin import (
            AclBindingFilter,
            AclOperation,
            AclPermissionType,
            AdminClient,
            ResourcePatternType,
            ResourceType,
        )

        from mxgate.kafka import base_config, create_acls

        rules = catalog.acls(admin.topic_prefix, admin.group_prefix, retry_tiers)
        create_acls(admin, rules)
        client = AdminClient(base_config(admin) | {"log_level": 2})
        # None matches any name, principal and host (the stubs say str).
        every = AclBindingFilter(
            ResourceType.ANY, None, ResourcePatternType.ANY, None, None,  # type: ignore[arg-type]
            AclOperation.ANY, AclPermissionType.ANY,
        )  # fmt: skip
        wanted = set(rules)
        deadline = time.monotonic() + timeout
        while True:
            seen = {
                catalog.Acl(
                    b.principal,
                    "CLUSTER" if b.restype.name == "BROKER" else b.restype.name,
                    b.resource_pattern_type.name,
                    b.name,
                    b.operation.name,
                )
                for b in client.describe_acls(every).result()
                if b.permission_type is AclPermissionType.ALLOW
            }
            if wanted <= seen:
                return len(rules)
            if time.monotonic() > deadline:
                missing = sorted(a.line() for a in wanted - seen)
                raise TimeoutError(f"ACLs not enforced by the broker in time: {missing[:5]}")
            time.sleep(0.2)
