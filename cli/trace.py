"""`mxgate trace`: one message's history, or the messages a search matches."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.common import JsonOpt, fail, quiet_settings, time_opt


def trace(
    message_id: Annotated[str | None, typer.Argument(help="mxgate message ID.")] = None,
    message_id_header: Annotated[
        str | None, typer.Option("--message-id-header", help="Message-ID header, exactly.")
    ] = None,
    sender: Annotated[str | None, typer.Option(help="Envelope sender ('' for <>).")] = None,
    recipient: Annotated[str | None, typer.Option(help="Envelope recipient.")] = None,
    since: Annotated[str | None, typer.Option(help="Received at or after (ISO or 24h).")] = None,
    until: Annotated[str | None, typer.Option(help="Received at or before (ISO or 1h).")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's mail.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a message's history (received, verdicts, action, attempts, quarantine, release,
    control events), or, with search options, the messages that match (through the index)."""
    from ops.trace import history, render

    s = quiet_settings()
    searching = any(
        x is not None for x in (message_id_header, sender, recipient, since, until, tenant)
    )
    if not searching:
        if message_id is None:
            raise fail(ValueError("give a message ID or a search option (see --help)"))
        h = history(s, message_id)
        typer.echo(json.dumps(h, indent=2) if as_json else render(h))
        if h["outcome"] == "unknown":
            raise typer.Exit(1)
        return
    from ops.index import MessageIndex, Query

    q = Query(
        message_id=message_id,
        header_message_id=message_id_header,
        sender=sender,
        recipient=recipient,
        since=time_opt(since),
        until=time_opt(until),
        tenant=tenant,
    )
    with MessageIndex(s) as index:
        index.refresh()
        found = index.find(q)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
    else:
        for m in found:
            typer.echo(
                f"{m['message_id']}  {m.get('received_at', '?')}  {m.get('tenant', '?')}  "
                f"<{m.get('mail_from', '')}> -> {','.join(m.get('rcpt_to', []))}  "
                f"{m.get('action', 'undecided')}  {m.get('header_message_id') or '-'}"
            )
    if not found:
        raise typer.Exit(1)
