"""Process isolation for engines in native code: a crash costs one verdict, not the scanner.

:class:`IsolatedEngine` looks like any engine to the runner, but the real engine lives in
``workers`` child processes (``spawn``, so no lock or thread state of the scanner is inherited),
each built by the same registry factory. A message is pickled to a free worker over a pipe and
the finding comes back the same way.

- A worker that dies mid-scan (segfault in libyara/libmagic, OOM kill, ``kill -9``) fails that
  one scan with :class:`EngineCrashed`; the next scan gets a fresh worker.
- A scan cancelled by the scanner's timeout kills its worker, since a hung native call cannot
  be interrupted any other way; the next scan gets a fresh worker.
- Each worker runs under an address-space limit, so a decompression or parser bomb inside an
  engine ends in ``MemoryError`` (an ``error`` finding) instead of swapping the host.
- Waiting for a free worker is not scan time: the wait is excluded from the runner's engine
  timeout (:func:`~scanner.engines.common.queue_wait`) and bounded by its own
  ``queue_timeout``; running out of it raises :class:`~scanner.engines.common.EngineBusy`, a
  recorded missing verdict that does not open the engine's circuit.

Hand-written rather than ``concurrent.futures.ProcessPoolExecutor``: the pool cannot kill one
hung worker (only shut the whole pool down), and it breaks every pending future when one worker
dies, which would turn one crash into many lost verdicts.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from scanner.engines.common import (
    Engine,
    EngineBase,
    EngineBusy,
    Finding,
    Kind,
    ParsedMessage,
    queue_wait,
)

__all__ = ["EngineCrashed", "IsolatedEngine"]

_CTX = multiprocessing.get_context("spawn")


class EngineCrashed(Exception):
    """The engine's worker process died while scanning."""


@dataclass(eq=False)  # identity: workers live in a set
class _Worker:
    proc: Any  # multiprocessing.Process (spawn context)
    conn: multiprocessing.connection.Connection

    def kill(self) -> None:
        """SIGKILL the process and reap it (blocking: call from a helper thread)."""
        with contextlib.suppress(Exception):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.join(5)
        with contextlib.suppress(Exception):
            self.conn.close()


@dataclass
class _Job:
    """One scan's hold on a worker slot, shared by the event loop and the helper thread."""

    worker: _Worker | None
    abandoned: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def _consume(fut: Any) -> None:
    """Retrieve an abandoned scan's outcome so that asyncio does not log it as lost."""
    if not fut.cancelled():
        fut.exception()


def _worker_main(
    conn: multiprocessing.connection.Connection,
    factory: Callable[[Any], Engine],
    settings: Any,
    memory_mb: int,
) -> None:
    """The worker: build the engine, say hello with its versions, then scan until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the scanner decides when workers stop
    if memory_mb:
        import resource

        limit = memory_mb * 1024 * 1024
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        engine = factory(settings)
    except BaseException as e:
        conn.send(("fail", repr(e)))
        return
    conn.send(("hello", engine.version, engine.rules_version))
    loop = asyncio.new_event_loop()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break  # the scanner went away: so do we
        if msg is None:
            break
        try:
            finding = loop.run_until_complete(engine.check(msg))
            conn.send(("ok", finding))
        except BaseException as e:
            conn.send(("err", repr(e)[:500]))
    with contextlib.suppress(BaseException):
        loop.run_until_complete(engine.aclose())


class IsolatedEngine(EngineBase):
    """An engine run in worker processes. Same interface as the engine it wraps."""

    def __init__(
        self,
        name: str,
        kind: Kind,
        factory: Callable[[Any], Engine],
        settings: Any,
        *,
        workers: int = 2,
        memory_mb: int = 2048,
        cacheable: bool = True,
        queue_timeout: float = 30.0,
    ) -> None:
        """``factory(settings)`` builds the real engine in each worker; both must pickle
        (a module-level function and a pydantic settings object do). ``queue_timeout``: the
        longest one scan waits for a free worker."""
        self.name = name
        self.kind = kind
        self.cacheable = cacheable
        self._factory = factory
        self._settings = settings
        self._memory_mb = memory_mb
        self.queue_timeout = queue_timeout
        self._version = "unknown"
        self._rules = "unknown"
        self._free: asyncio.Queue[_Worker | None] | None = None
        self._size = workers
        self._threads = ThreadPoolExecutor(workers, thread_name_prefix=f"iso-{name}")
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self.restarts = 0

    @property
    def version(self) -> str:
        """The engine's version as its workers last reported it."""
        return self._version

    @property
    def rules_version(self) -> str:
        """The rules version as its workers last reported it (rules reload in the workers)."""
        return self._rules

    def worker_pids(self) -> list[int]:
        """PIDs of the live workers (for ops and for crash tests)."""
        with self._lock:
            return [w.proc.pid for w in self._all if w.proc.is_alive()]

    def _queue(self) -> asyncio.Queue[_Worker | None]:
        if self._free is None:
            self._free = asyncio.Queue()
            for _ in range(self._size):
                self._free.put_nowait(None)  # a slot whose worker starts on first use
        return self._free

    async def start(self) -> None:
        """Start every worker now (otherwise they start on first use); raises if one fails."""
        q = self._queue()
        slots = [q.get_nowait() for _ in range(q.qsize())]
        try:
            for i, w in enumerate(slots):
                if w is None:
                    slots[i] = await asyncio.get_running_loop().run_in_executor(
                        self._threads, self._spawn
                    )
        finally:
            for w in slots:
                q.put_nowait(w)

    def _spawn(self) -> _Worker:
        parent, child = _CTX.Pipe()
        proc = _CTX.Process(
            target=_worker_main,
            args=(child, self._factory, self._settings, self._memory_mb),
            name=f"mxgate-engine-{self.name}",
            daemon=True,
        )
        proc.start()
        child.close()  # else the parent's copy keeps the pipe open and a dead worker is not seen
        w = _Worker(proc, parent)
        try:
            hello = parent.recv()
        except (EOFError, OSError):
            w.kill()
            raise EngineCrashed(
                f"{self.name} worker died on start (exit {proc.exitcode})"
            ) from None
        if hello[0] != "hello":
            w.kill()
            raise EngineCrashed(f"{self.name} worker could not build the engine: {hello[1]}")
        self._version, self._rules = str(hello[1]), str(hello[2])
        with self._lock:
            self._all.add(w)
        return w

    def _roundtrip(self, job: _Job, msg: ParsedMessage) -> Any:
        """In a helper thread: (re)start the slot's worker if needed, send, wait for a reply."""
        w = job.worker
        if w is None or not w.proc.is_alive():
            if w is not None:
                self._forget(w)
                self.restarts += 1
            w = self._spawn()
        with job.lock:
            # The scan may have been abandoned while the worker started: do not send then.
            if job.abandoned:
                self._forget(w)
                return ("err", "abandoned")
            job.worker = w
        try:
            w.conn.send(msg)
            return w.conn.recv()
        except (EOFError, OSError):
            w.proc.join(5)
            code = w.proc.exitcode
            self._forget(w)
            with job.lock:
                job.worker = None
            self.restarts += 1
            raise EngineCrashed(f"{self.name} worker died mid-scan (exit {code})") from None

    def _forget(self, w: _Worker) -> None:
        w.kill()
        with self._lock:
            self._all.discard(w)

    async def check(self, message: ParsedMessage) -> Finding:
        """Scan in a worker; :class:`EngineCrashed` if it died, cancellation kills it."""
        q = self._queue()
        try:
            with queue_wait():
                async with asyncio.timeout(self.queue_timeout):
                    slot = await q.get()
        except TimeoutError:
            raise EngineBusy(f"no free {self.name} worker within {self.queue_timeout:g}s") from None
        job = _Job(slot)
        fut = asyncio.get_running_loop().run_in_executor(
            self._threads, self._roundtrip, job, message
        )
        try:
            reply = await asyncio.shield(fut)
        except asyncio.CancelledError:
            # A timeout (or shutdown): the worker may be stuck in native code, which nothing
            # but a kill interrupts. Killing it makes the helper thread's recv() return.
            self._abandon(job)
            fut.add_done_callback(_consume)
            q.put_nowait(None)
            raise
        except BaseException:
            q.put_nowait(job.worker)
            raise
        q.put_nowait(job.worker)
        kind, value = reply
        if kind == "err":
            raise RuntimeError(value)
        finding: Finding = value
        self._version, self._rules = finding.engine_version, finding.rules_version
        return finding

    def _abandon(self, job: _Job) -> None:
        with job.lock:
            job.abandoned = True
            w, job.worker = job.worker, None
        if w is not None:
            w.proc.kill()  # no join here (this runs on the event loop): the thread reaps it
            self.restarts += 1

    async def aclose(self) -> None:
        """Stop every worker and the helper threads."""
        with self._lock:
            workers = list(self._all)
            self._all.clear()
        for w in workers:
            with contextlib.suppress(Exception):
                w.conn.send(None)
        for w in workers:
            await asyncio.to_thread(w.proc.join, 5)
            w.kill()
        self._threads.shutdown(wait=False, cancel_futures=True)


def kill_worker(pid: int) -> None:
    """SIGKILL one worker (tests simulate an engine crash with this)."""
    os.kill(pid, signal.SIGKILL)
