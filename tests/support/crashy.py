"""A test engine that misbehaves on demand, for process-isolation tests.

The body decides: ``SEGV`` crashes the interpreter with a real segmentation fault (what a bug in
native code does), ``EXIT`` kills the process, ``HANG`` blocks in a non-cancellable call,
``RAISE`` raises, ``ALLOC`` asks for more memory than the worker's limit, ``SLOW`` holds the
worker for a second and then answers clean; anything else is clean.
"""

from __future__ import annotations

import ctypes
import os
import time

from scanner.engines.common import Finding, Kind, ParsedMessage


class CrashyEngine:
    """Misbehaves according to the message body."""

    name: str = "crashy"
    kind: Kind = "antivirus"
    cacheable: bool = False

    @property
    def version(self) -> str:
        return "1.0"

    @property
    def rules_version(self) -> str:
        return f"pid-{os.getpid()}"

    async def check(self, message: ParsedMessage) -> Finding:
        body = message.raw
        if b"SEGV" in body:
            ctypes.string_at(0)  # a genuine segfault
        if b"EXIT" in body:
            os._exit(3)
        if b"HANG" in body:
            time.sleep(3600)  # noqa: ASYNC251 - a blocking hang, as native code hangs
        if b"SLOW" in body:
            time.sleep(1.0)  # noqa: ASYNC251 - a busy worker, as a long native scan is
        if b"RAISE" in body:
            raise ValueError("engine exploded")
        if b"ALLOC" in body:
            _ = bytearray(8 * 1024 * 1024 * 1024)
        return Finding(self.name, self.version, self.rules_version, "clean", kind=self.kind)

    async def aclose(self) -> None:
        pass


def crashy_factory(settings: object) -> CrashyEngine:
    """Module-level, so it pickles into a spawned worker."""
    return CrashyEngine()
