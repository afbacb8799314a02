"""The engine scoreboard (faust worker, rocksdict tables) on a real pipeline's verdict stream.

One scenario: YARA and content decide, clamav runs in shadow against a clamd that is not there
(every verdict an error); a clean and an EICAR message are scanned; the scoreboard worker counts
the verdict stream and serves per-engine figures over HTTP, which `mxgate engines stats --json`
prints. The worker is then stopped, one more message is scanned, and the restarted worker goes
on from its rocksdict state and committed offsets: every decision counted exactly once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support import samples
from support.cli import MXGATE
from support.factories import NO_VERIFICATION
from support.pipeline import REPO, Pipeline, free_port, wait_for

from mxgate import catalog
from mxgate.kafka import read_events

pytestmark = pytest.mark.integration

WINDOWS = ("1h", "1d")  # MXGATE_OPS__SCOREBOARD_WINDOW's default, and the day


def _stats(port: int) -> dict[str, Any] | None:
    """The worker's /stats, or None while nothing listens yet. An HTTP error (a 500 from the
    view) is raised, not waited out."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
            return dict(json.load(r))
    except urllib.error.HTTPError:
        raise
    except OSError:
        return None


def _totals(stats: dict[str, Any], label: str, engine: str) -> dict[str, int]:
    """An engine's counts summed over the windows of one length (a test that runs across an
    hour or day boundary sees two windows)."""
    rows = stats["windows"][label]["engines"].get(engine, {}).values()
    keys = ("messages", "detections", "unique_catches", "disagreements", "errors", "timeouts")
    return {k: sum(int(w[k]) for w in rows) for k in keys}


def _cli(p: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MXGATE, *args],
        env=p.env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _stop(board: subprocess.Popen[bytes]) -> None:
    if board.poll() is None:
        board.send_signal(signal.SIGTERM)
        try:
            board.wait(60)
        except subprocess.TimeoutExpired:
            board.kill()
            board.wait(10)


def test_scoreboard_counts_the_verdict_stream_exactly_once(kafka, tmp_path: Path) -> None:
    port = free_port()
    p = Pipeline(
        tmp_path,
        kafka,
        free_port(),  # nothing is delivered in this scenario
        recipients=NO_VERIFICATION,  # nor verified: nothing listens on that port
        extra_env={
            "MXGATE_SCANNER__ENGINES": '["yara", "content"]',
            "MXGATE_SCANNER__SHADOW_ENGINES": '["clamav"]',
            # Nothing listens there: every clamav verdict is an error (a shadow engine's
            # failure never touches the action).
            "MXGATE_SCANNER__CLAMAV_SOCKET": f"tcp://127.0.0.1:{free_port()}",
            "MXGATE_OPS__STATE_PATH": str(tmp_path / "ops"),
            "MXGATE_OPS__SCOREBOARD_HOST": "127.0.0.1",
            "MXGATE_OPS__SCOREBOARD_PORT": str(port),
        },
    )
    boards: list[subprocess.Popen[bytes]] = []
    log_path = tmp_path / "scoreboard.log"

    def start_board() -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log:
            board = subprocess.Popen(
                [MXGATE, "scoreboard", "run"],
                env=p.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        boards.append(board)
        return board

    def counted(n: int) -> Any:
        def check() -> dict[str, Any] | None:
            assert boards[-1].poll() is None, log_path.read_text(errors="replace")[-3000:]
            s = _stats(port)
            if s is None:
                return None
            return s if _totals(s, "1h", "yara")["messages"] >= n else None

        return check

    scanned = catalog.name(catalog.SCANNED, p.prefix)
    try:
        p.start("scanner")
        p.start("receiver")

        # No worker yet: the command says so, and fails.
        down = _cli(p, "engines", "stats", "--json")
        assert down.returncode == 2 and down.stdout == ""
        assert f"no scoreboard worker answers at http://127.0.0.1:{port}/stats" in down.stderr
        assert "mxgate scoreboard run" in down.stderr

        for body in (samples.clean_message(1), samples.eicar_plain()):
            code, text = p.send(body, ["user@example.test"])
            assert code == 250, text
        wait_for(lambda: len(list(read_events(p.settings, topics=[scanned]))) == 2, 120, "scans")

        start_board()
        stats = wait_for(counted(2), 180, "the scoreboard to count both messages")
        assert list(stats["windows"]) == list(WINDOWS)
        for label in WINDOWS:
            # YARA alone caught EICAR: content missed it, clamav (shadow, erroring) never counts
            # as another engine. Each of the two disagreed with the other once, on EICAR.
            assert _totals(stats, label, "yara") == {
                "messages": 2, "detections": 1, "unique_catches": 1, "disagreements": 1,
                "errors": 0, "timeouts": 0,
            }  # fmt: skip
            assert _totals(stats, label, "content") == {
                "messages": 2, "detections": 0, "unique_catches": 0, "disagreements": 1,
                "errors": 0, "timeouts": 0,
            }  # fmt: skip
            assert _totals(stats, label, "clamav") == {
                "messages": 2, "detections": 0, "unique_catches": 0, "disagreements": 0,
                "errors": 2, "timeouts": 0,
            }  # fmt: skip
            engines = stats["windows"][label]["engines"]
            assert set(engines) == {"yara", "content", "clamav"}
            for w in engines["yara"].values():
                assert w["shadow"] is False
                assert w["detection_rate"] * w["messages"] == w["detections"]  # all answered
                assert 0 < w["latency_ms"]["p50"] <= w["latency_ms"]["p99"]
            for w in engines["clamav"].values():
                assert w["shadow"] is True and w["error_rate"] == 1.0
                assert w["detection_rate"] == 0.0 and w["timeout_rate"] == 0.0
            for w in engines["content"].values():
                assert w["shadow"] is False and w["error_rate"] == 0.0
        # The tables live in rocksdict under the ops state path.
        assert list((tmp_path / "ops" / "scoreboard").rglob("*engine-counters*"))

        out = _cli(p, "engines", "stats", "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == stats
        text = _cli(p, "engines", "stats")
        assert text.returncode == 0, text.stderr
        assert any(line.startswith("clamav (shadow)") for line in text.stdout.splitlines())

        # Stop the worker, scan one more (clean) message, start it again: it restores its
        # table and resumes after its committed offsets, so nothing is counted twice.
        _stop(boards[-1])
        code, text_ = p.send(samples.clean_message(3), ["user@example.test"])
        assert code == 250, text_
        wait_for(lambda: len(list(read_events(p.settings, topics=[scanned]))) == 3, 120, "scan")
        start_board()
        again = wait_for(counted(3), 180, "the restarted scoreboard to count the third message")
        for label in WINDOWS:
            assert _totals(again, label, "yara")["messages"] == 3
            assert _totals(again, label, "yara")["detections"] == 1
            assert _totals(again, label, "content")["messages"] == 3
            assert _totals(again, label, "clamav")["errors"] == 3
    finally:
        for board in boards:
            _stop(board)
        p.stop_all()
