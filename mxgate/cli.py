"""The one `mxgate` command."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from mxgate import catalog
from mxgate.cli_engines import engines_app
from mxgate.cli_quarantine import quarantine_app
from mxgate.errors import ConfigError
from mxgate.settings import Settings

app = typer.Typer(
    help="mxgate: inbound email security gateway.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"mxgate {version('mxgate')}")
        raise typer.Exit()


@app.callback()
def _root(
    _v: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """mxgate: inbound email security gateway."""


def main() -> None:
    """Entry point: a broker that is not configured or not reachable is one line, not a trace."""
    from mxgate.kafka import KafkaUnavailable

    try:
        app()
    except KafkaUnavailable as e:
        typer.echo(
            f"error: {e}: start `mxgate up` in this directory (`make run`) or set "
            "MXGATE_KAFKA__BOOTSTRAP_SERVERS",
            err=True,
        )
        sys.exit(2)


topics_app = typer.Typer(help="Kafka topics of the catalog.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(engines_app, name="engines")

# Engines `mxgate up` enables unless MXGATE_SCANNER__ENGINES says otherwise.
UP_ENGINES = ["yara", "content", "clamav", "attachments", "office"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def load_settings() -> Settings:
    """Settings from the environment, or a clear error naming the bad key.

    A live `mxgate up` in this directory lends its choices (broker, clamd socket, paths) as
    defaults beneath the environment, so a second shell needs no MXGATE_* variables.
    """
    from mxgate import runtime

    # The CLI is the top of the tree: the one place that may fill the process environment.
    for key, value in runtime.load().items():
        os.environ.setdefault(key, value)
    try:
        return Settings()
    except ValidationError as e:
        err = e.errors()[0]
        key = "MXGATE_" + "__".join(str(x).upper() for x in err["loc"])
        typer.echo(f"error: environment: {key}: {err['msg']}", err=True)
        raise typer.Exit(2) from None


def _fail(e: Exception) -> typer.Exit:
    typer.echo(f"error: {e}", err=True)
    return typer.Exit(2)


class Role(StrEnum):
    """A process mxgate can run."""

    receiver = "receiver"
    scanner = "scanner"
    deliverer = "deliverer"
    capture = "capture"


@app.command()
def run(
    role: Role,
    host: Annotated[str, typer.Option(help="capture: address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="capture: port to listen on.")] = 2526,
    folder: Annotated[Path, typer.Option(help="capture: where to write mail.")] = Path(
        "var/mailbox"
    ),
) -> None:
    """Run one role in the foreground (SIGTERM drains and exits)."""
    settings = load_settings()
    from mxgate.logs import configure

    configure(settings.log_level, settings.log_json)
    try:
        if role is Role.receiver:
            from receiver.server import run as run_role
        elif role is Role.scanner:
            from scanner.service import run as run_role
        elif role is Role.deliverer:
            from deliverer.service import run as run_role
        else:
            _run_capture(host, port, folder)
            return
        run_role(settings)
    except ConfigError as e:
        raise _fail(e) from None


def _run_capture(host: str, port: int, folder: Path) -> None:
    from mxgate.capture import CaptureHandler, start_capture
    from mxgate.process import run_until_signalled

    async def serve(stop: asyncio.Event) -> None:
        server, bound = await start_capture(CaptureHandler(folder), host=host, port=port)
        typer.echo(f"capture server on {host}:{bound}, writing to {folder}", err=True)
        await stop.wait()
        server.close()
        await server.wait_closed()

    run_until_signalled(serve)


@app.command("settings")
def settings_reference(
    readme: Annotated[
        Path | None, typer.Option(help="Rewrite the table between the markers in this file.")
    ] = None,
) -> None:
    """Print the settings reference (every MXGATE_* variable) as a Markdown table."""
    from mxgate.settings_doc import markdown, update_readme

    if readme is None:
        typer.echo(markdown())
    else:
        changed = update_readme(readme)
        typer.echo(f"{readme}: {'updated' if changed else 'already current'}")


@topics_app.command("create")
def topics_create() -> None:
    """Create every topic of the catalog that does not exist yet."""
    from mxgate.kafka import create_topics

    s = load_settings()
    made = create_topics(s.kafka, catalog.all_topics(len(s.deliverer.retry_schedule)))
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
        typer.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            typer.echo(f"{r['name']:40} {r['retention_ms'] // 86_400_000:>3}d  {r['doc']}")


@app.command()
def up(
    workdir: Annotated[Path, typer.Option(help="Where local state lives.")] = Path("var"),
    capture_port: Annotated[int, typer.Option(help="Port of the local capture server.")] = 2526,
) -> None:
    """Run the whole pipeline locally: Kafka (if none configured), topics, capture server,
    receiver, scanner and deliverer. Ctrl-C stops everything cleanly."""
    from mxgate.kafka import create_topics

    settings = load_settings()
    env = dict(os.environ)
    env.setdefault("MXGATE_STORE__PATH", str(workdir / "store"))
    env.setdefault("MXGATE_DELIVERER__STATE_PATH", str(workdir / "deliverer"))
    env.setdefault("MXGATE_LOG_JSON", "false")
    # The local gateway shows the whole antivirus set; a role run alone keeps its own default.
    env.setdefault("MXGATE_SCANNER__ENGINES", json.dumps(UP_ENGINES))
    clamd = None
    kafka = None
    procs: list[subprocess.Popen[bytes]] = []

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # Explicit handlers: SIGTERM (systemd, docker) stops cleanly too, and SIGINT works even
    # when a non-interactive parent shell started us with SIGINT ignored.
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        if not settings.kafka.bootstrap_servers:
            from mxgate.localkafka import LocalKafka

            typer.echo("starting a local Kafka broker (first run fetches it with mvn)…", err=True)
            kafka = LocalKafka(workdir=workdir / "kafka")
            env["MXGATE_KAFKA__BOOTSTRAP_SERVERS"] = kafka.start()
        os.environ.update(env)
        settings = load_settings()
        if "clamav" in settings.scanner.engines and not settings.scanner.clamav_socket:
            from mxgate.localclamd import Clamd

            typer.echo("starting a local clamd on the project's signature database…", err=True)
            clamd = Clamd(workdir.resolve() / "clamav").start()
            env["MXGATE_SCANNER__CLAMAV_SOCKET"] = clamd.socket
            env["MXGATE_SCANNER__CLAMAV_DB_DIR"] = str(clamd.db)
        os.environ.update(env)
        settings = load_settings()
        from mxgate import runtime

        runtime.write(workdir / "runtime.json", env)
        create_topics(settings.kafka, catalog.all_topics(len(settings.deliverer.retry_schedule)))
        mailbox = workdir / "mailbox"
        cmd = [sys.executable, "-m", "mxgate"]
        procs.append(
            subprocess.Popen(
                [*cmd, "run", "capture", "--port", str(capture_port), "--folder", str(mailbox)],
                env=env,
                start_new_session=True,
            )
        )
        for role in ("deliverer", "scanner", "receiver"):
            # Own sessions: Ctrl-C reaches only `up`, which stops the roles front to back.
            procs.append(subprocess.Popen([*cmd, "run", role], env=env, start_new_session=True))
        typer.echo(
            f"mxgate is up: SMTP on {settings.receiver.host}:{settings.receiver.port} for "
            f"example.test; delivered mail lands in {mailbox}/. Ctrl-C stops.",
            err=True,
        )
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        failed = [p for p in procs if p.poll() is not None]
        raise _fail(RuntimeError(f"a role exited early: {failed[0].args}"))
    except KeyboardInterrupt:
        typer.echo("stopping…", err=True)
    finally:
        # Stopping must not be cut short by a second Ctrl-C.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # Receiver first (no new mail), then scanner and deliverer drain, the sink last.
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        if clamd is not None:
            clamd.stop()
        if kafka is not None:
            kafka.stop()
        from mxgate import runtime

        runtime.clear(workdir / "runtime.json", os.getpid())


# Ops commands (trace, replay, retroscan, gc, scoreboard) live in cli_ops, which imports the
# helpers above: registered last, once they exist.
from mxgate import cli_ops  # noqa: E402

cli_ops.register(app)

# Spam engines: train and evaluate (issue 7), registered the same way.
from mxgate import cli_spam  # noqa: E402

cli_spam.register(app)
