"""run_engines: every engine concurrently, failures become findings; and the engine registry."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from support import samples

from mxgate.errors import ConfigError
from mxgate.settings import ScannerSettings
from scanner.engines.common import Finding, Kind, ParsedMessage
from scanner.engines.content_rules import ContentRulesEngine
from scanner.engines.isolated import IsolatedEngine
from scanner.engines.registry import ENGINES, build_engines
from scanner.engines.yara_engine import YaraEngine
from scanner.mime import parse
from scanner.runner import run_engines

MSG = ParsedMessage("m", "t", b"hello", (), ())


@dataclass
class Fake:
    """A test engine whose check() does whatever ``behaviour`` says."""

    name: str
    behaviour: str = "clean"
    kind: Kind = "antivirus"
    started: asyncio.Event | None = None
    cacheable: bool = False

    @property
    def version(self) -> str:
        return "9.9"

    @property
    def rules_version(self) -> str:
        if self.behaviour == "bad-version":
            raise RuntimeError("no version")
        return "r9"

    async def check(self, message: ParsedMessage) -> Finding:
        if self.started is not None:
            self.started.set()
        if self.behaviour == "raise":
            raise ValueError("engine exploded")
        if self.behaviour == "hang":
            await asyncio.Event().wait()
        if self.behaviour == "cancel-itself":
            raise asyncio.CancelledError
        if self.behaviour == "not-a-finding":
            return "clean"  # type: ignore[return-value]
        return Finding(self.name, self.version, "r9", "clean", kind=self.kind)

    async def aclose(self) -> None:
        pass


async def test_results_in_engine_order_with_durations() -> None:
    engines = [Fake("a"), Fake("b"), Fake("c")]
    out = await run_engines(engines, MSG, timeout=5)
    assert [f.engine for f in out] == ["a", "b", "c"]
    assert all(f.outcome == "clean" and f.duration_ms >= 0 for f in out)


async def test_raising_and_hanging_engines_do_not_stop_the_others() -> None:
    engines = [
        Fake("ok1"),
        Fake("boom", "raise"),
        Fake("slow", "hang", kind="antispam"),
        Fake("ok2"),
    ]
    out = await run_engines(engines, MSG, timeout=0.05)
    assert [f.outcome for f in out] == ["clean", "error", "timeout", "clean"]
    boom, slow = out[1], out[2]
    assert boom.error == "ValueError('engine exploded')"
    assert (boom.engine, boom.engine_version, boom.rules_version) == ("boom", "9.9", "r9")
    assert slow.error is not None and "0.05" in slow.error
    assert (slow.engine, slow.kind) == ("slow", "antispam")


async def test_bad_return_value_and_self_cancellation_are_errors() -> None:
    out = await run_engines([Fake("x", "not-a-finding"), Fake("y", "cancel-itself")], MSG, 5)
    assert [f.outcome for f in out] == ["error", "error"]
    assert "str" in (out[0].error or "")


async def test_failure_of_version_property_is_tolerated() -> None:
    (f,) = await run_engines([Fake("v", "bad-version")], MSG, 5)
    assert f.outcome == "clean"  # the engine itself answered
    (f,) = await run_engines([_BadVersionRaiser()], MSG, 5)
    assert (f.outcome, f.rules_version) == ("error", "unknown")


class _BadVersionRaiser(Fake):
    def __init__(self) -> None:
        super().__init__("bv", "raise")

    @property
    def rules_version(self) -> str:
        raise RuntimeError("no version")


async def test_no_engines() -> None:
    assert await run_engines([], MSG, 1) == []


async def test_outer_cancellation_propagates() -> None:
    started = asyncio.Event()
    task = asyncio.create_task(run_engines([Fake("h", "hang", started=started)], MSG, 60))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_real_engines_on_samples() -> None:
    engines = [YaraEngine(), ContentRulesEngine()]
    for raw, expected in [
        (samples.eicar_zip_in_zip(), ["infected", "clean"]),
        (samples.gtube_message(), ["clean", "spam"]),
        (samples.clean_message(4), ["clean", "clean"]),
        (samples.zip_bomb(), ["clean", "clean"]),
    ]:
        out = await run_engines(engines, parse(raw, message_id="m", tenant="t"), 20)
        assert [f.outcome for f in out] == expected


# --- registry ------------------------------------------------------------------------------


def test_registry_builds_configured_engines_in_order() -> None:
    assert {"yara", "content", "clamav", "attachments", "office", "reputation"} <= set(ENGINES)
    engines = build_engines(ScannerSettings(engines=("content", "yara"), isolated=()))
    assert [e.name for e in engines] == ["content", "yara"]
    assert isinstance(engines[1], YaraEngine)


def test_registry_isolates_the_configured_engines() -> None:
    engines = build_engines(ScannerSettings(engines=("content", "yara"), isolated=("yara",)))
    assert not isinstance(engines[0], IsolatedEngine)
    assert isinstance(engines[1], IsolatedEngine)
    assert (engines[1].name, engines[1].kind) == ("yara", "antivirus")


def test_registry_clamav_needs_a_socket() -> None:
    with pytest.raises(ConfigError, match="clamd"):
        build_engines(ScannerSettings(engines=("clamav",)))


def test_the_default_engines_are_the_protection_of_a_gateway() -> None:
    """Protection on by default (issue 13): a bare scanner, `mxgate up`, evaluate and replay
    judge with one set: every antivirus and attachment engine that needs no extra service but
    clamd, the in-process antispam engines and all four sender-authentication checks."""
    names = ScannerSettings().engines
    by_kind: dict[str, set[str]] = {}
    for n in names:
        by_kind.setdefault(ENGINES[n].engine.kind, set()).add(n)
    assert by_kind == {
        "antivirus": {"clamav", "yara"},
        "policy": {"attachments", "office", "pdf"},
        "antispam": {"content", "heuristics", "bayes"},
        "auth": {"spf", "dkim", "dmarc", "arc"},
    }
    # Without clamd's socket the default refuses to start, naming the key: never a scanner
    # that silently runs without antivirus.
    with pytest.raises(ConfigError) as e:
        build_engines(ScannerSettings())
    assert (e.value.file, e.value.key) == ("MXGATE_SCANNER__CLAMAV_SOCKET", "scanner.clamav_socket")


def test_registry_unknown_engine() -> None:
    with pytest.raises(ConfigError) as e:
        build_engines(ScannerSettings(engines=("yara", "clamav9")))
    assert (e.value.file, e.value.key) == ("MXGATE_SCANNER__ENGINES", "scanner.engines")
    assert "unknown engine 'clamav9'; known: " in e.value.problem
    known = e.value.problem.split("known: ", 1)[1].split(", ")
    assert known == sorted(ENGINES)


def test_registry_repeated_engine() -> None:
    with pytest.raises(ConfigError, match="listed twice"):
        build_engines(ScannerSettings(engines=("yara", "yara")))


def test_registry_passes_rules_dir(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "x.yar").write_text("rule X { condition: false }")
    (engine,) = build_engines(ScannerSettings(engines=("yara",), yara_rules=tmp_path, isolated=()))
    assert isinstance(engine, YaraEngine) and engine.rules_dir == tmp_path
