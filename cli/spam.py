"""``mxgate train`` and ``mxgate evaluate``: teach the learning engines, judge engines on mail.

Both take labelled folders (maildir or one file per message) and agree on a deterministic
hold-out (``--holdout PERCENT`` of messages by a hash of their names): ``train`` learns the
rest, ``evaluate`` tests on the held-out part, so engines are judged on mail they never saw.
``--holdout 0`` trains on (or evaluates) everything. Scanner code is imported lazily.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import JsonOpt, load_settings

__all__ = ["register"]

HamOpt = Annotated[
    Path, typer.Option("--ham", help="Folder of ham (wanted mail).", exists=True, file_okay=False)
]
SpamOpt = Annotated[
    Path, typer.Option("--spam", help="Folder of spam.", exists=True, file_okay=False)
]
HoldOpt = Annotated[
    int,
    typer.Option(
        "--holdout", min=0, max=100, help="Percent held out for evaluation (by name hash)."
    ),
]
EnginesOpt = Annotated[
    str,
    typer.Option("--engines", help="Comma-separated engines (default: MXGATE_SCANNER__ENGINES)."),
]


def _progress(total: int, label: str):  # type: ignore[no-untyped-def]
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress(
        f"[bold]{label}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    )


def train(
    ham: HamOpt,
    spam: SpamOpt,
    holdout: HoldOpt = 30,
    engines: EnginesOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Teach every learning engine (our Bayes, spamd's and rspamd's Bayes) the corpus."""
    from scanner.evaluate import load_corpus, split
    from scanner.train import learn_messages

    settings = load_settings()
    names = [n for n in engines.split(",") if n] or list(settings.scanner.engines)
    learn, _ = split(load_corpus(ham, spam), holdout)
    with _progress(len(learn), "training") as bar:
        task = bar.add_task("train", total=len(learn))
        result = asyncio.run(
            learn_messages(
                settings.scanner, learn, engines=names, progress=lambda: bar.advance(task)
            )
        )
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        for name, r in result.items():
            typer.echo(f"{name:14} " + ", ".join(f"{k}={v}" for k, v in r.items()))
    if any(r.get("errors") for r in result.values()):
        raise typer.Exit(1)


def evaluate(
    ham: HamOpt,
    spam: SpamOpt,
    holdout: HoldOpt = 30,
    engines: EnginesOpt = "",
    as_json: JsonOpt = False,
    chart: Annotated[
        Path | None, typer.Option("--chart", help="Write a chart: .html (self-contained SVG).")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many messages (0: all).")] = 0,
) -> None:
    """Run the engines on held-out labelled mail; report per engine and combined."""
    from mxgate.errors import ConfigError
    from mxgate.tenants import Policy
    from scanner.engines.common import Engine
    from scanner.engines.registry import build_engines
    from scanner.evaluate import TABLE_HEADER, evaluate, html_chart, load_corpus, split, table_rows

    if chart is not None and chart.suffix.lower() != ".html":
        typer.echo(
            "error: --chart: only .html is supported (PNG would need matplotlib, "
            "which mxgate does not depend on)",
            err=True,
        )
        raise typer.Exit(2)
    settings = load_settings()
    names = tuple(n for n in engines.split(",") if n) or settings.scanner.engines
    scanner_settings = settings.scanner.model_copy(update={"engines": names})
    try:
        built: list[Engine] = build_engines(scanner_settings)
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    built = [e for e in built if e.kind == "antispam"]  # auth engines are not spam verdicts
    _, test = split(load_corpus(ham, spam), holdout)
    if limit:
        test = test[:limit]
    policy = Policy(engine_weights=dict(settings.scanner.spam.weights))

    async def run() -> dict[str, Any]:
        try:
            return await evaluate(
                built,
                test,
                policy,
                timeout=settings.scanner.engine_timeout,
                progress=lambda: bar.advance(task),
            )
        finally:
            for e in built:
                await e.aclose()

    with _progress(len(test), "evaluating") as bar:
        task = bar.add_task("evaluate", total=len(test))
        report = asyncio.run(run())
    if chart is not None:
        chart.write_text(html_chart(report), encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(test)} held-out messages ({sum(m.is_spam for m in test)} spam)")
    for h in TABLE_HEADER:
        table.add_column(h)
    for row in table_rows(report):
        table.add_row(*row)
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``evaluate`` to the ``mxgate`` command."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
