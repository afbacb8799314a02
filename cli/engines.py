"""``mxgate engines``: list engines, switch one off or on cluster-wide (the control topic).

- ``mxgate engines [--json]`` — each engine with kind, version, rules version, state
  (``enabled``, ``disabled`` by ops, ``open``/``half-open`` circuit), recent error rate and
  p50/p99 scan time, as each scanner last reported them; engines that are configured but that
  no scanner reported yet are listed from the settings.
- ``mxgate engines disable NAME --reason TEXT`` / ``mxgate engines enable NAME`` — every
  scanner stops or resumes running NAME within about a second, without a restart.
- ``mxgate engines stats [--json]`` — the engine scoreboard (detection rate, unique catches,
  disagreement, error/timeout rate, latency per time window) from the scoreboard worker.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from cli.common import JsonOpt, acting_as, load_settings
from cli.scoreboard import stats
from mxgate.enginecontrol import ControlView, publish_control, read_control
from mxgate.kafka import KafkaUnavailable
from mxgate.settings import Settings
from ops.operators import Action

__all__ = ["engines_app"]

engines_app = typer.Typer(
    help="Scanning engines: list them, switch one off or on cluster-wide.",
    invoke_without_command=True,
)


def _settings() -> Settings:
    return load_settings()


def rows(view: ControlView, configured: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per (engine, scanner) reported, plus configured engines nobody reported."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for (scanner, engine), st in sorted(view.statuses.items()):
        seen.add(engine)
        switch = view.switches.get(engine)
        state = st.state
        if switch is not None and not switch.enabled:
            state = "disabled"  # the switch is newer than a status report may be
        out.append(
            {
                "engine": engine,
                "scanner": scanner,
                "kind": st.kind,
                "version": st.version,
                "rules_version": st.rules_version,
                "state": state,
                "reason": switch.reason if switch else "",
                "scans": st.scans,
                "error_rate": round(st.error_rate, 4),
                "p50_ms": round(st.p50_ms, 2),
                "p99_ms": round(st.p99_ms, 2),
                "last_error": st.last_error,
            }
        )
    for engine in list(configured) + sorted(view.switches):
        if engine in seen:
            continue
        seen.add(engine)
        switch = view.switches.get(engine)
        out.append(
            {
                "engine": engine,
                "scanner": None,
                "kind": None,
                "version": None,
                "rules_version": None,
                "state": "disabled" if switch and not switch.enabled else "enabled",
                "reason": switch.reason if switch else "",
                "scans": 0,
                "error_rate": None,
                "p50_ms": None,
                "p99_ms": None,
                "last_error": None,
            }
        )
    return out


@engines_app.callback()
def engines_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List every engine with kind, version, state and recent error rate."""
    if ctx.invoked_subcommand is not None:
        return
    s = _settings()
    try:
        view = read_control(s.kafka)
    except KafkaUnavailable as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    table = rows(view, s.scanner.engines)
    if as_json:
        typer.echo(json.dumps(table, indent=2))
        return
    typer.echo(
        f"{'ENGINE':12} {'KIND':10} {'STATE':9} {'ERR%':>6} {'P50ms':>8} {'P99ms':>8}  "
        f"{'VERSION':14} {'RULES':22} SCANNER / REASON"
    )
    for r in table:
        err = "-" if r["error_rate"] is None else f"{100 * r['error_rate']:.1f}"
        p50 = "-" if r["p50_ms"] is None else f"{r['p50_ms']:.1f}"
        p99 = "-" if r["p99_ms"] is None else f"{r['p99_ms']:.1f}"
        note = " ".join(x for x in (r["scanner"] or "", r["reason"] or "") if x)
        typer.echo(
            f"{r['engine']:12} {r['kind'] or '-':10} {r['state']:9} {err:>6} {p50:>8} {p99:>8}  "
            f"{(r['version'] or '-')[:14]:14} {(r['rules_version'] or '-')[:22]:22} {note}"
        )


def _switch(name: str, enabled: bool, reason: str, as_json: bool) -> None:
    s = _settings()
    who = acting_as(s, Action.engine_switch)
    try:
        switch = publish_control(s.kafka, name, enabled, reason, actor=who)
    except KafkaUnavailable as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps({"engine": switch.engine, "enabled": switch.enabled,
                               "reason": switch.reason, "actor": switch.actor}))  # fmt: skip
    else:
        typer.echo(f"{name}: {'enabled' if enabled else 'disabled'} cluster-wide")


@engines_app.command("disable")
def engines_disable(
    name: str,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")],
    as_json: JsonOpt = False,
) -> None:
    """Switch engine NAME off on every scanner, now, without a restart.

    Each message then records a `disabled` verdict for it. For an antivirus engine that is a
    missing verdict: under the default tenant policy (on_engine_error / on_av_partial_failure
    = quarantine) the mail it would have scanned is quarantined, not delivered unscanned.
    """
    if not reason.strip():
        typer.echo("error: --reason must say why", err=True)
        raise typer.Exit(2)
    _switch(name, False, reason.strip(), as_json)


@engines_app.command("enable")
def engines_enable(name: str, as_json: JsonOpt = False) -> None:
    """Switch engine NAME back on on every scanner."""
    _switch(name, True, "", as_json)


@engines_app.command("stats")
def engines_stats(
    url: Annotated[
        str | None, typer.Option(help="Scoreboard base URL (default: MXGATE_OPS__SCOREBOARD_*).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Each engine's scoreboard per time window: detection rate, unique catches,
    disagreement, error and timeout rate, p50/p99 latency (asks `mxgate scoreboard run`)."""
    stats(url=url, as_json=as_json)
