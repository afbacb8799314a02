"""SpamAssassin's spamd as an engine: a real spamd on loopback, spamc protocol, TELL learning,
and `mxgate train` + `mxgate evaluate` teaching and judging it next to the in-process engines."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import MXGATE

from devstack.spamd import SpamdServer
from scanner.engines.common import ParsedMessage
from scanner.engines.spamassassin import SpamassassinEngine, SpamdError, spamc

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
HAM = b"From: a@work.test\r\nTo: b@work.test\r\nSubject: lunch\r\n\r\nLunch at noon?\r\n"


@pytest.fixture(scope="module")
def spamd() -> Iterator[int]:
    server = SpamdServer()
    port = server.start()
    yield port
    server.stop()


async def test_gtube_is_spam_and_plain_mail_is_not(spamd: int) -> None:
    engine = SpamassassinEngine("127.0.0.1", spamd)
    spam = await engine.check(ParsedMessage("s1", "t", HAM + GTUBE + b"\r\n", (), ()))
    assert spam.outcome == "spam" and spam.score >= 1000 and "GTUBE" in spam.symbols
    ham = await engine.check(ParsedMessage("s2", "t", HAM, (), ()))
    assert ham.outcome == "clean" and ham.score < 5


async def test_tell_learns_and_bad_requests_are_errors(spamd: int) -> None:
    engine = SpamassassinEngine("127.0.0.1", spamd)
    await engine.learn(ParsedMessage("s3", "t", HAM, (), ()), is_spam=False)
    with pytest.raises(SpamdError):
        await spamc("127.0.0.1", spamd, "NOSUCHCOMMAND", HAM)


def _corpus(root: Path, n: int) -> tuple[Path, Path]:
    ham, spam = root / "ham", root / "spam"
    ham.mkdir()
    spam.mkdir()
    for i in range(n):
        (ham / f"h{i}").write_bytes(
            b"From MAILER-DAEMON Thu Aug 22 13:17:22 2002\n"
            + f"From: dev{i % 3}@work.test\nSubject: build {i} status\n\n"
            f"The release build {i} passed; patch review tomorrow, agenda attached.\n".encode()
        )
        (spam / f"s{i}").write_bytes(
            f"From: promo{i}@deals.test\nSubject: FREE MONEY {i}!!!\n\nClick here, act now, "
            f"cheap pills and free money! http://deal{i}.pills.test/\n".encode()
        )
    return ham, spam


def test_train_and_evaluate_commands(spamd: int, tmp_path: Path) -> None:
    ham, spam = _corpus(tmp_path, 40)
    env = dict(
        os.environ,
        MXGATE_SCANNER__SPAM__SPAMD_PORT=str(spamd),
        MXGATE_SCANNER__SPAM__BAYES_PATH=str(tmp_path / "bayes"),
        # The test's own model: `mxgate train` must never write into the checkout's var/, where
        # `mxgate up` would then judge with it.
        MXGATE_SCANNER__SPAM__MODEL_PATH=str(tmp_path / "spam-model.json"),
        MXGATE_SCANNER__SPAM__BAYES_MIN_TRAINED="5",
        MXGATE_SCANNER__ENGINES='["bayes","heuristics","spamassassin"]',
    )
    cmd = [MXGATE]
    args = ["--ham", str(ham), "--spam", str(spam), "--holdout", "40"]
    done = subprocess.run(
        [*cmd, "train", *args, "--json"], env=env, capture_output=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    learnt = json.loads(done.stdout)
    assert learnt["bayes"]["learnt"] == learnt["spamassassin"]["learnt"] > 0
    chart = tmp_path / "chart.html"
    done = subprocess.run(
        [*cmd, "evaluate", *args, "--json", "--chart", str(chart)],
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    assert set(report) == {
        "bayes", "heuristics", "spamassassin", "combined", "combined_inprocess",
        "combined_score_sum",
    }  # fmt: skip
    for r in report.values():
        assert 0 <= r["detection_rate"] <= 1 and 0 <= r["false_positive_rate"] <= 1
    assert report["bayes"]["detection_rate"] == 1.0  # trivially separable mail, held out
    assert report["bayes"]["false_positive_rate"] == 0.0
    assert report["spamassassin"]["errors"] == 0
    assert "<svg" in chart.read_text()
