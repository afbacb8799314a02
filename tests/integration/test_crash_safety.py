"""Nothing lost, nothing doubled: SIGKILL the scanner and the deliverer while 500 messages are
in flight, restart them, and check that every accepted message has exactly one MessageScanned
and every clean recipient got exactly one copy."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support import samples
from support.pipeline import Pipeline, queued_id, wait_for
from support.sink import SinkThread

import schemas
from mxgate.trace import read_events

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOTAL = 500


def test_sigkill_scanner_and_deliverer_mid_stream(kafka, tmp_path: Path) -> None:
    sink = SinkThread().start()
    p = Pipeline(tmp_path, kafka.bootstrap_servers, sink.port)
    accepted: list[str] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        body = samples.eicar_zip() if i % 25 == 0 else samples.clean_message(i)
        code, text = p.send(body, [f"u{i}@example.test"])
        assert code == 250, text
        with lock:
            accepted.append(queued_id(text))

    try:
        p.start_all()
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(send, i) for i in range(TOTAL)]
            # Kill each stage while mail is flowing through it, then bring it back.
            wait_for(lambda: len(accepted) >= 120, 120, "120 accepted")
            p.kill("scanner")
            wait_for(lambda: len(accepted) >= 200, 120, "200 accepted")
            p.start("scanner")
            wait_for(lambda: len(sink.messages) >= 60, 180, "deliveries to flow")
            p.kill("deliverer")
            wait_for(lambda: len(accepted) >= 350, 120, "350 accepted")
            p.start("deliverer")
            wait_for(lambda: len(sink.messages) >= 200, 180, "deliveries to resume")
            p.kill("scanner")
            p.kill("deliverer")
            p.start("scanner")
            p.start("deliverer")
            for f in futures:
                f.result()
        assert len(accepted) == TOTAL

        clean_expected = TOTAL - TOTAL // 25
        wait_for(
            lambda: len(sink.copies_per_recipient()) >= clean_expected,
            300,
            f"{clean_expected} clean recipients delivered",
        )

        def scanned_counts() -> Counter[str]:
            return Counter(
                r["message_id"] for n, r in read_events(p.settings) if n == schemas.MESSAGE_SCANNED
            )

        counts = wait_for(
            lambda: c if len(c := scanned_counts()) >= TOTAL else None,
            120,
            "a decision for every message",
        )
        assert set(counts) == set(accepted)
        assert {m: n for m, n in counts.items() if n != 1} == {}, "duplicated decisions"

        copies = sink.copies_per_recipient()
        assert {k: v for k, v in copies.items() if v != 1} == {}, "duplicate deliveries"
        infected = {
            r["message_id"]
            for n, r in read_events(p.settings)
            if n == schemas.MESSAGE_SCANNED and r["action"] == "quarantine"
        }
        assert len(infected) == TOTAL // 25
        assert {mid for mid, _ in copies} == set(accepted) - infected
    finally:
        p.stop_all()
        sink.stop()
