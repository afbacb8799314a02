"""SHA-256 reputation: known-bad attachments by hash.

The list is a text file, one lowercase or uppercase hex SHA-256 a line, optionally followed by
whitespace and a name (``<sha256> Trojan.Foo``); ``#`` starts a comment. Every part and archive
member is hashed (not the raw message: a known-bad file is found whatever mail carries it); a
listed hash is ``infected`` with the symbol ``sha256:<name or hash>``. The file is re-read when
its modification time or size changes, at most every ``reload_interval`` seconds, so ops can
update it without a restart; a file that vanished keeps the last list in force.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import threading
import time
from pathlib import Path

from mxgate.errors import ConfigError
from scanner.engines.base import Finding, Kind, ParsedMessage
from scanner.mime import RAW_PATH

__all__ = ["ReputationEngine", "load_list"]

_log = logging.getLogger(__name__)
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


def load_list(path: Path) -> dict[str, str]:
    """Parse a hash list: sha256 -> name (the hash itself when unnamed). Bad lines are skipped."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        digest, _, name = line.partition(" ")
        digest = digest.strip()
        if _HEX.match(digest):
            out[digest.lower()] = name.strip() or digest.lower()
    return out


class ReputationEngine:
    """The ``reputation`` antivirus engine. Safe to call concurrently."""

    name: str = "reputation"
    kind: Kind = "antivirus"
    cacheable: bool = True

    def __init__(self, path: Path | str | None, *, reload_interval: float = 5.0) -> None:
        if path is None:
            raise ConfigError(
                "MXGATE_SCANNER__REPUTATION_FILE", "scanner.reputation_file", "not set"
            )
        self._path = Path(path)
        self._interval = reload_interval
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._hashes: dict[str, str] = {}
        self._version = "empty"
        self._next = 0.0
        try:
            self._reload()
        except OSError as e:
            raise ConfigError(str(self._path), "-", f"cannot read: {e}") from None

    def _reload(self) -> None:
        st = os.stat(self._path)
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        data = self._path.read_bytes()
        hashes = load_list(self._path)
        with self._lock:
            self._hashes, self._stamp = hashes, stamp
            self._version = f"list-{hashlib.sha256(data).hexdigest()[:16]}-{len(hashes)}"

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._interval
        try:
            self._reload()
        except OSError as e:
            _log.warning("reputation list unreadable, keeping the last one: %s", e)

    @property
    def version(self) -> str:
        """This engine's implementation version."""
        return "1"

    @property
    def rules_version(self) -> str:
        """A digest of the list in force and its size."""
        return self._version

    async def check(self, message: ParsedMessage) -> Finding:
        """Hash every part; ``infected`` when one is listed."""
        self._maybe_reload()
        with self._lock:
            hashes, version = self._hashes, self._version
        hits = await asyncio.to_thread(_lookup, message, hashes)
        return Finding(
            self.name, self.version, version, "infected" if hits else "clean",
            symbols=tuple(dict.fromkeys(f"sha256:{n}" for n in hits.values())),
            kind=self.kind, detail=hits,
        )

    async def aclose(self) -> None:
        """Nothing to release."""


def _lookup(message: ParsedMessage, hashes: dict[str, str]) -> dict[str, str]:
    hits: dict[str, str] = {}
    if not hashes:
        return hits
    for part in message.parts:
        if part.path == RAW_PATH or not part.data:
            continue
        name = hashes.get(hashlib.sha256(part.data).hexdigest())
        if name is not None:
            hits.setdefault(part.path, name)
    return hits
