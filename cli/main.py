"""The one `mxgate` command: the top floor, which assembles the command groups.

Each group lives in its own module and registers itself here; the groups share only
:mod:`cli.common`, so no two command modules import each other.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cli import gc, replay, scoreboard, spam, stack, trace
from cli.deadletter import deadletter_app
from cli.engines import engines_app
from cli.quarantine import quarantine_app
from cli.topics import topics_app
from mxgate.kafka import IncompleteRead, KafkaUnavailable

app = typer.Typer(
    help="mxgate: inbound email security gateway.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"mxgate {version('mxgate')}")
        raise typer.Exit()


@app.callback()
def _root(
    _v: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """mxgate: inbound email security gateway."""


def main() -> None:
    """Entry point: a broker that is not configured or not reachable is one line, not a trace."""
    try:
        app()
    except IncompleteRead as e:
        typer.echo(f"error: {e}: the answer would be partial, so there is none", err=True)
        sys.exit(2)
    except KafkaUnavailable as e:
        typer.echo(
            f"error: {e}: start `mxgate up` in this directory (`make run`) or set "
            "MXGATE_KAFKA__BOOTSTRAP_SERVERS",
            err=True,
        )
        sys.exit(2)


stack.register(app)
app.add_typer(topics_app, name="topics")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(engines_app, name="engines")
app.add_typer(deadletter_app, name="deadletter")
app.command()(trace.trace)
app.command()(replay.replay)
app.command()(replay.retroscan)
app.command()(gc.gc)
app.add_typer(scoreboard.scoreboard_app, name="scoreboard")
spam.register(app)
