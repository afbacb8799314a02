"""The reputation engine: SHA-256 list of known-bad attachments, reloaded on change."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from support import samples

from mxgate.errors import ConfigError
from scanner.engines.reputation import ReputationEngine, load_list
from scanner.mime import parse

BAD = b"totally a trojan \x00\x01\x02"


def _msg(raw: bytes):  # type: ignore[no-untyped-def]
    return parse(raw, message_id="m", tenant="t")


def _mail(member: bytes) -> bytes:
    from email.message import EmailMessage

    m = EmailMessage()
    m.set_content("x")
    m.add_attachment(
        samples.zip_bytes({"a/b.bin": member}),
        maintype="application",
        subtype="zip",
        filename="x.zip",
    )
    return m.as_bytes()


async def test_listed_hash_in_an_archive_is_infected(tmp_path: Path) -> None:
    lst = tmp_path / "bad.txt"
    lst.write_text(f"# known bad\n{hashlib.sha256(BAD).hexdigest().upper()} Trojan.Test\n")
    e = ReputationEngine(lst, reload_interval=0)
    f = await e.check(_msg(_mail(BAD)))
    assert f.outcome == "infected" and f.symbols == ("sha256:Trojan.Test",)
    assert (await e.check(_msg(_mail(b"harmless")))).outcome == "clean"


async def test_list_reloads_without_restart_and_versions_change(tmp_path: Path) -> None:
    lst = tmp_path / "bad.txt"
    lst.write_text("")
    e = ReputationEngine(lst, reload_interval=0)
    v1 = e.rules_version
    assert (await e.check(_msg(_mail(BAD)))).outcome == "clean"
    lst.write_text(hashlib.sha256(BAD).hexdigest() + "\n")
    os.utime(lst, ns=(1, 10**18))  # a new mtime even on coarse clocks
    f = await e.check(_msg(_mail(BAD)))
    assert f.outcome == "infected" and f.rules_version != v1
    lst.unlink()  # a vanished file keeps the last list in force
    assert (await e.check(_msg(_mail(BAD)))).outcome == "infected"


def test_bad_lines_are_skipped(tmp_path: Path) -> None:
    p = tmp_path / "l.txt"
    p.write_text("nothex\n" + "a" * 64 + "\n" + "b" * 63 + "\n")
    assert load_list(p) == {"a" * 64: "a" * 64}


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        ReputationEngine(tmp_path / "nope")
    with pytest.raises(ConfigError):
        ReputationEngine(None)
