"""Run every engine on one message, concurrently, each under its own timeout. Never raises.

An engine that raises becomes an ``error`` finding and one that does not answer in time a
``timeout`` finding (:func:`scanner.engines.base.failure`); the other engines still report, and
the tenant's policy decides what a missing verdict means.

Engines must be cooperative: the timeout cancels ``check()`` at its next ``await``, so blocking
work belongs in a worker thread (as the YARA engine does), never on the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence

from scanner.engines.base import Engine, Finding, ParsedMessage, failure

__all__ = ["run_engines"]


async def run_engines(
    engines: Sequence[Engine], msg: ParsedMessage, timeout: float
) -> list[Finding]:
    """One finding per engine, in the engines' order, each with ``duration_ms`` filled in."""
    return list(await asyncio.gather(*(_run_one(e, msg, timeout) for e in engines)))


async def _run_one(engine: Engine, msg: ParsedMessage, timeout: float) -> Finding:
    start = time.perf_counter()

    def elapsed() -> float:
        return (time.perf_counter() - start) * 1000.0

    try:
        async with asyncio.timeout(timeout):
            finding = await engine.check(msg)
    except TimeoutError:
        return failure(engine, "timeout", f"no answer within {timeout:g}s", elapsed())
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the scanner itself is being cancelled (shutdown, rebalance): let it
        # The engine cancelled something of its own and let that escape: an engine failure.
        return failure(engine, "error", "CancelledError()", elapsed())
    except Exception as e:
        return failure(engine, "error", repr(e), elapsed())
    if not isinstance(finding, Finding):
        return failure(engine, "error", f"check() returned {type(finding).__name__}", elapsed())
    return dataclasses.replace(finding, duration_ms=elapsed())
