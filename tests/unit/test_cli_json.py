"""Every `mxgate` command that prints an answer can print it as JSON (`--json`)."""

from __future__ import annotations

from typing import Any

import typer.main

from cli.main import app

# Commands that print no answer of their own: they run a process in the foreground.
RUNNERS = {"run", "up", "scoreboard run"}


def _commands(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    # Typer ships its own click: groups are told apart by their sub-commands.
    out: list[tuple[str, Any]] = []
    for name, cmd in group.commands.items():
        path = f"{prefix}{name}"
        if hasattr(cmd, "commands"):
            out += _commands(cmd, f"{path} ")
            if cmd.invoke_without_command:
                out.append((path, cmd))
        else:
            out.append((path, cmd))
    return out


def test_every_printing_command_takes_json() -> None:
    commands = _commands(typer.main.get_group(app))
    assert len(commands) > 15
    lacking = [
        path
        for path, cmd in commands
        if path not in RUNNERS and "--json" not in {o for p in cmd.params for o in p.opts}
    ]
    assert lacking == []
