"""ClamAV: a real clamd (Debian clamav-daemon) on the project-built signature database.

One clamd for the module, on a unix socket in a tmp dir; tests that kill clamd start their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import samples
from support.pipeline import free_port

from devstack.clamd import Clamd
from mxgate.settings import ScannerSettings
from mxgate.tenants import Policy
from scanner.engines.clamav import ClamAVEngine, ClamdError, db_digest
from scanner.engines.isolated import IsolatedEngine, kill_worker
from scanner.engines.registry import build_engines
from scanner.mime import parse
from scanner.policy import Decision, decide
from scanner.runner import EngineRunner, RunResult


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    d = Clamd(tmp_path_factory.mktemp("clamd")).start()
    try:
        yield d
    finally:
        d.stop()


def _msg(raw: bytes, mid: str = "m1"):  # type: ignore[no-untyped-def]
    return parse(raw, message_id=mid, tenant="example")


@pytest.mark.parametrize(
    "build",
    [
        samples.eicar_plain,
        samples.eicar_base64_as_image,
        samples.eicar_zip,
        samples.eicar_zip_in_zip,
        samples.eicar_qp,
    ],
)
async def test_clamd_finds_eicar_in_every_wrapping(clamd: Clamd, build) -> None:  # type: ignore[no-untyped-def]
    engine = ClamAVEngine(clamd.socket, db_dir=clamd.db)
    f = await engine.check(_msg(build()))
    assert f.outcome == "infected"
    assert f.symbols and f.symbols[0].startswith("Mxgate.Test.EICAR")
    # The verdict names clamd's version and the database it scanned with.
    assert f.engine_version.startswith("1.")
    assert f.rules_version == db_digest(clamd.db)


async def test_clamd_passes_clean_mail_and_the_zip_bomb_is_not_an_outage(clamd: Clamd) -> None:
    engine = ClamAVEngine(clamd.socket, db_dir=clamd.db)
    assert (await engine.check(_msg(samples.clean_message()))).outcome == "clean"
    bomb = await engine.check(_msg(samples.zip_bomb()))
    assert bomb.outcome in ("clean", "infected")  # clamd's own limits answer; no error


async def test_clamd_over_tcp(tmp_path: Path) -> None:
    d = Clamd(tmp_path, f"tcp://127.0.0.1:{free_port()}").start()
    try:
        engine = ClamAVEngine(d.socket)
        f = await engine.check(_msg(samples.eicar_zip()))
        assert f.outcome == "infected"
        # No official database and no db_dir: the version cannot be named, and says so.
        assert f.rules_version == "unknown"
    finally:
        d.stop()


async def test_unreachable_clamd_is_an_error_not_a_crash(tmp_path: Path) -> None:
    engine = ClamAVEngine(str(tmp_path / "nobody.sock"))
    with pytest.raises(ClamdError):
        await engine.check(_msg(samples.clean_message()))


async def test_verdict_cache_skips_identical_bodies(clamd: Clamd) -> None:
    engine = ClamAVEngine(clamd.socket, db_dir=clamd.db)
    runner = EngineRunner([engine], timeout=20)
    raw = samples.eicar_zip()
    first = await runner.run(_msg(raw, "a"))
    second = await runner.run(_msg(raw, "b"))
    assert first.findings[0].outcome == second.findings[0].outcome == "infected"
    assert "cached" not in first.findings[0].detail
    assert second.findings[0].detail.get("cached") == "true"
    assert runner.cache.hits == 1


async def test_killing_engines_mid_scan_still_decides_every_message(tmp_path: Path) -> None:
    """clamd is SIGKILLed and a YARA worker process is SIGKILLed while a stream of messages is
    being scanned: every message still gets a decision, failures are recorded verdicts, the
    policy applies, and both engines come back (a fresh worker; a restarted clamd)."""
    d = Clamd(tmp_path).start()
    settings = ScannerSettings(
        engines=("clamav", "yara"),
        clamav_socket=d.socket,
        clamav_db_dir=d.db,
        isolated=("yara",),
        isolation_workers=1,
        engine_timeout=15,
        breaker_failures=3,
        breaker_cooldown=0.5,
        cache_entries=0,
    )
    engines = build_engines(settings)
    yara = engines[1]
    assert isinstance(yara, IsolatedEngine)
    runner = EngineRunner(
        engines,
        timeout=settings.engine_timeout,
        breaker_failures=settings.breaker_failures,
        breaker_cooldown=settings.breaker_cooldown,
        cache_entries=0,
    )
    # This tenant accepts one antivirus engine's clean while the other is down (the default
    # fails closed); the rule that let such a message through is then in its reasons.
    policy = Policy(on_engine_error="quarantine", on_av_partial_failure="deliver")
    raws = [samples.eicar_zip() if i % 3 == 0 else samples.clean_message(i) for i in range(40)]
    results: dict[int, tuple[RunResult, Decision]] = {}
    done = asyncio.Event()
    gate = asyncio.Semaphore(6)  # scans in flight when the kills land

    async def one(i: int, raw: bytes) -> None:
        async with gate:
            res = await runner.run(_msg(raw, f"m{i}"))
            results[i] = (res, decide(res.findings, policy))
            if len(results) == 12:
                done.set()

    async def killer() -> None:
        await done.wait()
        d.kill()
        kill_worker(yara.worker_pids()[0])

    try:
        await yara.start()  # type: ignore[attr-defined]
        await asyncio.gather(killer(), *(one(i, r) for i, r in enumerate(raws)))
        assert len(results) == len(raws)  # every message decided
        clam = [res.findings[0] for res, _ in results.values()]
        assert sum(f.outcome == "error" for f in clam) >= len(raws) - 12 - 6
        assert any(f.error == "circuit-open" for f in clam)
        assert runner.state("clamav") in ("open", "half-open")
        yara_lost = [res for res, _ in results.values() if res.findings[1].outcome == "error"]
        assert len(yara_lost) <= 6  # at most the scans queued on the killed worker
        assert yara.restarts >= 1
        # Bring clamd back: the half-open probe closes the circuit.
        d.start()
        await asyncio.sleep(0.6)
        res = await runner.run(_msg(samples.eicar_plain(), "back"))
        assert res.findings[0].outcome == "infected"
        assert runner.state("clamav") == "enabled"
    finally:
        for e in engines:
            await e.aclose()
        d.stop()
    for i, (res, dec) in results.items():
        outcomes = {f.engine: f.outcome for f in res.findings}
        if "infected" in outcomes.values() or "clean" not in outcomes.values():
            # A detection, or no antivirus answered at all: held back either way.
            assert dec.action == "quarantine", (i, res.findings)
        else:
            # Clean, or one antivirus answered clean while another failed: "degraded", which
            # this policy delivers, saying so.
            assert dec.action == "deliver", (i, res.findings)
            if "error" in outcomes.values() or "timeout" in outcomes.values():
                assert "allowed:on_av_partial_failure=deliver" in dec.reasons, (i, dec)
        if i % 3 == 0 and outcomes["yara"] == "clean":
            pytest.fail(f"YARA missed EICAR in message {i}")
