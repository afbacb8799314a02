"""EngineRunner: circuit breaker, runtime switches, verdict cache, status."""

from __future__ import annotations

from dataclasses import dataclass, field

from mxgate.tenants import Policy
from scanner.engines.common import Finding, Kind, ParsedMessage
from scanner.policy import decide
from scanner.runner import EngineRunner


@dataclass
class Flaky:
    """Fails while ``failing`` is set; counts its calls."""

    name: str
    failing: bool = False
    kind: Kind = "antivirus"
    cacheable: bool = True
    calls: int = 0
    rules: str = "r1"

    @property
    def version(self) -> str:
        return "1"

    @property
    def rules_version(self) -> str:
        return self.rules

    async def check(self, message: ParsedMessage) -> Finding:
        self.calls += 1
        if self.failing:
            raise ConnectionError("down")
        return Finding(self.name, "1", self.rules, "clean", kind=self.kind)

    async def aclose(self) -> None:
        pass


@dataclass
class Switches:
    off: dict[str, str] = field(default_factory=dict)

    def disabled_reason(self, engine: str) -> str | None:
        return self.off.get(engine)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _msg(body: bytes = b"x") -> ParsedMessage:
    return ParsedMessage("m", "t", body, (), ())


async def test_breaker_opens_after_consecutive_failures_and_probes_back() -> None:
    e, clock = Flaky("av", failing=True), Clock()
    r = EngineRunner(
        [e], timeout=5, breaker_failures=3, breaker_cooldown=10, clock=clock, cache_entries=0
    )
    for _ in range(3):
        assert (await r.run(_msg())).findings[0].error == "ConnectionError('down')"
    assert r.state("av") == "open"
    res = await r.run(_msg())
    assert res.findings[0].outcome == "error" and res.findings[0].error == "circuit-open"
    assert res.findings[0].detail["missing"] == "circuit-open"
    assert res.active == [] and e.calls == 3  # not asked while open
    # A missing verdict, which the default policy holds back, naming why.
    held = decide(res.findings, Policy())
    assert (held.action, held.reasons) == (
        "quarantine",
        ("av-unavailable", "av-missing:av:circuit-open"),
    )
    clock.now = 11
    assert r.state("av") == "half-open"
    await r.run(_msg())  # the probe fails: open again for another cooldown
    assert e.calls == 4 and r.state("av") == "open"
    e.failing = False
    clock.now = 22
    res = await r.run(_msg())
    assert res.findings[0].outcome == "clean" and r.state("av") == "enabled"
    assert res.active == ["av"]


async def test_a_success_resets_the_failure_count() -> None:
    e = Flaky("av")
    r = EngineRunner([e], timeout=5, breaker_failures=2, cache_entries=0)
    for failing in (True, False, True, False):
        e.failing = failing
        await r.run(_msg())
    assert r.state("av") == "enabled"


async def test_ops_switch_takes_an_engine_out_and_back_without_restart() -> None:
    a, b = Flaky("a"), Flaky("b")
    sw = Switches()
    r = EngineRunner([a, b], timeout=5, controls=sw, cache_entries=0)
    assert (await r.run(_msg())).active == ["a", "b"]
    sw.off["a"] = "false positives"
    res = await r.run(_msg())
    assert res.active == ["b"] and a.calls == 1  # not asked while switched off...
    off, on = res.findings
    # ...but recorded: a switched-off engine is a missing verdict, not a silent gap.
    assert (off.engine, off.outcome, off.detail["missing"]) == ("a", "disabled", "disabled")
    assert off.error == "disabled: false positives"
    assert (on.engine, on.outcome) == ("b", "clean")
    assert r.state("a") == "disabled"
    del sw.off["a"]
    assert (await r.run(_msg())).active == ["a", "b"]


async def test_cache_is_keyed_by_body_engine_and_rules_version() -> None:
    e = Flaky("av")
    r = EngineRunner([e], timeout=5, cache_entries=10)
    await r.run(_msg(b"one"))
    hit = await r.run(_msg(b"one"))
    assert e.calls == 1 and hit.findings[0].detail["cached"] == "true"
    await r.run(_msg(b"two"))
    assert e.calls == 2  # another body
    e.rules = "r2"
    await r.run(_msg(b"one"))
    assert e.calls == 3  # new signatures: scanned again


async def test_failures_are_never_cached() -> None:
    e = Flaky("av", failing=True)
    r = EngineRunner([e], timeout=5, cache_entries=10, breaker_failures=100)
    await r.run(_msg())
    e.failing = False
    assert (await r.run(_msg())).findings[0].outcome == "clean" and e.calls == 2


async def test_status_reports_error_rate_and_percentiles() -> None:
    e = Flaky("av")
    r = EngineRunner([e], timeout=5, cache_entries=0, breaker_failures=100)
    for i in range(4):
        e.failing = i == 0
        await r.run(_msg())
    (st,) = r.status()
    assert st["engine"] == "av" and st["scans"] == 4 and st["errors"] == 1
    assert st["error_rate"] == 0.25 and st["state"] == "enabled"
    assert st["p99_ms"] >= st["p50_ms"] >= 0
