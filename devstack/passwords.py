"""The local broker's SCRAM passwords: made at first start, kept in one file only its owner reads.

`mxgate up` gives every role its own Kafka user; their passwords are random, written once to a
JSON file of mode 0600 (in a 0700 folder) and read back on every later start, so the broker's
formatted credentials and the roles' settings always agree. Nothing else holds them:
``var/runtime.json`` names this file, never a password.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

__all__ = ["ensure", "read"]

_BYTES = 24  # 192 random bits, URL-safe base64: no quoting trouble in JAAS or SCRAM arguments


def read(path: Path) -> dict[str, str]:
    """``user -> password`` from the file, or nothing if it is missing or not ours to trust.

    A file others may read is refused rather than used: its passwords are no secret any more.
    """
    try:
        if path.stat().st_mode & 0o077:
            return {}
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict):
        return {}
    return {str(k): str(v) for k, v in users.items()}


def ensure(path: Path, users: Iterable[str]) -> dict[str, str]:
    """The passwords of ``users``: those already in the file, new random ones for the rest.

    The file is rewritten (atomically, 0600 from its creation) only when a user was missing.
    """
    wanted = list(users)
    known = read(path)
    if path.exists() and not known:
        # Unreadable, corrupt or readable by others: these passwords cannot be trusted.
        raise PermissionError(
            f"{path} is not a private (mode 0600) JSON file of passwords: fix or remove it "
            "(a removed file makes new passwords, and `mxgate up` then starts a new broker)"
        )
    missing = [u for u in wanted if u not in known]
    if not missing:
        return {u: known[u] for u in wanted}
    known |= {u: secrets.token_urlsafe(_BYTES) for u in missing}
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"users": dict(sorted(known.items()))}, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return {u: known[u] for u in wanted}
