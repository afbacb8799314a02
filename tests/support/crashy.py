"""A test engine that misbehaves on demand, for process-isolation tests.

The body decides: ``SEGV`` crashes the interpreter with a real segmentation fault (what a bug in
native code does), ``EXIT`` kills the process, ``HANG`` blocks in a non-cancellable call,
``RAISE`` raises, ``ALLOC`` asks for more memory than the worker's limit, ``SLOW`` holds the
worker for a second and then answers clean; anything else is clean.

:class:`Killer` does the same to whole roles: SIGKILL of a receiver, scanner or deliverer process
at seeded points, and a restart.
"""

from __future__ import annotations

import ctypes
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scanner.engines.common import Finding, Kind, ParsedMessage

if TYPE_CHECKING:  # not at run time: spawned engine workers import this module too
    from support.pipeline import Pipeline


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


# -- killing whole roles -----------------------------------------------------------------------


@dataclass
class Killer:
    """SIGKILLs the role processes ``names`` of a pipeline at seeded points of a progress count
    and restarts each (same instance name, so the restart fences the dead one), on its own thread.

    ``progress()`` is polled; kill ``k`` happens once it reaches ``at[k]``, after a seeded jitter
    of up to ``jitter`` seconds, and the process stays down for up to ``down`` seconds. ``log``
    records ``(name, progress at the kill, seconds since start)`` for a failure's message;
    ``error`` holds what went wrong on the thread (a restart that did not come up), for
    :meth:`join` to raise.
    """

    pipeline: Pipeline
    role: str
    names: list[str]
    progress: Callable[[], int]
    at: list[int]
    rng: random.Random
    jitter: float = 1.0
    down: float = 1.5
    timeout: float = 240.0
    log: list[tuple[str, int, float]] = field(default_factory=list)
    error: BaseException | None = None
    _thread: threading.Thread | None = None
    _t0: float = 0.0

    def start(self) -> Killer:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"killer-{self.role}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        from support.pipeline import wait_for

        try:
            for threshold in sorted(self.at):
                wait_for(
                    lambda t=threshold: self.progress() >= t,  # type: ignore[misc]
                    self.timeout,
                    f"{self.role} progress {threshold} to kill at",
                )
                time.sleep(self.rng.uniform(0, self.jitter))
                name = self.rng.choice(self.names)
                self.log.append((name, self.progress(), round(time.monotonic() - self._t0, 1)))
                self.pipeline.kill(name)
                time.sleep(self.rng.uniform(0, self.down))
                self.pipeline.start(self.role, name)
        except BaseException as e:  # surfaced by join()
            self.error = e

    def join(self, timeout: float = 300.0) -> None:
        """Wait for every planned kill and restart; raise what failed on the thread."""
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"{self.role} killer still running after {timeout:.0f}s")
        if self.error is not None:
            raise self.error
