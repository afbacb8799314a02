"""Factories for what most tests build: tenants files, settings, pipelines.

One place says what a test tenant looks like and how a test isolates itself on a shared broker
(its own topic and group prefix, its own store and state directories), so a test states only
what differs.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from mxgate.settings import KafkaSettings, Settings, StoreSettings
from support.bus import Bus

# The ``recipients`` table of a tenant that opted out of verification at RCPT: for tests whose
# route cannot answer a callout (nothing listens there, or the test stops it while mail
# still arrives), which would otherwise get 451 4.4.1 at RCPT.
NO_VERIFICATION = '{ mode = "none" }'


def tenants_toml(
    example_port: int,
    other_port: int | None = None,
    *,
    example_extra: str = "",
    policy_version: str | None = "test-1",
    recipients: str | None = None,
) -> str:
    """The test tenants: ``example`` (example.test) and ``other`` (other.test), each routed to a
    capture server on loopback. ``example_extra``: TOML lines added to ``example``'s table.
    ``recipients``: both tenants' ``recipients`` table (an inline TOML table such as
    :data:`NO_VERIFICATION`); None leaves it out, so both verify by callout (the default)."""
    other = example_port if other_port is None else other_port
    policy = f'[tenants.example.policy]\nversion = "{policy_version}"\n' if policy_version else ""
    check = f"recipients = {recipients}\n" if recipients is not None else ""
    return (
        "[tenants.example]\n"
        'domains = ["example.test"]\n'
        f'route = {{ host = "127.0.0.1", port = {example_port} }}\n'
        f"{check}"
        f"{example_extra}\n"
        f"{policy}"
        "[tenants.other]\n"
        'domains = ["other.test"]\n'
        f'route = {{ host = "127.0.0.1", port = {other} }}\n'
        f"{check}"
    )


def write_tenants(folder: Path, text: str) -> Path:
    """``text`` as ``folder/tenants.toml``; returns the path."""
    path = folder / "tenants.toml"
    path.write_text(text)
    return path


def prefix() -> str:
    """A topic prefix of its own, so tests share one broker without seeing each other."""
    return f"t{uuid.uuid4().hex[:10]}."


def settings(folder: Path, bus: Bus | str = "", **sections: Any) -> Settings:
    """Settings for one test: its own topic prefix, store and tenants file under ``folder``;
    ``sections`` replace whole sections or top-level values (``receiver=ReceiverSettings(...)``).
    ``bus``: the broker, reached as its super user (test code setting the stage), or a
    bootstrap string (an open broker, or none).
    """
    tenants = folder / "tenants.toml"
    if not tenants.exists():
        # Port 1: nothing listens, so nothing can be verified there either.
        write_tenants(folder, tenants_toml(1, recipients=NO_VERIFICATION))
    base: dict[str, Any] = {
        "tenants_file": tenants,
        "kafka": bus.settings(topic_prefix=prefix())
        if isinstance(bus, Bus)
        else KafkaSettings(bootstrap_servers=bus, topic_prefix=prefix()),
        "store": StoreSettings(path=folder / "store"),
    }
    return Settings(**(base | sections))
