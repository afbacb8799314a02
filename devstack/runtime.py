"""What `mxgate up` chose at run time (broker, clamd socket, paths), for later commands.

`mxgate up` starts a local broker and clamd on ports and sockets it picks; a second shell
running `mxgate trace` or `mxgate replay` must find the same ones without the user copying
variables. `up` writes its choices to ``var/runtime.json``; the CLI takes them as defaults
beneath the user's own environment, and only while that `up` process is alive.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DEFAULT_PATH = Path("var/runtime.json")


def write(path: Path, env: dict[str, str]) -> None:
    """Record the MXGATE_* choices of this `up` process (pid included) atomically, passwords
    left out."""
    # Secrets stay in the environment they came from: this file is read by any later shell.
    chosen = {
        k: v for k, v in env.items() if k.startswith("MXGATE_") and not k.endswith("_PASSWORD")
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "env": chosen}, indent=2))
    tmp.replace(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load(path: Path = DEFAULT_PATH) -> dict[str, str]:
    """The live `up` process's choices, or nothing if there is none (or the file is stale)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or not _alive(int(data.get("pid", 0) or 0)):
        return {}
    env = data.get("env", {})
    return {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {}


def clear(path: Path, pid: int) -> None:
    """Remove the record if it is still this process's."""
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass
