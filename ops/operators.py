"""Who may do what: operator identities and the roles table scoped to tenants.

Every ops action (release, delete, report-spam, engine switch, replay with redelivery,
dead-letter retry) records who did it. The name is never free text from the command line: it is
the Kafka principal the tool authenticates as (SASL), and only without one the local account,
recorded as such (``unix:user@host``) so an audit can tell the two apart.

The roles table (``MXGATE_OPS__OPERATORS_FILE``, TOML) scopes what each may do::

    [operators."kafka:ops-alice"]
    role = "admin"                      # everything, every tenant

    [operators."kafka:acme-admin"]
    role = "tenant-admin"               # quarantine and reports, for these tenants only
    tenants = ["acme"]

    [operators."unix:root@mx1"]
    role = "read-only"                  # list, show, trace

Without a table every identity acts as admin (a single-host install where whoever has a shell
has the store and the brokers too); the README's security model says so.
"""

from __future__ import annotations

import getpass
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from mxgate.errors import ConfigError

__all__ = ["Action", "Identity", "NotAllowed", "Operator", "Operators", "Role", "identify"]


class Role(StrEnum):
    """What an operator may do (see :data:`_ALLOWED`)."""

    admin = "admin"
    tenant_admin = "tenant-admin"
    read_only = "read-only"


class Action(StrEnum):
    """An ops action that changes what happens to mail, or only reads."""

    read = "read"
    release = "release"
    delete = "delete"
    report_spam = "report-spam"
    digest = "digest"
    engine_switch = "engine-switch"
    redeliver = "redeliver"
    deadletter_retry = "deadletter-retry"


# Cluster-wide actions (engine switches, dead letters, replay) are the admin's alone: they act
# on every tenant's mail at once.
_ALLOWED: Mapping[Role, frozenset[Action]] = {
    Role.admin: frozenset(Action),
    Role.tenant_admin: frozenset(
        {Action.read, Action.release, Action.delete, Action.report_spam, Action.digest}
    ),
    Role.read_only: frozenset({Action.read}),
}


@dataclass(frozen=True, slots=True)
class Identity:
    """Who runs this tool: ``kafka:NAME`` when authenticated to the bus, else ``unix:user@host``."""

    name: str
    authenticated: bool


def identify(principal: str | None = None) -> Identity:
    """The identity of this process: the SASL ``principal`` if given, else the local account."""
    if principal:
        return Identity(f"kafka:{principal}", True)
    return Identity(f"unix:{getpass.getuser()}@{socket.gethostname()}", False)


@dataclass(frozen=True, slots=True)
class Operator:
    """One row of the roles table."""

    name: str
    role: Role
    tenants: frozenset[str] = frozenset()

    def may(self, action: Action, tenant: str | None) -> bool:
        """Whether this operator may do ``action`` (on ``tenant``'s mail, if it is scoped)."""
        if action not in _ALLOWED[self.role]:
            return False
        if self.role is Role.tenant_admin:
            return tenant is not None and tenant in self.tenants
        return True


class NotAllowed(Exception):
    """The identity may not do this; the message says who, what and on which tenant."""


@dataclass(frozen=True, slots=True)
class Operators:
    """The roles table; ``None`` rows means no table: everyone is admin."""

    rows: Mapping[str, Operator] | None

    @classmethod
    def load(cls, path: Path | None) -> Operators:
        """Read the table; a bad file is a :class:`ConfigError` naming the file and key."""
        if path is None:
            return cls(None)
        source = str(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(source, "-", "file not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(source, "-", f"not valid TOML: {e}") from None
        table = data.get("operators")
        if not isinstance(table, dict):
            raise ConfigError(source, "operators", "no [operators.NAME] table")
        rows: dict[str, Operator] = {}
        for name, row in table.items():
            key = f"operators.{name}"
            if not isinstance(row, dict):
                raise ConfigError(source, key, "must be a table")
            unknown = set(row) - {"role", "tenants"}
            if unknown:
                raise ConfigError(source, f"{key}.{sorted(unknown)[0]}", "unknown key")
            try:
                role = Role(str(row.get("role")))
            except ValueError:
                roles = ", ".join(r.value for r in Role)
                raise ConfigError(source, f"{key}.role", f"must be one of {roles}") from None
            tenants = row.get("tenants", [])
            if not isinstance(tenants, list) or not all(isinstance(t, str) for t in tenants):
                raise ConfigError(source, f"{key}.tenants", "must be a list of tenant names")
            if role is Role.tenant_admin and not tenants:
                raise ConfigError(source, f"{key}.tenants", "a tenant-admin needs its tenants")
            rows[name] = Operator(name, role, frozenset(tenants))
        return cls(rows)

    def authorize(self, who: Identity, action: Action, tenant: str | None = None) -> Operator:
        """The operator row that allows ``action``, or :class:`NotAllowed`."""
        if self.rows is None:
            return Operator(who.name, Role.admin)
        row = self.rows.get(who.name)
        if row is None:
            raise NotAllowed(f"{who.name} is not in the operators table")
        if not row.may(action, tenant):
            scope = f" on tenant {tenant}" if tenant else ""
            raise NotAllowed(f"{who.name} ({row.role.value}) may not {action.value}{scope}")
        return row
