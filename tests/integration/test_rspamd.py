"""rspamd as an engine: a real rspamd (and its Redis) on loopback, /checkv2 scans, learning
through the controller, failures as findings, and `mxgate train` teaching rspamd's Bayes."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import MXGATE

from devstack.rspamd import RspamdServer
from scanner.engines.common import ParsedMessage
from scanner.engines.rspamd import RspamdEngine, RspamdError
from scanner.runner import run_engines

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
HEAD = (
    b"From: Ann Author <ann@work.test>\r\nTo: Bob Builder <bob@work.test>\r\n"
    b"Date: Thu, 22 Aug 2002 13:17:22 +0000\r\nMessage-ID: <lunch-1@work.test>\r\n"
)
HAM = HEAD + b"Subject: lunch\r\n\r\nLunch at noon at the usual place?\r\n"


def _msg(raw: bytes, mid: str = "m", **envelope: object) -> ParsedMessage:
    return ParsedMessage(mid, "t", raw, (), (), **envelope)  # type: ignore[arg-type]


def _spam(i: int) -> bytes:
    return (
        f"From: promo{i}@deals{i}.test\nTo: you@work.test\nSubject: FREE MONEY {i}\n\n"
        f"Click here now, act fast: cheap pills, casino bonus, free money, winner prize "
        f"{i}, claim your reward today, limited offer, unsubscribe never, "
        f"http://deal{i}.pills.test/claim\n"
    ).encode()


def _ham(i: int) -> bytes:
    return (
        f"From: dev{i % 3}@work.test\nTo: team@work.test\nSubject: build {i} status\n\n"
        f"The release build {i} passed on every platform; the patch review is tomorrow "
        f"morning, the agenda and the design notes are attached, please read them before "
        f"the meeting and bring the benchmark numbers.\n"
    ).encode()


@pytest.fixture(scope="module")
def server() -> Iterator[RspamdServer]:
    # Bayes classifies after one learnt message of each class, so a test can teach it a few.
    s = RspamdServer(min_learns=1)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def rspamd(server: RspamdServer) -> RspamdServer:
    server.forget()  # each test teaches its own Bayes
    return server


def _engine(s: RspamdServer, password: str | None = None) -> RspamdEngine:
    return RspamdEngine(s.url, s.controller_url, s.password if password is None else password)


async def test_gtube_is_rejected_as_spam(rspamd: RspamdServer) -> None:
    engine = _engine(rspamd)
    try:
        f = await engine.check(_msg(HAM + GTUBE + b"\r\n"))
    finally:
        await engine.aclose()
    assert f.outcome == "spam" and f.kind == "antispam"
    assert "GTUBE" in f.symbols and f.detail["action"] == "reject"
    assert f.score >= float(f.detail["required_score"])  # rspamd's reject score, as is
    assert f.engine_version[0].isdigit()  # from the daemon's Server header


async def test_plain_mail_is_clean_with_rspamd_score_and_symbols(rspamd: RspamdServer) -> None:
    engine = _engine(rspamd)
    try:
        f = await engine.check(
            _msg(
                HAM,
                client_ip="192.0.2.10",
                helo="mail.work.test",
                mail_from="ann@work.test",
                rcpt_to=("bob@work.test", "carol@work.test"),
            )
        )
        bare = await engine.check(_msg(b"Subject: x\r\n\r\nhi\r\n"))
    finally:
        await engine.aclose()
    assert f.outcome == "clean" and f.detail["action"] == "no action"
    assert f.score < 6 and "MIME_GOOD" in f.symbols and "GTUBE" not in f.symbols
    # Headers rspamd scores itself: a bare message scores higher than a well-formed one.
    assert {"MISSING_DATE", "MISSING_MID"} <= set(bare.symbols)
    assert bare.score > f.score


async def test_daemon_down_and_hung_are_failures_not_lost_mail(rspamd: RspamdServer) -> None:
    with socket.socket() as s:  # a loopback port nothing listens on: a daemon that is down
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    down = RspamdEngine(closed, closed)
    hung = _engine(rspamd)
    # rspamd up, but asked for a command it does not have: its error status is the error.
    wrong = RspamdEngine(rspamd.url + "/no-such-command", rspamd.controller_url)
    try:
        [f] = await run_engines([down], _msg(HAM), timeout=10)
        assert f.outcome == "error" and f.engine == "rspamd" and f.kind == "antispam"
        assert "Connect" in (f.error or "")
        [f] = await run_engines([wrong], _msg(HAM), timeout=10)
        assert f.outcome == "error" and "HTTP 5" in (f.error or ""), f.error
        with rspamd.paused():
            [f] = await run_engines([hung], _msg(HAM), timeout=1)
        assert f.outcome == "timeout" and f.engine == "rspamd"
        # Once it answers again, so does the engine.
        [f] = await run_engines([hung], _msg(HAM), timeout=30)
        assert f.outcome == "clean"
    finally:
        await down.aclose()
        await hung.aclose()
        await wrong.aclose()


async def test_learn_through_the_controller_teaches_bayes(rspamd: RspamdServer) -> None:
    engine = _engine(rspamd)
    try:
        unseen_spam, unseen_ham = _msg(_spam(99)), _msg(_ham(99))
        before = await engine.check(unseen_spam)
        assert not any(s.startswith("BAYES_") for s in before.symbols)
        for i in range(6):  # bulk: learnt even once Bayes already knows the class
            assert await engine.learn(_msg(_spam(i)), is_spam=True, bulk=True)
            assert await engine.learn(_msg(_ham(i)), is_spam=False, bulk=True)
        # Declined, not errors (HTTP 204): a single correction Bayes already agrees with; too
        # few words to learn from. (208, learnt already, is the repeated `mxgate train` below.)
        assert await engine.learn(_msg(_spam(98)), is_spam=True) is False
        assert await engine.learn(_msg(b"Subject: hi\r\n\r\nhi\r\n"), is_spam=False) is False
        # ... while one it disagrees with is learnt.
        assert await engine.learn(_msg(_spam(97)), is_spam=False) is True
        spam, ham = await engine.check(unseen_spam), await engine.check(unseen_ham)
        assert "BAYES_SPAM" in spam.symbols and "BAYES_HAM" in ham.symbols
        assert spam.score > before.score
        with pytest.raises(RspamdError, match="401"):  # the controller wants its password
            await _engine(rspamd, password="wrong").learn(_msg(_spam(50)), is_spam=True)
    finally:
        await engine.aclose()


def _corpus(root: Path, n: int) -> tuple[Path, Path]:
    ham, spam = root / "ham", root / "spam"
    ham.mkdir()
    spam.mkdir()
    for i in range(n):
        (ham / f"h{i}").write_bytes(b"From MAILER-DAEMON Thu Aug 22 13:17:22 2002\n" + _ham(i))
        (spam / f"s{i}").write_bytes(_spam(i))
    return ham, spam


def test_mxgate_train_teaches_rspamd_and_evaluate_runs_it(
    rspamd: RspamdServer, tmp_path: Path
) -> None:
    ham, spam = _corpus(tmp_path, 40)
    env = dict(
        os.environ,
        MXGATE_SCANNER__SPAM__RSPAMD_URL=rspamd.url,
        MXGATE_SCANNER__SPAM__RSPAMD_CONTROLLER_URL=rspamd.controller_url,
        MXGATE_SCANNER__SPAM__RSPAMD_PASSWORD=rspamd.password,
        MXGATE_SCANNER__SPAM__BAYES_PATH=str(tmp_path / "bayes"),
        # The test's own model: `mxgate train` must never write into the checkout's var/, where
        # `mxgate up` would then judge with it.
        MXGATE_SCANNER__SPAM__MODEL_PATH=str(tmp_path / "spam-model.json"),
        MXGATE_SCANNER__SPAM__BAYES_MIN_TRAINED="5",
        MXGATE_SCANNER__ENGINES='["bayes","heuristics","rspamd"]',
    )
    cmd = [MXGATE]
    args = ["--ham", str(ham), "--spam", str(spam), "--holdout", "40"]

    def run(*extra: str) -> dict:
        done = subprocess.run(
            [*cmd, *extra, *args, "--json"], env=env, capture_output=True, timeout=300, check=False
        )
        assert done.returncode == 0, done.stderr.decode()
        return json.loads(done.stdout)

    learnt = run("train")
    assert learnt["rspamd"]["errors"] == 0
    assert learnt["rspamd"]["learnt"] == learnt["bayes"]["learnt"] > 0  # bulk: every message
    # A repeated run: rspamd's learn cache declines (208) what it recognises, and that is no
    # error. (Its cache keys are its own business: it does not recognise every message.)
    again = run("train")
    assert again["rspamd"]["errors"] == 0 and again["rspamd"]["skipped"] > 0
    assert again["rspamd"]["learnt"] + again["rspamd"]["skipped"] == learnt["rspamd"]["learnt"]

    report = run("evaluate")
    assert set(report) == {
        "bayes", "heuristics", "rspamd", "combined", "combined_inprocess", "combined_score_sum",
    }  # fmt: skip
    assert report["rspamd"]["errors"] == 0
    assert report["rspamd"]["spam"] + report["rspamd"]["ham"] > 0
    # What `train` taught is what rspamd now uses on mail it has not seen.
    engine = _engine(rspamd)

    async def check() -> tuple[tuple[str, ...], tuple[str, ...]]:
        try:
            return (
                (await engine.check(_msg(_spam(1000)))).symbols,
                (await engine.check(_msg(_ham(1000)))).symbols,
            )
        finally:
            await engine.aclose()

    spam_symbols, ham_symbols = asyncio.run(check())
    assert "BAYES_SPAM" in spam_symbols and "BAYES_HAM" in ham_symbols
