"""The engine scoreboard (faust worker, rocksdict tables) on a real pipeline's verdict stream.

One scenario: content decides, YARA runs in shadow; a clean message and an EICAR message are
scanned; the scoreboard worker counts the verdict stream and serves per-engine figures over
HTTP, which `mxgate scoreboard stats --json` prints.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from support import samples
from support.pipeline import REPO, Pipeline, free_port, wait_for

from mxgate import catalog
from mxgate.trace import read_events

pytestmark = pytest.mark.integration


def _stats(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
            return json.load(r)
    except OSError:
        return None


@pytest.mark.xfail(
    strict=True,
    reason="open: the faust worker starts, is assigned the scanned and facts topics and "
    "serves HTTP, but /stats never shows the counts within 180 s (not yet diagnosed)",
)
def test_scoreboard_counts_the_verdict_stream(kafka, tmp_path: Path) -> None:
    p = Pipeline(
        tmp_path,
        kafka.bootstrap_servers,
        free_port(),  # nothing is delivered in this scenario
        extra_env={
            "MXGATE_SCANNER__ENGINES": '["content"]',
            "MXGATE_SCANNER__SHADOW_ENGINES": '["yara"]',
            "MXGATE_OPS__STATE_PATH": str(tmp_path / "ops"),
            "MXGATE_OPS__SCOREBOARD_PORT": str(port := free_port()),
        },
    )
    board = None
    log = open(tmp_path / "scoreboard.log", "wb")
    try:
        p.start("scanner")
        p.start("receiver")
        for body in (samples.clean_message(1), samples.eicar_plain()):
            code, text = p.send(body, ["user@example.test"])
            assert code == 250, text
        scanned = catalog.name(catalog.SCANNED, p.prefix)
        wait_for(lambda: len(list(read_events(p.settings, topics=[scanned]))) == 2, 120, "scans")
        board = subprocess.Popen(
            [sys.executable, "-m", "mxgate", "scoreboard", "run"],
            env=p.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

        def counted() -> dict | None:
            assert board.poll() is None, (tmp_path / "scoreboard.log").read_text()[-3000:]
            s = _stats(port)
            engines = (s or {}).get("engines", {})
            total = sum(w["messages"] for w in engines.get("yara", {}).values())
            return s if total == 2 else None

        stats = wait_for(counted, 180, "the scoreboard to count both messages")["engines"]
        (yara,) = stats["yara"].values()
        (content,) = stats["content"].values()
        assert yara["shadow"] is True and content["shadow"] is False
        assert yara["detections"] == 1 and yara["detection_rate"] == 0.5
        assert yara["unique_catches"] == 1  # content, the only other engine, missed it
        assert content["detections"] == 0 and content["disagreements"] == 0
        assert yara["error_rate"] == 0.0 and yara["latency_ms"]["p50"] > 0

        out = subprocess.run(
            [sys.executable, "-m", "mxgate", "scoreboard", "stats", "--json"],
            env=p.env, cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert json.loads(out.stdout)["engines"]["yara"] == stats["yara"]
    finally:
        if board is not None and board.poll() is None:
            board.send_signal(signal.SIGTERM)
            try:
                board.wait(60)
            except subprocess.TimeoutExpired:
                board.kill()
                board.wait(10)
        log.close()
        p.stop_all()
