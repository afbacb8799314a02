"""``mxgate train`` and ``mxgate evaluate``: teach the learning engines, judge engines on mail.

Both take labelled folders (maildir or one file per message) and agree on a deterministic
hold-out (``--holdout PERCENT`` of messages by a hash of their names): ``train`` learns the
rest, ``evaluate`` tests on the held-out part, so engines are judged on mail they never saw.
``--holdout 0`` trains on (or evaluates) everything; a selection with no message is an error.
``train`` then learns the spam combiner (:mod:`scanner.combiner`) by cross-validation and
writes its model file; ``evaluate`` judges with it (``--score-sum``: the fallback rule).
``--hard-ham DIR`` adds ham that looks like spam, reported apart. Scanner code is imported
lazily.
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
HardOpt = Annotated[
    Path | None,
    typer.Option(
        "--hard-ham",
        help="Folder of hard ham (wanted mail that looks like spam), counted apart.",
        exists=True,
        file_okay=False,
    ),
]
EnginesOpt = Annotated[
    str,
    typer.Option("--engines", help="Comma-separated engines (default: MXGATE_SCANNER__ENGINES)."),
]


def _antispam(configured: tuple[str, ...]) -> list[str]:
    """The antispam engines among ``configured`` (the scanner's enabled set): only they give
    spam verdicts, and the others may need services (clamd) that judging spam does not."""
    from scanner.engines.registry import ENGINES

    return [n for n in configured if n in ENGINES and ENGINES[n].engine.kind == "antispam"]


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
    hard_ham: HardOpt = None,
    holdout: HoldOpt = 30,
    engines: EnginesOpt = "",
    folds: Annotated[
        int, typer.Option("--folds", min=2, max=20, help="Cross-validation folds (combiner).")
    ] = 5,
    combiner: Annotated[
        bool, typer.Option(help="Also learn the spam combiner (MXGATE_SCANNER__SPAM__MODEL_PATH).")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Teach every learning engine (our Bayes, spamd's and rspamd's Bayes) the corpus, then
    learn the spam combiner by k-fold cross-validation over the in-process engines and the
    enabled spamd and rspamd (scored before they are taught)."""
    from scanner.evaluate import load_corpus, split
    from scanner.train import learn_messages, score_messages, train_combiner

    settings = load_settings()
    names = [n for n in engines.split(",") if n] or _antispam(settings.scanner.engines)
    learn, _ = split(load_corpus(ham, spam, hard_ham), holdout)
    _nonempty(learn, "train")
    daemons = [n for n in ("spamassassin", "rspamd") if n in names]
    scored = None
    if combiner and daemons:
        # Judged before this run teaches them, so the combiner learns their scores on mail
        # they were not taught (their in-sample scores would be over-confident).
        with _progress(len(learn), "scoring") as bar:
            task = bar.add_task("score", total=len(learn))
            scored = asyncio.run(
                score_messages(settings.scanner, learn, daemons, progress=lambda: bar.advance(task))
            )
    with _progress(len(learn), "training") as bar:
        task = bar.add_task("train", total=len(learn))
        result: dict[str, Any] = asyncio.run(
            learn_messages(
                settings.scanner, learn, engines=names, progress=lambda: bar.advance(task)
            )
        )
    failed = any(r.get("errors") for r in result.values())
    if combiner:
        # Bayes and heuristics are enough for the combiner: learnt even when not enabled.
        try:
            model = asyncio.run(
                train_combiner(
                    settings.scanner,
                    learn,
                    engines=[*names, "bayes", "heuristics"],
                    k=folds,
                    findings=scored,
                )
            )
        except ValueError as e:
            typer.echo(f"error: combiner: {e}", err=True)
            raise typer.Exit(1) from None
        path = settings.scanner.spam.model_path
        model.save(path)
        result["combiner"] = {
            "model": str(path),
            "version": model.version,
            "engines": list(model.engines),
            "features": len(model.feature_names),
            "thresholds": {repr(t): round(p, 6) for t, p in sorted(model.thresholds.items())},
            "cv": model.summary["cv"] if as_json else _cv_brief(model.summary["cv"]),
        }
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        for name, r in result.items():
            typer.echo(f"{name:14} " + ", ".join(f"{k}={v}" for k, v in r.items()))
    if failed:
        raise typer.Exit(1)


def _cv_brief(cv: dict[str, Any]) -> dict[str, str]:
    """One line per target: spam caught / easy-ham FPR / hard-ham FPR (nested CV)."""

    def line(r: dict[str, Any]) -> str:
        return (
            f"{r['spam_caught']:.1%} spam, {r['easy_ham_flagged']}/{r['easy_ham']} easy, "
            f"{r['hard_ham_flagged']}/{r['hard_ham']} hard"
        )

    out = {f"combined@{t}": line(r) for t, r in cv["combined"].items()}
    out.update({e: line(r) for e, r in cv["engines_own_verdict"].items()})
    return out


def _nonempty(messages: list[Any], what: str) -> None:
    if not messages:
        typer.echo(
            f"error: nothing to {what}: the folders hold no messages"
            + (
                " outside the hold-out" if what == "train" else " in the hold-out (try --holdout 0)"
            ),
            err=True,
        )
        raise typer.Exit(2)


def evaluate(
    ham: HamOpt,
    spam: SpamOpt,
    hard_ham: HardOpt = None,
    holdout: HoldOpt = 30,
    engines: EnginesOpt = "",
    as_json: JsonOpt = False,
    chart: Annotated[
        Path | None, typer.Option("--chart", help="Write a chart: .html (self-contained SVG).")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many messages (0: all).")] = 0,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model", help="Spam combiner model (default: MXGATE_SCANNER__SPAM__MODEL_PATH)."
        ),
    ] = None,
    score_sum: Annotated[
        bool, typer.Option("--score-sum", help="Judge with the score rule, not the combiner.")
    ] = False,
    target_fpr: Annotated[
        float | None,
        typer.Option("--target-fpr", help="The policy's spam_target_fpr (default: the policy's)."),
    ] = None,
    missing: Annotated[
        list[str] | None,
        typer.Option("--missing", help="Also judge as if this engine timed out (repeatable)."),
    ] = None,
) -> None:
    """Run the engines on held-out labelled mail; report per engine and combined.

    ``--holdout 0`` judges every message of the folders; a selection with no message is an
    error (exit 2).
    """
    from mxgate.errors import ConfigError
    from mxgate.tenants import Policy
    from scanner.combiner import SpamModel
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
    names = tuple(n for n in engines.split(",") if n) or tuple(_antispam(settings.scanner.engines))
    scanner_settings = settings.scanner.model_copy(update={"engines": names})
    try:
        built: list[Engine] = build_engines(scanner_settings)
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    built = [e for e in built if e.kind == "antispam"]  # auth engines are not spam verdicts
    _, test = split(load_corpus(ham, spam, hard_ham), holdout)
    if limit:
        test = test[:limit]
    _nonempty(test, "evaluate")
    policy = Policy(engine_weights=dict(settings.scanner.spam.weights))
    if target_fpr is not None:
        policy = policy.model_copy(update={"spam_target_fpr": target_fpr})
    spam_model = None
    if not score_sum:
        try:
            spam_model = (
                SpamModel.load(model)
                if model is not None
                else SpamModel.load_or_default(settings.scanner.spam.model_path)
            )
        except (ValueError, KeyError) as e:
            typer.echo(f"error: spam model: {e}", err=True)
            raise typer.Exit(2) from None
        if model is not None and spam_model is None:
            typer.echo(f"error: no spam model at {model}", err=True)
            raise typer.Exit(2)
    unknown = [n for n in missing or () if n not in {e.name for e in built}]
    if unknown:
        typer.echo(f"error: --missing: not an evaluated antispam engine: {unknown}", err=True)
        raise typer.Exit(2)

    async def run() -> dict[str, Any]:
        try:
            return await evaluate(
                built,
                test,
                policy,
                timeout=settings.scanner.engine_timeout,
                progress=lambda: bar.advance(task),
                spam_model=spam_model,
                missing=tuple(missing or ()),
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

    which = "held-out" if holdout else "all"
    title = (
        f"{len(test)} {which} messages ({sum(m.is_spam for m in test)} spam, "
        f"{sum(m.hard for m in test)} hard ham); combined: "
        + (f"model {spam_model.version}" if spam_model else "score sum")
    )
    table = Table(title=title)
    for h in TABLE_HEADER:
        table.add_column(h)
    for row in table_rows(report):
        table.add_row(*row)
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``evaluate`` to the ``mxgate`` command."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
