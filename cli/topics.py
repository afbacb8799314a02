"""`mxgate topics create|list`: the Kafka topics of the catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import JsonOpt, echo_json, load_settings
from mxgate import catalog

topics_app = typer.Typer(help="Kafka topics of the catalog.", no_args_is_help=True)


@topics_app.command("create")
def topics_create(as_json: JsonOpt = False) -> None:
    """Create every topic of the catalog that does not exist yet."""
    from mxgate.kafka import create_topics

    s = load_settings()
    made = create_topics(s.kafka, catalog.all_topics(len(s.deliverer.retry_schedule)))
    if as_json:
        echo_json({"created": made})
    else:
        typer.echo(f"created {len(made)} topic(s): {', '.join(made) or '-'}")


@topics_app.command("list")
def topics_list(as_json: JsonOpt = False) -> None:
    """Show the catalog: name, events, retention and purpose of each topic."""
    s = load_settings()
    rows = [
        {
            "name": catalog.name(t, s.kafka.topic_prefix),
            "events": list(t.events),
            "retention_ms": t.retention_ms,
            "compacted": t.compacted,
            "doc": t.doc,
        }
        for t in catalog.all_topics(len(s.deliverer.retry_schedule))
    ]
    if as_json:
        echo_json(rows)
    else:
        for r in rows:
            days = int(str(r["retention_ms"])) // 86_400_000
            typer.echo(f"{r['name']:40} {days:>3}d  {r['doc']}")


@topics_app.command("acl")
def topics_acl(
    apply: Annotated[bool, typer.Option("--apply", help="Create them on the brokers.")] = False,
    write: Annotated[
        Path | None, typer.Option(help="Also write them to this file (infra/kafka/acls.txt).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the least-privilege ACLs of every role's principal (--apply: create them)."""
    s = load_settings()
    rules = catalog.acls(
        s.kafka.topic_prefix, s.kafka.group_prefix, len(s.deliverer.retry_schedule)
    )
    if write is not None:
        write.write_text(
            catalog.acl_file(
                s.kafka.topic_prefix, s.kafka.group_prefix, len(s.deliverer.retry_schedule)
            )
        )
    if apply:
        from mxgate.kafka import create_acls

        create_acls(s.kafka, rules)
    if as_json:
        echo_json([{"acl": a.line(), "applied": apply} for a in rules])
    else:
        for a in rules:
            typer.echo(a.line())
        if apply:
            typer.echo(f"applied {len(rules)} ACL(s)", err=True)
