"""The engine kit: identity stamped once, settings per engine, discovery, the scan context."""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
import sys
from pathlib import Path

import pytest
from pydantic import AliasPath

import mxgate
from mxgate.resolver import Answer, Resolver
from mxgate.settings import AuthSettings, ScannerSettings, SpamSettings
from scanner.engines.clamav import ClamavSettings
from scanner.engines.common import (
    EngineBase,
    EngineSettings,
    Finding,
    NoSettings,
    ParsedMessage,
    ScanContext,
)
from scanner.engines.dkim import DkimSettings
from scanner.engines.dmarc import DmarcEngine
from scanner.engines.registry import ENGINES, build_engines, discover
from scanner.engines.rspamd import RspamdSettings
from scanner.engines.spf import SpfEngine


class Probe(EngineBase):
    name = "probe"
    kind = "policy"

    @property
    def rules_version(self) -> str:
        return "r1"

    async def check(self, message: ParsedMessage) -> Finding:
        return self.finding("match", symbols=("X",), detail={"path": "1"})


def _msg(mid: str = "m1", **kw: str) -> ParsedMessage:
    return ParsedMessage(
        mid, "t", b"From: a@b.test\r\n\r\nhi\r\n", (("From", "a@b.test"),), (), **kw
    )


async def test_finding_fills_the_identity() -> None:
    f = await Probe().check(_msg())
    assert (f.engine, f.kind, f.engine_version, f.rules_version) == (
        "probe",
        "policy",
        mxgate.__version__,
        "r1",
    )
    assert (f.outcome, f.symbols, f.detail) == ("match", ("X",), {"path": "1"})
    assert Probe().finding("clean", rules_version="snapshot").rules_version == "snapshot"


async def test_base_lifecycle_is_a_no_op_and_not_cacheable() -> None:
    e = Probe()
    assert e.cacheable is False
    await e.start()
    await e.aclose()


def test_every_shipped_engine_is_discovered_with_its_identity() -> None:
    assert set(ENGINES) >= {"yara", "content", "clamav", "spf", "dkim", "dmarc", "arc", "rspamd"}
    for name, spec in ENGINES.items():
        assert spec.name == name == spec.engine.name


def test_engine_settings_come_from_the_flat_scanner_settings() -> None:
    sc = ScannerSettings(
        clamav_socket="tcp://127.0.0.1:3310",
        auth=AuthSettings(dkim_min_key_bits=2048, dns_servers=("127.0.0.1:5353",)),
        spam=SpamSettings(rspamd_url="http://rspamd:11333", max_size=4096),
    )
    assert ClamavSettings.from_scanner(sc).socket == "tcp://127.0.0.1:3310"
    dk = DkimSettings.from_scanner(sc)
    assert dk.min_key_bits == 2048 and dk.dns.dns_servers == ("127.0.0.1:5353",)
    rs = RspamdSettings.from_scanner(sc)
    assert (rs.url, rs.max_size) == ("http://rspamd:11333", 4096)
    # By field name too, for tests and tools; and they pickle (isolated workers get them).
    assert pickle.loads(pickle.dumps(ClamavSettings(socket="/s"))).socket == "/s"


def test_a_new_engine_module_is_built_by_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "kitengines"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("X = 1\n")  # no ENGINE: not an engine
    (pkg / "budget.py").write_text(
        "from pydantic import Field\n"
        "from scanner.engines.common import EngineBase, EngineSettings, EngineSpec\n\n"
        "class BudgetSettings(EngineSettings):\n"
        "    seconds: float = Field(default=1.0, validation_alias='engine_timeout')\n\n"
        "class BudgetEngine(EngineBase):\n"
        "    name = 'budget'\n"
        "    kind = 'policy'\n"
        "    def __init__(self, seconds: float) -> None:\n"
        "        self.seconds = seconds\n"
        "    @property\n"
        "    def rules_version(self) -> str:\n"
        "        return f'{self.seconds:g}s'\n"
        "    async def check(self, message):\n"
        "        return self.finding('clean')\n\n"
        "def build(settings: BudgetSettings) -> BudgetEngine:\n"
        "    return BudgetEngine(settings.seconds)\n\n"
        "ENGINE = EngineSpec(BudgetEngine, BudgetSettings, build)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "kitengines", raising=False)
    table = discover("kitengines")
    assert list(table) == ["budget"]
    (engine,) = build_engines(
        ScannerSettings(engines=("budget",), engine_timeout=7, isolated=()), table
    )
    assert engine.name == "budget" and engine.rules_version == "7s"


def test_engines_without_settings_take_no_settings() -> None:
    assert ENGINES["content"].settings is NoSettings
    assert ENGINES["attachments"].settings is NoSettings


class CountingResolver(Resolver):
    """Answers every name with an SPF record that fails everyone; counts the questions."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1",))
        self.asked: list[tuple[str, str]] = []

    async def query(self, name: str, rdtype: str) -> Answer:
        self.asked.append((name, rdtype))
        await asyncio.sleep(0)
        return Answer(("v=spf1 -all",) if rdtype == "TXT" else ())


async def test_scan_context_computes_spf_once_per_message() -> None:
    r = CountingResolver()
    msg = _msg(client_ip="192.0.2.1", mail_from="x@b.test")
    spf, dmarc = await asyncio.gather(SpfEngine(r).check(msg), DmarcEngine(r).check(msg))
    assert spf.symbols[:2] == ("SPF_FAIL", "spf=fail") and spf.detail["result"] == "fail"
    assert spf.detail["smtp.mailfrom"] == "b.test"
    assert dmarc.detail["header.from"] == "b.test"
    assert r.asked.count(("b.test", "TXT")) == 1  # SPF asked once, DMARC reused it
    await SpfEngine(r).check(msg)
    assert r.asked.count(("b.test", "TXT")) == 1


async def test_scan_context_does_not_leak_across_messages() -> None:
    r = CountingResolver()
    first = _msg(client_ip="192.0.2.1", mail_from="x@b.test")
    await SpfEngine(r).check(first)
    # Same message ID, same envelope: still another message, so it is checked again.
    again = _msg(client_ip="192.0.2.1", mail_from="x@b.test")
    await SpfEngine(r).check(again)
    assert r.asked.count(("b.test", "TXT")) == 2
    assert dataclasses.replace(first).context is not first.context
    # A message sent to a worker process arrives with an empty context.
    assert pickle.loads(pickle.dumps(first)).context is not first.context


async def test_scan_context_keeps_one_object_per_kind_and_key() -> None:
    ctx = ScanContext()
    a = ctx.shared(list, "k", list)
    assert ctx.shared(list, "k", lambda: ["other"]) is a
    assert ctx.shared(list, "j", list) is not a
    assert ctx.shared(dict, "k", dict) == {}


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_every_engine_setting_names_a_real_scanner_setting(name: str) -> None:
    # A misspelt alias would silently leave the default in force: each must resolve.
    flat = ScannerSettings().model_dump()
    for field, info in ENGINES[name].settings.model_fields.items():
        alias = info.validation_alias
        path = alias.path if isinstance(alias, AliasPath) else [alias or field]
        value: object = flat
        for step in path:
            assert isinstance(value, dict) and step in value, f"{name}.{field}: {path}"
            value = value[step]
        nested = info.annotation
        if isinstance(nested, type) and issubclass(nested, EngineSettings):
            assert isinstance(value, dict)
            assert set(nested.model_fields) <= set(value), f"{name}.{field}"


def test_a_context_used_from_another_event_loop_starts_empty() -> None:
    ctx = ScanContext()

    async def get() -> list[str]:
        return ctx.shared(list, "k", list)

    first = asyncio.run(get())
    assert asyncio.run(get()) is not first
