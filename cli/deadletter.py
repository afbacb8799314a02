"""`mxgate deadletter`: list, show and retry the records consumers set aside.

A consume loop dead-letters a record its handler kept failing on (after
``MXGATE_KAFKA__MAX_ATTEMPTS`` failed batches, then once alone) or bytes that are no event, on
``mxgate.deadletter.v1``. ``retry`` puts the original record back on its source topic once the
cause is fixed, recorded as ``DeadLetterRetried`` in the same transaction.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import JsonOpt, acting_as, echo_json, load_settings
from mxgate.settings import Settings
from ops.deadletter import Letter, index, matches, retry
from ops.operators import Action

deadletter_app = typer.Typer(
    help="Records consumers set aside: list, show, retry.", no_args_is_help=True
)


def _get(s: Settings, letter_id: str) -> Letter:
    letter = index(s).get(letter_id)
    if letter is None:
        typer.echo(f"error: no dead letter {letter_id} (ids are <topic>:<partition>:<offset>)",
                   err=True)  # fmt: skip
        raise typer.Exit(1)
    return letter


@deadletter_app.command("list")
def list_(
    topic: Annotated[
        str | None, typer.Option("--topic", help="Only those from this source topic.")
    ] = None,
    state: Annotated[str, typer.Option(help="dead | retried | all")] = "dead",
    as_json: JsonOpt = False,
) -> None:
    """List dead letters, oldest first (by default those not retried yet)."""
    s = load_settings()
    rows = [x for x in index(s).values() if matches(x, s, topic, state)]
    if as_json:
        echo_json([x.json() for x in rows])
        return
    for x in rows:
        d = x.letter
        typer.echo(f"{x.id}  {d.dead_lettered_at:%Y-%m-%d %H:%M}  {x.state:7} {d.cause:11} "
                   f"key={d.key} attempts={d.attempts}  {d.error[:80]}")  # fmt: skip
    typer.echo(f"{len(rows)} dead letter(s)", err=True)


@deadletter_app.command()
def show(letter_id: str, as_json: JsonOpt = False) -> None:
    """One dead letter: where it was, the error, and its original value (decoded if it can be)."""
    out = _get(load_settings(), letter_id).json(value=True)
    if as_json:
        echo_json(out)
        return
    for k, v in out.items():
        typer.echo(f"{k:17} {v}")


@deadletter_app.command("retry")
def retry_(
    letter_id: str,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "",
    again: Annotated[bool, typer.Option("--again", help="Retry one already retried.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Put a dead letter's original record back on its source topic (recorded who and why)."""
    s = load_settings()
    letter = _get(s, letter_id)
    if letter.state != "dead" and not again:
        typer.echo(f"error: {letter_id} was already retried (--again to retry it again)", err=True)
        raise typer.Exit(1)
    who = acting_as(s, Action.deadletter_retry)
    done = retry(s, letter, who, reason)
    if as_json:
        echo_json({"id": letter_id, "topic": done.topic, "key": done.key, "retried_by": who,
                   "state": "retried"})  # fmt: skip
    else:
        typer.echo(f"retried {letter_id}: back on {done.topic} (by {who})")
