"""SIGTERM drains: the receiver stops accepting, finishes the transactions in flight and
exits 0; every message answered 250 has its MessageReceived event, nothing else has."""

from __future__ import annotations

import smtplib
import threading
from pathlib import Path

import pytest
from support import samples
from support.factories import NO_VERIFICATION
from support.pipeline import Pipeline, queued_id, received_ids, wait_for

pytestmark = pytest.mark.integration


def test_sigterm_mid_stream_loses_nothing_answered_250(kafka, tmp_path: Path) -> None:
    # Nothing is delivered (port 1), nor verified there: recipients are not checked.
    p = Pipeline(tmp_path, kafka, sink_port=1, recipients=NO_VERIFICATION)
    accepted: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            code, text = 0, b""
            c = smtplib.SMTP(timeout=60)
            try:
                c.connect("127.0.0.1", p.receiver_port)
                c.ehlo("client.test")
                c.mail("alice@sender.test")
                c.rcpt("bob@example.test")
                code, text = c.data(samples.clean_message(n * 100_000 + i))
            except (smtplib.SMTPException, OSError) as e:
                with lock:
                    refused.append(repr(e))
                continue
            finally:
                # The reply to DATA is what counts; a 421 after it (drain) is fine.
                with lock:
                    if code == 250:
                        accepted.append(queued_id(text.decode()))
                    elif code:
                        refused.append(f"{code} {text!r}")
                try:
                    c.quit()
                except (smtplib.SMTPException, OSError):
                    c.close()

    try:
        p.start("receiver")
        threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        wait_for(lambda: len(accepted) >= 40, 60, "40 accepted messages")
        assert p.stop("receiver") == 0
        stop.set()
        for t in threads:
            t.join(60)
        assert refused, "the receiver was still answering after SIGTERM"
        # 421 on shutdown or a refused connection; never a 5xx.
        assert not [r for r in refused if r.startswith("5")], refused
        events = set(received_ids(p))
        assert set(accepted) <= events
        assert events <= set(accepted)
    finally:
        stop.set()
        p.stop_all()
