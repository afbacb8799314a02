"""`mxgate scoreboard run|stats` (and `engines stats`): the per-engine scoreboard."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from cli.common import (
    JsonOpt,
    fail,
    load_settings,
)

scoreboard_app = typer.Typer(help="The engine scoreboard (faust app).", no_args_is_help=True)


@scoreboard_app.command("run")
def scoreboard_run() -> None:
    """Run the scoreboard worker: counts the verdict stream, serves JSON at /stats."""
    from ops.scoreboard import run

    run(load_settings())


def _stats_url() -> str:
    s = load_settings()
    return s.ops.scoreboard_url or f"http://{s.ops.scoreboard_host}:{s.ops.scoreboard_port}"


def render_stats(data: dict[str, Any]) -> list[str]:
    """The scoreboard's JSON (``ops.scoreboard.board``) as table lines, one per engine,
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
    from ops.scoreboard import ScoreboardUnavailable, fetch_stats

    try:
        data = fetch_stats(url or _stats_url())
    except ScoreboardUnavailable as e:
        raise fail(e) from None
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    for line in render_stats(data):
        typer.echo(line)


scoreboard_app.command("stats")(stats)
