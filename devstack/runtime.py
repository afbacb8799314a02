"""What `mxgate up` chose at run time (broker, clamd socket, paths), for later commands.

`mxgate up` starts a local broker and clamd on ports and sockets it picks; a second shell
running `mxgate trace` or `mxgate replay` must find the same ones without the user copying
variables. `up` writes its choices to ``var/runtime.json``; the CLI takes them as defaults
beneath the user's own environment, and only while that `up` process is alive.

The record never holds a password. When `up` runs its own secured broker, the record names the
private file of its users' passwords (:mod:`devstack.passwords`), and :func:`password` reads
the one the CLI needs from there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from devstack import passwords

DEFAULT_PATH = Path("var/runtime.json")


def write(path: Path, env: dict[str, str], secrets: Path | None = None) -> None:
    """Record the MXGATE_* choices of this `up` process (pid included) atomically, passwords
    left out; ``secrets`` names the passwords file of `up`'s own broker, if it runs one."""
    # Secrets stay in the environment they came from: this file is read by any later shell.
    chosen = {
        k: v for k, v in env.items() if k.startswith("MXGATE_") and not k.endswith("_PASSWORD")
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    record: dict[str, object] = {"pid": os.getpid(), "env": chosen}
    if secrets is not None:
        record["secrets"] = str(secrets.resolve())
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _live(path: Path) -> dict[str, object]:
    """The record of a live `up` process, or nothing."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or not _alive(int(data.get("pid", 0) or 0)):
        return {}
    return data


def load(path: Path = DEFAULT_PATH) -> dict[str, str]:
    """The live `up` process's choices, or nothing if there is none (or the file is stale)."""
    env = _live(path).get("env", {})
    return {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {}


def password(user: str, bootstrap_servers: str, path: Path = DEFAULT_PATH) -> str | None:
    """The password of ``user`` on the live `up` process's own broker, or None.

    Only for the broker `up` recorded: a shell pointed at another cluster is never handed a
    local password to send there.
    """
    data = _live(path)
    env = data.get("env", {})
    secrets = data.get("secrets")
    if not user or not isinstance(env, dict) or not isinstance(secrets, str):
        return None
    if bootstrap_servers != env.get("MXGATE_KAFKA__BOOTSTRAP_SERVERS"):
        return None
    return passwords.read(Path(secrets)).get(user)


def clear(path: Path, pid: int) -> None:
    """Remove the record if it is still this process's."""
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass
