"""`mxgate run ROLE`, `mxgate up` (the whole pipeline locally) and `mxgate settings`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import JsonOpt, echo_json, fail, load_settings
from devstack import runtime
from mxgate import catalog
from mxgate.errors import ConfigError
from mxgate.settings import Settings

# /metrics ports `mxgate up` gives the roles; receiver worker i serves on its port + i, so the
# others sit below it.
UP_METRICS_PORTS = {"scanner": 9118, "deliverer": 9119, "receiver": 9120}

if TYPE_CHECKING:
    from devstack.localbus import LocalBus


class Role(StrEnum):
    """A process mxgate can run."""

    receiver = "receiver"
    scanner = "scanner"
    deliverer = "deliverer"
    capture = "capture"


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
        raise fail(e) from None


def _run_capture(host: str, port: int, folder: Path) -> None:
    from devstack.capture import CaptureHandler, start_capture
    from mxgate.process import run_until_signalled

    async def serve(stop: asyncio.Event) -> None:
        server, bound = await start_capture(CaptureHandler(folder), host=host, port=port)
        typer.echo(f"capture server on {host}:{bound}, writing to {folder}", err=True)
        await stop.wait()
        server.close()
        await server.wait_closed()

    run_until_signalled(serve)


def settings_reference(
    readme: Annotated[
        Path | None, typer.Option(help="Rewrite the table between the markers in this file.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the settings reference (every MXGATE_* variable) as a Markdown table."""
    from mxgate.settings_doc import markdown, reference, update_readme

    if as_json and readme is None:
        echo_json([{"variable": k, "default": d, "meaning": m} for k, d, m in reference()])
    elif readme is None:
        typer.echo(markdown())
    else:
        changed = update_readme(readme)
        typer.echo(f"{readme}: {'updated' if changed else 'already current'}")


def up(
    workdir: Annotated[Path, typer.Option(help="Where local state lives.")] = Path("var"),
    capture_port: Annotated[int, typer.Option(help="Port of the local capture server.")] = 2526,
) -> None:
    """Run the whole pipeline locally: Kafka (if none configured), clamd, spamd and rspamd
    (when installed), topics, capture server, receiver, scanner and deliverer. Ctrl-C stops
    everything cleanly."""
    from mxgate.kafka import create_topics

    settings = load_settings()
    env = dict(os.environ)
    env.setdefault("MXGATE_STORE__PATH", str(workdir / "store"))
    env.setdefault("MXGATE_DELIVERER__STATE_PATH", str(workdir / "deliverer"))
    env.setdefault("MXGATE_LOG_JSON", "false")
    # Every role's /metrics, on loopback (each role's metrics_host default).
    env.setdefault("MXGATE_METRICS_PORT", str(UP_METRICS_PORTS["receiver"]))
    env.setdefault("MXGATE_SCANNER__METRICS_PORT", str(UP_METRICS_PORTS["scanner"]))
    env.setdefault("MXGATE_DELIVERER__METRICS_PORT", str(UP_METRICS_PORTS["deliverer"]))
    clamd = None
    bus = None
    antispam = None
    antispam_secret: dict[str, str] = {}
    procs: list[subprocess.Popen[bytes]] = []

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # Explicit handlers: SIGTERM (systemd, docker) stops cleanly too, and SIGINT works even
    # when a non-interactive parent shell started us with SIGINT ignored.
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        from devstack import antispam as private_antispam

        # spamd and rspamd (when installed and not configured) come up while Kafka does.
        antispam = private_antispam.begin(workdir.resolve(), settings, _say)
        if not settings.kafka.bootstrap_servers:
            # Our own broker, so our own security; a configured cluster's is the operator's.
            bus = _start_local_bus(workdir)
            env["MXGATE_KAFKA__BOOTSTRAP_SERVERS"] = bus.kafka.bootstrap_servers
        if antispam is not None:
            lent, antispam_secret = antispam.wait(_say)
            env |= lent
        os.environ.update(env)
        settings = load_settings()
        if "clamav" in settings.scanner.engines and not settings.scanner.clamav_socket:
            from devstack.clamd import Clamd

            typer.echo("starting a local clamd on the project's signature database…", err=True)
            clamd = Clamd(workdir.resolve() / "clamav").start()
            env["MXGATE_SCANNER__CLAMAV_SOCKET"] = clamd.socket
            env["MXGATE_SCANNER__CLAMAV_DB_DIR"] = str(clamd.db)
        if settings.receiver.tls_cert is None:
            from devstack.tlscert import ensure_self_signed

            # STARTTLS from the first start, as distributions do for Postfix (snakeoil pair).
            cert, key = ensure_self_signed(workdir.resolve() / "tls", settings.receiver.hostname)
            env["MXGATE_RECEIVER__TLS_CERT"], env["MXGATE_RECEIVER__TLS_KEY"] = str(cert), str(key)
        os.environ.update(env)
        settings = load_settings()
        tiers = len(settings.deliverer.retry_schedule)
        if bus is None:
            runtime.write(workdir / "runtime.json", env)
            create_topics(settings.kafka, catalog.all_topics(tiers))
        else:
            # A second shell's CLI acts as ops; its password stays in the secrets file.
            runtime.write(workdir / "runtime.json", env | bus.role_env("ops"), bus.secrets_file)
            create_topics(bus.admin(settings.kafka), catalog.all_topics(tiers))
            bus.grant(bus.admin(settings.kafka), tiers)
        mailbox = workdir / "mailbox"
        cmd = [sys.executable, "-m", "cli"]
        procs.append(
            subprocess.Popen(
                [*cmd, "run", "capture", "--port", str(capture_port), "--folder", str(mailbox)],
                env=env,
                start_new_session=True,
            )
        )
        for role in ("deliverer", "scanner", "receiver"):
            # Own sessions: Ctrl-C reaches only `up`, which stops the roles front to back.
            role_env = env | (bus.role_env(role) if bus is not None else {})
            if role == "scanner":
                role_env |= antispam_secret
            procs.append(
                subprocess.Popen([*cmd, "run", role], env=role_env, start_new_session=True)
            )
        typer.echo(
            f"mxgate is up: SMTP on {settings.receiver.host}:{settings.receiver.port} for "
            f"example.test; delivered mail lands in {mailbox}/. Ctrl-C stops.",
            err=True,
        )
        typer.echo(f"metrics: {_metrics_urls(settings)}", err=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        failed = [p for p in procs if p.poll() is not None]
        raise fail(RuntimeError(f"a role exited early: {failed[0].args!r}"))
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
        if antispam is not None:
            antispam.stop()
        if bus is not None:
            bus.stop()
        runtime.clear(workdir / "runtime.json", os.getpid())


def _say(line: str) -> None:
    typer.echo(line, err=True)


def _metrics_urls(settings: Settings) -> str:
    """Where each role of `up` serves /metrics (the receiver's first worker), for the banner."""
    where = {
        "receiver": (settings.receiver.metrics_host, settings.metrics_port),
        "scanner": (settings.scanner.metrics_host, settings.scanner.metrics_port),
        "deliverer": (settings.deliverer.metrics_host, settings.deliverer.metrics_port),
    }
    return ", ".join(
        f"{role} http://{host}:{port}/metrics" if port else f"{role} off"
        for role, (host, port) in where.items()
    )


def _start_local_bus(workdir: Path) -> LocalBus:
    """Start `up`'s own broker: SASL_SSL, ACLs on, a user per role (devstack.localbus)."""
    from devstack.localbus import LocalBus

    typer.echo(
        "starting a local Kafka broker with SASL_SSL and ACLs (first run fetches it with mvn)…",
        err=True,
    )
    try:
        bus = LocalBus(workdir)
    except PermissionError as e:  # a secrets file others can read: say which, do not use it
        raise fail(e) from None
    bus.start()
    if bus.retired is not None:
        typer.echo(
            f"the broker in {bus.kafka.workdir} was not made for these users (an older "
            f"PLAINTEXT `up`?): moved to {bus.retired}, started a new one",
            err=True,
        )
    return bus


def register(app: typer.Typer) -> None:
    """Add `run`, `up` and `settings` to ``app``."""
    app.command()(run)
    app.command()(up)
    app.command("settings")(settings_reference)
