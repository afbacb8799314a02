"""The tests' Kafka as production runs it: SASL_SSL, SCRAM-SHA-512, a generated CA, ACLs on.

The session broker is :class:`devstack.localbus.LocalBus`, the one `mxgate up` runs: a user for
every catalog role and the StandardAuthorizer with ``allow.everyone.if.no.acl.found=false``.
A test isolates itself with its own topic and group prefix, and :meth:`Bus.grant` gives each
role the catalog's least-privilege rules on exactly that prefix (:func:`mxgate.catalog.acls`,
what `mxgate topics acl` prints), so a pipeline's receiver, scanner and deliverer each run as
their own principal with only their own rights, and any rule the code outgrows fails the test::

    bus = Bus.secured(workdir)                   # or the session fixture ``kafka``
    ks = bus.settings("admin", topic_prefix=p)   # test code: the super user
    bus.grant(p, f"g{p}", retry_tiers=3)         # the roles' ACLs on this test's topics
    env = bus.env("receiver")                    # a role process: its own user

An open bus (:meth:`Bus.open`: docker compose's PLAINTEXT broker, or a broker a test starts
for something else) has no users: every role gets plain settings and :meth:`Bus.grant` does
nothing, so the same test runs there unsecured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devstack.localbus import ADMIN, LocalBus
from mxgate.settings import KafkaSettings

__all__ = ["Bus"]


class Bus:
    """One broker (cluster) and how each role reaches it.

    ``role`` is a catalog role (``receiver``, ``scanner``, ``deliverer``, ``ops``,
    ``data-reader``) or ``"admin"``, the broker's super user, for test code that sets the
    stage (creating topics, writing fixtures, reading what happened).
    """

    def __init__(self, bootstrap_servers: str, local: LocalBus | None = None) -> None:
        """A bus at ``bootstrap_servers``; ``local`` holds the users of a secured one."""
        self.bootstrap_servers = bootstrap_servers
        self.local = local

    @classmethod
    def secured(cls, workdir: Path) -> Bus:
        """Start a secured one-broker bus in ``workdir`` (new CA, certificate and passwords)."""
        local = LocalBus(workdir)
        return cls(local.start(), local)

    @classmethod
    def open(cls, bootstrap_servers: str) -> Bus:
        """A PLAINTEXT broker with no authorizer (every role reaches it the same way)."""
        return cls(bootstrap_servers)

    @property
    def is_secured(self) -> bool:
        """True when clients need their role's credentials and ACLs are enforced."""
        return self.local is not None

    @property
    def ca_file(self) -> Path | None:
        """The CA the broker's certificate is checked against (None on an open bus)."""
        return self.local.ca_file if self.local is not None else None

    def settings(self, role: str = ADMIN, **fields: Any) -> KafkaSettings:
        """KafkaSettings reaching this bus as ``role`` (``fields``: the other settings, e.g.
        ``topic_prefix``); the password is a SecretStr."""
        base = KafkaSettings(bootstrap_servers=self.bootstrap_servers, **fields)
        return self.as_role(base, role)

    def as_role(self, settings: KafkaSettings, role: str) -> KafkaSettings:
        """``settings`` (prefixes, timeouts ...) reaching this bus as ``role`` instead."""
        if self.local is None:
            return settings.model_copy(update={"bootstrap_servers": self.bootstrap_servers})
        if role == ADMIN:
            return self.local.admin(settings)
        return self.local.as_role(settings, role)

    def env(self, role: str) -> dict[str, str]:
        """The MXGATE_KAFKA__* variables of a process running as ``role`` (with the bootstrap
        servers); on an open bus only the bootstrap servers."""
        env = {"MXGATE_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap_servers}
        if self.local is None:
            return env
        if role == ADMIN:
            raise ValueError("processes run as a role; only test code acts as the super user")
        return env | self.local.role_env(role)

    def grant(self, topic_prefix: str, group_prefix: str, retry_tiers: int) -> int:
        """Give every role the catalog's ACLs on ``topic_prefix``'s topics and
        ``group_prefix``'s groups and wait until the broker enforces them; return how many
        (0 on an open bus)."""
        if self.local is None:
            return 0
        admin = self.settings(ADMIN, topic_prefix=topic_prefix, group_prefix=group_prefix)
        return self.local.grant(admin, retry_tiers)

    def start(self) -> None:
        """Start a stopped secured bus again (same port, users and data)."""
        if self.local is None:
            raise RuntimeError("an open bus is not ours to start")
        self.local.start()

    def stop(self) -> None:
        """Stop the broker this bus started (nothing for an open bus)."""
        if self.local is not None:
            self.local.stop()
