"""YaraEngine: EICAR in every disguise mime.py unpacks, nothing on clean mail, rules as files."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from support import samples

from mxgate.errors import ConfigError
from scanner.engines.common import Engine, ParsedMessage, Part
from scanner.engines.yara_engine import PACKAGED_RULES, YaraEngine
from scanner.mime import parse

EICAR = samples.eicar()

HITS = {
    "eicar_plain": (samples.eicar_plain, "1"),
    "eicar_qp": (samples.eicar_qp, "1"),
    "eicar_base64_as_image": (samples.eicar_base64_as_image, "2/holiday.jpg"),
    "eicar_zip": (samples.eicar_zip, "2/report.pdf!eicar.com"),
    "eicar_zip_in_zip": (samples.eicar_zip_in_zip, "2/documents.zip!inner.zip!eicar.com"),
}
MISSES = {
    "clean_message": lambda: samples.clean_message(7),
    "gtube_message": samples.gtube_message,
    "zip_bomb": samples.zip_bomb,
    "malformed_mime": samples.malformed_mime,
}


@pytest.fixture(scope="module")
def engine() -> YaraEngine:
    return YaraEngine()


def msg(raw: bytes) -> ParsedMessage:
    return parse(raw, message_id="m", tenant="t")


def test_shape(engine: YaraEngine) -> None:
    assert isinstance(engine, Engine)
    assert (engine.name, engine.kind) == ("yara", "antivirus")
    assert re.fullmatch(r"[0-9a-f]{12}", engine.rules_version)
    assert engine.version and engine.rules_dir == PACKAGED_RULES
    assert sorted(p.name for p in PACKAGED_RULES.glob("*.yar")) == [
        "eicar.yar",
        "executables.yar",
        "mail_threats.yar",
    ]


def test_rule_files_do_not_carry_the_test_string() -> None:
    for f in PACKAGED_RULES.glob("*.yar"):
        assert b"EICAR-STANDARD" not in f.read_bytes()


@pytest.mark.parametrize("name", sorted(HITS))
async def test_hits(engine: YaraEngine, name: str) -> None:
    build, path = HITS[name]
    f = await engine.check(msg(build()))
    assert f.outcome == "infected"
    assert f.symbols == ("EICAR_Test_File",)
    assert f.detail["EICAR_Test_File"] == path
    assert (f.engine, f.kind, f.rules_version) == ("yara", "antivirus", engine.rules_version)


@pytest.mark.parametrize("name", sorted(MISSES))
async def test_misses(engine: YaraEngine, name: str) -> None:
    f = await engine.check(msg(MISSES[name]()))
    assert (f.outcome, f.symbols) == ("clean", ())


@pytest.mark.parametrize(
    ("data", "hit"),
    [
        (EICAR, True),
        (EICAR + b"\r\n", True),
        (EICAR + b" \t\x1a" + b" " * 57, True),  # 128 bytes: the most the definition allows
        (EICAR + b" " * 61, False),  # 129 bytes
        (EICAR + b"!", False),
        (b" " + EICAR, False),
        (EICAR[:-1], False),
    ],
    ids=["exact", "crlf", "max-whitespace", "too-long", "trailing-garbage", "leading", "short"],
)
async def test_eicar_definition(engine: YaraEngine, data: bytes, hit: bool) -> None:
    m = ParsedMessage("m", "t", b"", (), (Part("1", None, "text/plain", data),))
    f = await engine.check(m)
    assert (f.outcome == "infected") is hit


def _pe() -> bytes:
    header = bytearray(b"MZ" + bytes(0x3E))
    struct.pack_into("<I", header, 0x3C, 0x40)
    return bytes(header) + b"PE\0\0" + bytes(200)


def _elf() -> bytes:
    head = bytearray(b"\x7fELF\x02\x01\x01" + bytes(57))
    struct.pack_into("<H", head, 16, 2)
    return bytes(head)


@pytest.mark.parametrize(("data", "symbol"), [(_pe(), "Executable_PE"), (_elf(), "Executable_ELF")])
async def test_executable_is_a_content_match(engine: YaraEngine, data: bytes, symbol: str) -> None:
    raw = samples.zip_bytes({"setup.txt": data})
    from email.message import EmailMessage

    m = EmailMessage()
    m["Subject"] = "x"
    m.set_content("see attached\n")
    m.add_attachment(raw, maintype="application", subtype="octet-stream", filename="a.dat")
    f = await engine.check(msg(m.as_bytes()))
    assert (f.outcome, f.symbols) == ("match", (symbol,))
    assert f.detail[symbol] == "2/a.dat!setup.txt"


async def test_infected_wins_over_match(engine: YaraEngine) -> None:
    parts = (Part("1", None, "x/y", _pe()), Part("2", None, "x/y", EICAR))
    f = await engine.check(ParsedMessage("m", "t", b"", (), parts))
    assert f.outcome == "infected"
    assert f.symbols == ("EICAR_Test_File", "Executable_PE")


async def test_raw_is_scanned_even_when_not_a_part(engine: YaraEngine) -> None:
    f = await engine.check(ParsedMessage("m", "t", EICAR, (), ()))
    assert f.detail["EICAR_Test_File"] == "raw"


async def test_many_hits_are_summarised(engine: YaraEngine) -> None:
    parts = tuple(Part(f"{i}", None, "x/y", EICAR) for i in range(12))
    f = await engine.check(ParsedMessage("m", "t", b"", (), parts))
    assert f.detail["EICAR_Test_File"].endswith("(+7 more)")


# --- rules directory -----------------------------------------------------------------------

RULE = 'rule {name} {{ strings: $a = "{needle}" condition: $a }}\n'


async def test_custom_rules_and_reload(tmp_path: Path) -> None:
    (tmp_path / "a.yar").write_text(RULE.format(name="Needle_One", needle="needle-one"))
    eng = YaraEngine(tmp_path, reload_interval=0)
    before = eng.rules_version
    m = ParsedMessage("m", "t", b"has needle-one and needle-two", (), ())
    assert (await eng.check(m)).symbols == ("Needle_One",)

    (tmp_path / "b.yar").write_text(RULE.format(name="Needle_Two", needle="needle-two"))
    f = await eng.check(m)  # reload_interval=0: the next scan notices the new file
    assert f.symbols == ("Needle_One", "Needle_Two")
    assert f.rules_version == eng.rules_version != before


async def test_broken_edit_keeps_previous_rules(tmp_path: Path) -> None:
    (tmp_path / "a.yar").write_text(RULE.format(name="Needle_One", needle="needle-one"))
    eng = YaraEngine(tmp_path, reload_interval=3600)
    version = eng.rules_version
    (tmp_path / "a.yar").write_text("rule broken { condition: nonsense ")
    assert eng.reload() is False
    assert eng.rules_version == version
    m = ParsedMessage("m", "t", b"needle-one", (), ())
    assert (await eng.check(m)).symbols == ("Needle_One",)


def test_rules_version_is_content_hash(tmp_path: Path) -> None:
    (tmp_path / "a.yar").write_text(RULE.format(name="X", needle="x"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.yar").write_text(RULE.format(name="X", needle="x"))
    assert YaraEngine(tmp_path).rules_version == YaraEngine(other).rules_version
    (other / "a.yar").write_text(RULE.format(name="X", needle="y"))
    assert YaraEngine(tmp_path).rules_version != YaraEngine(other).rules_version


def test_no_rules_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        YaraEngine(tmp_path)
    assert e.value.key == "scanner.yara_rules"


def test_invalid_rules_are_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "bad.yar").write_text("rule { nope")
    with pytest.raises(ConfigError, match="invalid YARA rules"):
        YaraEngine(tmp_path)
