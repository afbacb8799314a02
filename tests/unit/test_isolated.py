"""Process isolation: a crash or hang in an engine costs that one verdict, never the scanner."""

from __future__ import annotations

import asyncio

from support.crashy import crashy_factory

from mxgate.tenants import Policy
from scanner.engines.common import ParsedMessage
from scanner.engines.isolated import EngineCrashed, IsolatedEngine
from scanner.policy import decide
from scanner.runner import EngineRunner


def _msg(body: bytes, mid: str = "m") -> ParsedMessage:
    return ParsedMessage(mid, "t", body, (), ())


def _engine(workers: int = 1, memory_mb: int = 512) -> IsolatedEngine:
    return IsolatedEngine(
        "crashy", "antivirus", crashy_factory, None, workers=workers, memory_mb=memory_mb
    )


async def test_segfault_costs_one_verdict_and_the_worker_is_replaced() -> None:
    e = _engine()
    try:
        first = await e.check(_msg(b"hello"))
        pid = first.rules_version
        try:
            await e.check(_msg(b"SEGV"))
        except EngineCrashed as err:
            assert "exit -11" in str(err)  # SIGSEGV, reported as such
        else:
            raise AssertionError("a segfault was not reported")
        after = await e.check(_msg(b"hello"))
        assert after.outcome == "clean"
        assert after.rules_version != pid  # a fresh process answered
        assert e.restarts >= 1
    finally:
        await e.aclose()


async def test_a_hung_worker_is_killed_at_the_timeout_and_replaced() -> None:
    e = _engine()
    runner = EngineRunner([e], timeout=2.0, breaker_failures=10)
    try:
        await e.start()
        pid_before = set(e.worker_pids())
        hung = await runner.run(_msg(b"HANG"))
        assert hung.findings[0].outcome == "timeout"
        ok = await runner.run(_msg(b"fine"))
        assert ok.findings[0].outcome == "clean"
        assert not pid_before & set(e.worker_pids())  # the hung process is gone
    finally:
        await e.aclose()


async def test_crashes_among_concurrent_scans_lose_only_their_own_verdicts() -> None:
    e = _engine(workers=2)
    runner = EngineRunner([e], timeout=20.0, breaker_failures=100)
    bodies = [b"EXIT" if i % 5 == 0 else b"RAISE" if i % 7 == 0 else b"ok" for i in range(30)]
    try:
        results = await asyncio.gather(
            *(runner.run(_msg(b, f"m{i}")) for i, b in enumerate(bodies))
        )
    finally:
        await e.aclose()
    assert len(results) == len(bodies)
    for b, r in zip(bodies, results, strict=True):
        f = r.findings[0]
        if b == b"ok":
            assert f.outcome == "clean", f
        else:
            assert f.outcome == "error", f
            assert ("died mid-scan" in (f.error or "")) == (b == b"EXIT")


async def test_memory_bomb_in_an_engine_is_an_error_not_an_oom() -> None:
    e = _engine(memory_mb=256)
    try:
        try:
            await e.check(_msg(b"ALLOC"))
        except RuntimeError as err:
            assert "MemoryError" in str(err)
        else:
            raise AssertionError("allocation beyond the limit succeeded")
        assert (await e.check(_msg(b"ok"))).outcome == "clean"
    finally:
        await e.aclose()


async def test_a_factory_that_fails_is_reported_at_start() -> None:
    e = IsolatedEngine("broken", "antivirus", _no_engine, None, workers=1)
    try:
        try:
            await e.start()
        except EngineCrashed as err:
            assert "could not build" in str(err)
        else:
            raise AssertionError("start() hid a broken factory")
    finally:
        await e.aclose()


def _no_engine(settings: object) -> object:
    raise RuntimeError("no rules")


async def test_waiting_for_a_worker_does_not_count_against_the_engine_timeout() -> None:
    # Four scans of a second each share one worker: the last waits three seconds for it. The
    # engine timeout (2.5 s) covers each scan, not the queue in front of it.
    e = IsolatedEngine("crashy", "antivirus", crashy_factory, None, workers=1, queue_timeout=60)
    runner = EngineRunner([e], timeout=2.5, breaker_failures=1)
    try:
        await e.start()
        results = await asyncio.gather(*(runner.run(_msg(b"SLOW", f"m{i}")) for i in range(4)))
    finally:
        await e.aclose()
    assert [r.findings[0].outcome for r in results] == ["clean"] * 4
    assert runner.state("crashy") == "enabled"


async def test_a_queue_wait_overrun_is_a_missing_verdict_that_does_not_open_the_breaker() -> None:
    e = IsolatedEngine("crashy", "antivirus", crashy_factory, None, workers=1, queue_timeout=0.3)
    runner = EngineRunner([e], timeout=20.0, breaker_failures=1)
    try:
        await e.start()
        busy, waited = await asyncio.gather(
            runner.run(_msg(b"SLOW", "first")), runner.run(_msg(b"ok", "second"))
        )
        assert busy.findings[0].outcome == "clean"
        lost = waited.findings[0]
        assert (lost.outcome, lost.detail["missing"]) == ("error", "queue-wait")
        assert (lost.error or "").startswith("queue-wait: no free crashy worker")
        # One failure opens this breaker, but a full queue is load, not a broken engine.
        assert runner.state("crashy") == "enabled"
        assert (await runner.run(_msg(b"ok", "third"))).findings[0].outcome == "clean"
    finally:
        await e.aclose()
    decision = decide([lost], Policy())
    assert decision.action == "quarantine"
    assert decision.reasons == ("av-unavailable", "av-missing:crashy:queue-wait")
