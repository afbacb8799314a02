"""Tenants: the domains mxgate accepts mail for, where it goes, and the policy that decides.

Tenants live in one TOML file (``MXGATE_TENANTS_FILE``)::

    [tenants.example]
    domains = ["example.test"]
    route = { host = "127.0.0.1", port = 2526 }

    [tenants.example.policy]
    version = "2026-11-28.1"
    on_virus = "quarantine"
    spam_tag = 5.0
    spam_quarantine = 10.0
    spam_discard = inf              # TOML's infinity: never discard (the default)
    on_engine_error = "deliver"     # what a failed antivirus scan means: deliver | quarantine

A bad file raises :class:`mxgate.errors.ConfigError` naming the file and the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mxgate.errors import ConfigError

Action = Literal["deliver", "tag", "quarantine", "discard"]


class Route(BaseModel):
    """Next hop for a tenant's mail: the customer's own SMTP server."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    host: str
    port: int = Field(default=25, ge=1, le=65535)


class Policy(BaseModel):
    """A tenant's decision policy: data, not code. ``version`` is recorded in every decision."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    version: str = "1"
    on_virus: Action = "quarantine"
    on_content_match: Action = "quarantine"
    spam_tag: float = 5.0
    spam_quarantine: float = 10.0
    # Discarding loses mail for good, so it is off (infinite) unless a tenant sets a threshold.
    spam_discard: float = float("inf")
    on_engine_error: Literal["deliver", "quarantine"] = "deliver"
    engine_weights: dict[str, float] = Field(default_factory=dict)


class Tenant(BaseModel):
    """One customer: its domains, its route and its policy."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    domains: tuple[str, ...]
    route: Route
    policy: Policy = Policy()

    @field_validator("domains")
    @classmethod
    def _lower(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("a tenant needs at least one domain")
        return tuple(d.strip().lower().rstrip(".") for d in v)


class Tenants:
    """The tenant directory: looks tenants up by name and by recipient domain."""

    def __init__(self, tenants: list[Tenant]) -> None:
        self._by_name = {t.name: t for t in tenants}
        self._by_domain: dict[str, Tenant] = {}
        for t in tenants:
            for d in t.domains:
                self._by_domain[d] = t

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._by_name.values())

    def by_name(self, name: str) -> Tenant | None:
        """The tenant called ``name``, or None."""
        return self._by_name.get(name)

    def for_address(self, address: str) -> Tenant | None:
        """The tenant that owns the domain of ``address`` (case-insensitive), or None."""
        _, at, domain = address.rpartition("@")
        if not at:
            return None
        return self._by_domain.get(domain.lower().rstrip("."))

    @classmethod
    def load(cls, path: str | Path) -> Tenants:
        """Read and validate a tenants TOML file."""
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(str(p), "-", "file not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(str(p), "-", f"not valid TOML: {e}") from None
        return cls.from_mapping(data, source=str(p))

    @classmethod
    def from_mapping(cls, data: dict, source: str = "<tenants>") -> Tenants:
        """Validate an already-parsed mapping (the TOML document)."""
        raw = data.get("tenants")
        if not isinstance(raw, dict) or not raw:
            raise ConfigError(source, "tenants", "no [tenants.NAME] table")
        out: list[Tenant] = []
        seen: dict[str, str] = {}
        for name, body in raw.items():
            if not isinstance(body, dict):
                raise ConfigError(source, f"tenants.{name}", "must be a table")
            try:
                t = Tenant(name=name, **body)
            except ValidationError as e:
                err = e.errors()[0]
                loc = ".".join(str(x) for x in err["loc"])
                raise ConfigError(source, f"tenants.{name}.{loc}", err["msg"]) from None
            for d in t.domains:
                if d in seen:
                    raise ConfigError(
                        source, f"tenants.{name}.domains", f"{d} already belongs to {seen[d]}"
                    )
                seen[d] = name
            out.append(t)
        return cls(out)
