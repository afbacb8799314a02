"""ContentRulesEngine: GTUBE wherever a reader would see it, nothing on other mail."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from support import samples

from scanner.engines.common import Engine, ParsedMessage
from scanner.engines.content_rules import DEFAULT_RULES, ContentRule, ContentRulesEngine
from scanner.mime import parse

CORPUS = Path("/work/shared/corpus/spamassassin-2002")
GTUBE = samples.gtube()

MISSES = {
    "clean_message": lambda: samples.clean_message(2),
    "eicar_plain": samples.eicar_plain,
    "eicar_qp": samples.eicar_qp,
    "eicar_base64_as_image": samples.eicar_base64_as_image,
    "eicar_zip": samples.eicar_zip,
    "eicar_zip_in_zip": samples.eicar_zip_in_zip,
    "zip_bomb": samples.zip_bomb,
    "malformed_mime": samples.malformed_mime,
}


def msg(raw: bytes) -> ParsedMessage:
    return parse(raw, message_id="m", tenant="t")


@pytest.fixture(scope="module")
def engine() -> ContentRulesEngine:
    return ContentRulesEngine()


def test_shape(engine: ContentRulesEngine) -> None:
    assert isinstance(engine, Engine)
    assert (engine.name, engine.kind) == ("content", "antispam")
    assert re.fullmatch(r"[0-9a-f]{12}", engine.rules_version)
    assert engine.rules == DEFAULT_RULES
    assert DEFAULT_RULES[0].needle == GTUBE


async def test_gtube_hit(engine: ContentRulesEngine) -> None:
    f = await engine.check(msg(samples.gtube_message()))
    assert (f.outcome, f.score, f.symbols) == ("spam", 1000.0, ("GTUBE",))
    assert f.detail == {"GTUBE": "raw"}
    assert (f.engine, f.kind) == ("content", "antispam")


async def test_gtube_behind_base64_is_found_in_the_text_part(
    engine: ContentRulesEngine,
) -> None:
    raw = (
        b"Subject: hi\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(b"buy now " + GTUBE)
    )
    assert GTUBE not in raw
    f = await engine.check(msg(raw))
    assert (f.outcome, f.detail) == ("spam", {"GTUBE": "1"})


async def test_gtube_in_an_attachment_or_archive_member_is_found(
    engine: ContentRulesEngine,
) -> None:
    """Issue 13: a needle sent as a base64 attachment of any declared type, or zipped, is
    found where the recipient would open it (its decoded part)."""
    raw = (
        b"Subject: hi\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(GTUBE)
    )
    assert GTUBE not in raw
    f = await engine.check(msg(raw))
    assert (f.outcome, f.detail) == ("spam", {"GTUBE": "1"})
    zipped = samples.zip_bytes({"read-me.txt": b"offer " + GTUBE})
    raw = (
        b"Subject: hi\r\nContent-Type: application/zip\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(zipped)
    )
    f = await engine.check(msg(raw))
    assert f.outcome == "spam" and f.detail["GTUBE"].endswith("read-me.txt"), f.detail


@pytest.mark.parametrize("name", sorted(MISSES))
async def test_misses(engine: ContentRulesEngine, name: str) -> None:
    f = await engine.check(msg(MISSES[name]()))
    assert (f.outcome, f.score, f.symbols) == ("clean", 0.0, ())


async def test_rules_are_data() -> None:
    rules = (
        ContentRule("CHEAP", b"cheap", 2.5),
        ContentRule("OFFER", b"offer", 1.0),
        ContentRule("NEVER", b"zzz-never", 50.0),
    )
    eng = ContentRulesEngine(rules)
    assert eng.rules_version != ContentRulesEngine().rules_version
    f = await eng.check(msg(samples.gtube_message()))  # subject: "Cheap offer just for you"
    assert (f.outcome, f.symbols, f.score) == ("spam", ("OFFER",), 1.0)  # case-sensitive


async def test_message_without_raw_part(engine: ContentRulesEngine) -> None:
    f = await engine.check(ParsedMessage("m", "t", GTUBE, (), ()))
    assert f.outcome == "spam"


@pytest.mark.skipif(not CORPUS.exists(), reason="shared corpus not present")
async def test_real_mail_is_not_gtube(engine: ContentRulesEngine) -> None:
    for kind in ("ham", "spam"):
        for f in sorted((CORPUS / kind).iterdir())[:200]:
            finding = await engine.check(msg(f.read_bytes()))
            assert finding.outcome == "clean", f.name
