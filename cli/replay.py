"""`mxgate replay` and `retroscan`: re-scan recorded mail with other engines or policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cli.common import (
    JsonOpt,
    acting_as,
    fail,
    parse_time,
    progress,
    quiet_settings,
    run_name,
)
from mxgate.errors import ConfigError
from ops.operators import Action


def replay(
    start: Annotated[str, typer.Option("--from", help="Received at or after (ISO or 24h).")],
    end: Annotated[str, typer.Option("--to", help="Received at or before (ISO, now or 1h).")],
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's mail.")] = None,
    engines: Annotated[
        str | None,
        typer.Option(help="Comma-separated engines (default: each message's recorded ones)."),
    ] = None,
    policy: Annotated[
        Path | None, typer.Option(help="TOML policy for every tenant (default: their own).")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Run name: results go to mxgate.replay.NAME.")
    ] = None,
    redeliver: Annotated[
        bool, typer.Option(help="Deliver held mail the new decision would deliver; recorded.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-scan the messages received in a time range with other engines or another policy,
    write the decisions to mxgate.replay.NAME and print what would have changed, and why."""
    from ops.replay import load_policy
    from ops.replay import replay as run_replay

    s = quiet_settings()
    who = acting_as(s, Action.redeliver if redeliver else Action.read, tenant)
    run = name or run_name("replay")
    try:
        pol = load_policy(policy) if policy else None
        names = [e.strip() for e in engines.split(",") if e.strip()] if engines else None
        bar, update = progress(f"replay {run}")
        with bar:
            result = run_replay(
                s,
                parse_time(start),
                parse_time(end),
                run=run,
                tenant=tenant,
                engines=names,
                policy=pol,
                redeliver=redeliver,
                progress=update,
                by=who,
            )
    except ConfigError as e:
        raise fail(e) from None
    if as_json:
        d = result.as_dict()
        typer.echo(json.dumps(d, indent=2))
        return
    typer.echo(
        f"replay {run}: {len(result.replayed)} message(s) re-scanned into {result.topic}, "
        f"{len(result.changed)} would change"
    )
    for c in result.changed:
        typer.echo(
            f"  {c.message_id} {c.tenant}: {c.old_action} -> {c.new_action}  "
            f"was: {','.join(c.old_reasons) or '-'}  now: {','.join(c.new_reasons) or '-'}"
        )
    for m in result.missing:
        typer.echo(f"  {m}: no recorded decision to compare with")
    if result.redelivered:
        typer.echo(f"redelivered {len(result.redelivered)}: {', '.join(result.redelivered)}")


def retroscan(
    since: Annotated[str, typer.Option(help="Delivered mail received since (ISO or 24h).")],
    name: Annotated[str | None, typer.Option(help="Run name (replay topic suffix).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Rescan mail delivered since a time with today's engines and rules; emit a
    RetroscanAlert (mxgate.ops.v1) for each message that would now be held back."""
    from ops.replay import retroscan as run_retroscan

    s = quiet_settings()
    run = name or run_name("retroscan")
    try:
        bar, update = progress(f"retroscan {run}")
        with bar:
            result = run_retroscan(s, parse_time(since), run=run, progress=update)
    except ConfigError as e:
        raise fail(e) from None
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
        return
    typer.echo(
        f"retroscan {run}: {len(result.replayed)} delivered message(s) rescanned, "
        f"{len(result.alerts)} alert(s)"
    )
    for c in result.changed:
        typer.echo(f"  ALERT {c.message_id} {c.tenant}: now {c.new_action}: "
                   f"{','.join(c.new_reasons)}")  # fmt: skip
