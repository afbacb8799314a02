"""What every `mxgate` command group shares: settings loading, ``--json``, times, errors.

Nothing here imports another ``cli`` module, so the command modules never import each other in
a circle.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from devstack import runtime
from mxgate.errors import ConfigError
from mxgate.settings import Settings
from mxgate.timeutil import utcnow
from ops.operators import Action, NotAllowed, Operators, identify

__all__ = [
    "JsonOpt",
    "acting_as",
    "echo_json",
    "fail",
    "load_settings",
    "parse_time",
    "progress",
    "quiet_settings",
    "run_name",
    "time_opt",
]

_BOOTSTRAP = "MXGATE_KAFKA__BOOTSTRAP_SERVERS"
_PASSWORD = "MXGATE_KAFKA__SASL_PASSWORD"

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def load_settings() -> Settings:
    """Settings from the environment, or a clear error naming the bad key.

    A live `mxgate up` in this directory lends its choices (broker, clamd socket, paths) as
    defaults beneath the environment, so a second shell needs no MXGATE_* variables; with
    `up`'s own secured broker that includes the ops user, whose password is read from the
    private file `up` names (never from var/runtime.json).
    """
    # The CLI is the top of the tree: the one place that may fill the process environment.
    lent = runtime.load()
    own = os.environ.get(_BOOTSTRAP)
    for key, value in lent.items():
        # A shell pointed at another cluster takes none of `up`'s broker settings (security).
        if own and own != lent.get(_BOOTSTRAP) and key.startswith("MXGATE_KAFKA__"):
            continue
        os.environ.setdefault(key, value)
    if not os.environ.get(_PASSWORD):
        secret = runtime.password(
            os.environ.get("MXGATE_KAFKA__SASL_USERNAME", ""),
            os.environ.get(_BOOTSTRAP, ""),
        )
        if secret is not None:
            os.environ[_PASSWORD] = secret
    try:
        return Settings()
    except ValidationError as e:
        err = e.errors()[0]
        key = "MXGATE_" + "__".join(str(x).upper() for x in err["loc"])
        typer.echo(f"error: environment: {key}: {err['msg']}", err=True)
        raise typer.Exit(2) from None


def quiet_settings() -> Settings:
    """Settings, with logs on stderr at warning level: stdout is for the answer (``--json``)."""
    s = load_settings()
    from mxgate.logs import configure

    configure("warning" if s.log_level == "info" else s.log_level, s.log_json)
    return s


def acting_as(settings: Settings, action: Action, tenant: str | None = None) -> str:
    """The recorded name of whoever runs this command, once the roles table allows ``action``
    (on ``tenant``'s mail); exit 3 with who, what and where when it does not."""
    who = identify(settings.kafka.sasl_username or None)
    try:
        Operators.load(settings.ops.operators_file).authorize(who, action, tenant)
    except ConfigError as e:
        raise fail(e) from None
    except NotAllowed as e:
        typer.echo(f"error: not allowed: {e}", err=True)
        raise typer.Exit(3) from None
    return who.name


def fail(e: Exception) -> typer.Exit:
    """One ``error: ...`` line on stderr; raise the returned exit (status 2)."""
    typer.echo(f"error: {e}", err=True)
    return typer.Exit(2)


def echo_json(value: Any) -> None:
    """``value`` as indented JSON on stdout (times and paths as strings)."""
    typer.echo(json.dumps(value, indent=2, default=str))


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``24h``/``30m``/``7d`` (that long before now), ``now``, or an ISO 8601 time (UTC if it
    names no zone)."""
    now = now or utcnow()
    text = text.strip()
    if text == "now":
        return now
    m = _DURATION.match(text)
    if m:
        return now - dt.timedelta(seconds=float(m.group(1)) * _UNIT[m.group(2)])
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: not a time (ISO 8601, 'now', or e.g. 24h)") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def time_opt(value: str | None) -> dt.datetime | None:
    """:func:`parse_time` of an optional option."""
    return parse_time(value) if value else None


def run_name(prefix: str) -> str:
    """A run name stamped with the current UTC time, e.g. ``replay-20261202T150000Z``."""
    return f"{prefix}-{utcnow().strftime('%Y%m%dT%H%M%SZ')}"


def progress(label: str) -> Any:
    """A rich progress bar on stderr (ops watch long runs); returns (context, callback)."""
    from rich.console import Console
    from rich.progress import Progress

    bar = Progress(console=Console(stderr=True), transient=True)
    task = bar.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return bar, update
