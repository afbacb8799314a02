"""Ops commands: `mxgate trace`, `replay`, `retroscan`, `gc` and `scoreboard`.

``register(app)`` adds them to the one ``mxgate`` command. Role code (the scanner's replay) is
imported inside the functions, as ``mxgate run`` does, so the shared package never ties the
roles together.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from mxgate.errors import ConfigError
from mxgate.settings import Settings
from mxgate.timeutil import utcnow

__all__ = ["parse_time", "register", "render_stats", "stats"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


# mxgate.cli imports this module to register it: its helpers are imported at call time.
def load_settings() -> Settings:
    """Settings from the environment, or a clear error (see mxgate.cli.load_settings)."""
    from mxgate.cli import load_settings as load

    return load()


def _fail(e: Exception) -> typer.Exit:
    from mxgate.cli import _fail as fail

    return fail(e)


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


def _time_opt(value: str | None) -> dt.datetime | None:
    return parse_time(value) if value else None


def _run_name(prefix: str) -> str:
    return f"{prefix}-{utcnow().strftime('%Y%m%dT%H%M%SZ')}"


def _settings() -> Settings:
    """Settings, with logs on stderr: stdout is for the answer (``--json`` output)."""
    s = load_settings()
    from mxgate.logs import configure

    configure("warning" if s.log_level == "info" else s.log_level, s.log_json)
    return s


def _progress(label: str) -> Any:
    """A rich progress bar on stderr (ops watch long runs); returns (context, callback)."""
    from rich.console import Console
    from rich.progress import Progress

    bar = Progress(console=Console(stderr=True), transient=True)
    task = bar.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return bar, update


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
    from mxgate.trace import history, render

    s = _settings()
    searching = any(
        x is not None for x in (message_id_header, sender, recipient, since, until, tenant)
    )
    if not searching:
        if message_id is None:
            raise _fail(ValueError("give a message ID or a search option (see --help)"))
        h = history(s, message_id)
        typer.echo(json.dumps(h, indent=2) if as_json else render(h))
        if h["outcome"] == "unknown":
            raise typer.Exit(1)
        return
    from mxgate.index import MessageIndex, Query

    q = Query(
        message_id=message_id,
        header_message_id=message_id_header,
        sender=sender,
        recipient=recipient,
        since=_time_opt(since),
        until=_time_opt(until),
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
    from scanner.replay import load_policy
    from scanner.replay import replay as run_replay

    s = _settings()
    run = name or _run_name("replay")
    try:
        pol = load_policy(policy) if policy else None
        names = [e.strip() for e in engines.split(",") if e.strip()] if engines else None
        bar, update = _progress(f"replay {run}")
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
            )
    except ConfigError as e:
        raise _fail(e) from None
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
    from scanner.replay import retroscan as run_retroscan

    s = _settings()
    run = name or _run_name("retroscan")
    try:
        bar, update = _progress(f"retroscan {run}")
        with bar:
            result = run_retroscan(s, parse_time(since), run=run, progress=update)
    except ConfigError as e:
        raise _fail(e) from None
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


def gc(
    dry_run: Annotated[bool, typer.Option(help="Report only; delete, remember nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete bodies no retained event references any more (never a quarantined one), once
    they have stayed unreferenced for MXGATE_OPS__GC_GRACE seconds."""
    from mxgate.gc import collect

    result = collect(_settings(), dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
        return
    verb = "would delete" if dry_run else "deleted"
    typer.echo(
        f"{result.listed} bodies: {result.referenced} referenced "
        f"({len(result.quarantined)} in quarantine), {len(result.waiting)} waiting out the "
        f"grace period, {verb} {len(result.deleted)}"
    )


scoreboard_app = typer.Typer(help="The engine scoreboard (faust app).", no_args_is_help=True)


@scoreboard_app.command("run")
def scoreboard_run() -> None:
    """Run the scoreboard worker: counts the verdict stream, serves JSON at /stats."""
    from mxgate.scoreboard import run

    run(load_settings())


def _stats_url() -> str:
    s = load_settings()
    return s.ops.scoreboard_url or f"http://{s.ops.scoreboard_host}:{s.ops.scoreboard_port}"


def render_stats(data: dict[str, Any]) -> list[str]:
    """The scoreboard's JSON (``mxgate.scoreboard.board``) as table lines, one per engine,
    window length and window."""
    lines = [
        f"{'engine':18} {'win':>4} {'start':26} {'msgs':>6} {'det':>5} {'det%':>6} "
        f"{'uniq':>5} {'dis%':>6} {'err%':>6} {'tmo%':>6} {'p50ms':>8} {'p99ms':>8}"
    ]
    for label, win in data.get("windows", {}).items():
        for engine, windows in win["engines"].items():
            for start, w in windows.items():
                tag = f"{engine}{' (shadow)' if w['shadow'] else ''}"
                lines.append(
                    f"{tag:18} {label:>4} {start:26} {w['messages']:>6} {w['detections']:>5} "
                    f"{100 * w['detection_rate']:>6.1f} {w['unique_catches']:>5} "
                    f"{100 * w['disagreement_rate']:>6.1f} {100 * w['error_rate']:>6.1f} "
                    f"{100 * w['timeout_rate']:>6.1f} {w['latency_ms']['p50']:>8.2f} "
                    f"{w['latency_ms']['p99']:>8.2f}"
                )
    if len(lines) == 1:
        lines.append("(no verdicts counted yet)")
    return lines


def stats(
    url: Annotated[str | None, typer.Option(help="Scoreboard base URL.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Per engine and time window (the configured one and a day): messages, detections and
    detection rate, unique catches, disagreement, error and timeout rate, latency percentiles
    (from the running scoreboard worker, `mxgate scoreboard run`)."""
    from mxgate.scoreboard import ScoreboardUnavailable, fetch_stats

    try:
        data = fetch_stats(url or _stats_url())
    except ScoreboardUnavailable as e:
        raise _fail(e) from None
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    for line in render_stats(data):
        typer.echo(line)


scoreboard_app.command("stats")(stats)


def register(app: typer.Typer) -> None:
    """Add the ops commands to ``app`` (`mxgate engines stats`, in mxgate.cli_engines, is
    :func:`stats` too)."""
    app.command()(trace)
    app.command()(replay)
    app.command()(retroscan)
    app.command()(gc)
    app.add_typer(scoreboard_app, name="scoreboard")
