"""`mxgate gc`: delete bodies that no retained event references."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.common import JsonOpt, quiet_settings


def gc(
    dry_run: Annotated[bool, typer.Option(help="Report only; delete, remember nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete bodies no retained event references any more (never a quarantined one), once
    they have stayed unreferenced for MXGATE_OPS__GC_GRACE seconds.

    If the topics could not be read completely, nothing is deleted, the reasons are printed
    ("complete": false and "incomplete" with --json) and the exit status is 1."""
    from ops.gc import collect

    result = collect(quiet_settings(), dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
        if result.incomplete:
            raise typer.Exit(1)
        return
    if result.incomplete:
        typer.echo(
            f"{result.listed} bodies: the topics were not read completely, deleted nothing:",
            err=True,
        )
        for why in result.incomplete:
            typer.echo(f"  {why}", err=True)
        raise typer.Exit(1)
    verb = "would delete" if dry_run else "deleted"
    typer.echo(
        f"{result.listed} bodies: {result.referenced} referenced "
        f"({len(result.quarantined)} in quarantine), {len(result.waiting)} waiting out the "
        f"grace period, {verb} {len(result.deleted)}"
    )
