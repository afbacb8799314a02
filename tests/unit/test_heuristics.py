"""Heuristic rules: scores are data; a bad table is a clear config error."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxgate.errors import ConfigError
from scanner.engines.heuristics import HeuristicsEngine, load_rules
from scanner.mime import parse


async def test_packaged_rules_score_spammy_mail_and_credit_conversations() -> None:
    engine = HeuristicsEngine()
    spam = parse(
        b"From: winner123@x.test\r\nTo: undisclosed-recipients:;\r\n"
        b"Subject: MAKE MONEY FAST!\r\nContent-Type: text/html\r\n\r\n"
        b"Dear friend, click here to make money! Act now, 100% free, risk-free!!!\r\n"
        b"To be removed from our list reply REMOVE.",
        message_id="h1",
        tenant="t",
    )
    f = await engine.check(spam)
    assert f.outcome == "spam" and f.score >= 5
    assert {"SUBJ_ALL_CAPS", "CLICK_HERE", "NO_DATE", "DEAR_FRIEND"} <= set(f.symbols)
    ham = parse(
        b"From: bob@work.test\r\nSubject: Re: patch\r\nDate: Mon, 1 Jan 2024 0:0 +0000\r\n"
        b"Message-ID: <1@work.test>\r\nIn-Reply-To: <0@work.test>\r\n\r\n"
        b"> does it build?\r\n> on arm?\r\nYes.\r\n",
        message_id="h2",
        tenant="t",
    )
    g = await engine.check(ham)
    assert g.outcome == "clean" and g.score < 0 and "QUOTED_TEXT" in g.symbols


def test_scores_come_from_the_table(tmp_path: Path) -> None:
    table = tmp_path / "h.toml"
    table.write_text('version = "t1"\n[rules.X]\nwhere = "body"\npattern = "zzz"\nscore = 7.5\n')
    version, rules = load_rules(table)
    assert version == "t1" and rules[0].score == 7.5


@pytest.mark.parametrize(
    "body",
    [
        '[rules.X]\nwhere = "nowhere"\npattern = "a"\nscore = 1\n',
        '[rules.X]\nwhere = "body"\npattern = "("\nscore = 1\n',
        '[rules.X]\nwhere = "header"\npattern = "a"\nscore = 1\n',
        '[rules.X]\nwhere = "body"\npattern = "a"\nscore = "high"\n',
        "not toml [",
    ],
)
def test_bad_tables_are_config_errors(tmp_path: Path, body: str) -> None:
    table = tmp_path / "h.toml"
    table.write_text(body)
    with pytest.raises(ConfigError):
        load_rules(table)
