"""Debian's Postfix as the customer's server, and SIGKILL of the deliverer mid-delivery: no
recipient gets none, and no recipient gets two copies, except one whose outcome the killed
deliverer could not know (Postfix had committed, the 250 was not yet read: RFC 1047), which
is resent and recorded "in doubt" in its DeliveryAttempted event."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support import samples
from support.pipeline import Pipeline, free_port, queued_id, wait_for
from support.postfix import Postfix

import schemas
from mxgate.kafka import read_events

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOTAL = 150


def copies_by_message(pf: Postfix) -> Counter[tuple[str, str]]:
    """(mxgate message ID, recipient) -> copies in the maildir."""
    out: Counter[tuple[str, str]] = Counter()
    for raw in pf.messages():
        head = raw.split(b"\n\n", 1)[0].decode("utf-8", "replace")
        rcpt = mid = ""
        for line in head.splitlines():
            if line.lower().startswith("delivered-to:") and not rcpt:
                rcpt = line.split(":", 1)[1].strip().lower()
            if line.startswith("X-MXGate:"):
                mid = dict(part.strip().partition("=")[::2] for part in line[9:].split(";")).get(
                    "id", ""
                )
        out[(mid, rcpt)] += 1
    return out


def test_sigkill_deliverer_mid_delivery_to_postfix(kafka, tmp_path: Path) -> None:
    pf = Postfix(free_port(), ["example.test", "other.test"]).start()
    p = Pipeline(tmp_path, kafka, pf.port)
    accepted: dict[str, tuple[str, str]] = {}
    lock = threading.Lock()

    def send(i: int) -> None:
        rcpts = [f"u{i}@example.test", f"v{i}@example.test"]
        code, text = p.send(samples.clean_message(i, recipient=rcpts[0]), rcpts)
        assert code == 250, text
        with lock:
            accepted[queued_id(text)] = (rcpts[0], rcpts[1])

    try:
        p.start_all()
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(send, i) for i in range(TOTAL)]
            # Kill the deliverer while it is handing mail to Postfix, twice.
            wait_for(lambda: sum(pf.count().values()) >= 40, 180, "deliveries to flow")
            p.kill("deliverer")
            p.start("deliverer")
            wait_for(lambda: sum(pf.count().values()) >= 150, 180, "deliveries to resume")
            p.kill("deliverer")
            p.start("deliverer")
            for f in futures:
                f.result()
        assert len(accepted) == TOTAL
        want = {(mid, r) for mid, rs in accepted.items() for r in rs}
        wait_for(
            lambda: set(copies_by_message(pf)) >= want, 300, f"{len(want)} recipients delivered"
        )
        copies = copies_by_message(pf)
        assert set(copies) == want, "a copy nobody asked for, or one missing"
        # The one window no deliverer can close (RFC 1047): Postfix committed, the deliverer
        # died before reading the 250. Such recipients are resent and recorded "in doubt";
        # every other recipient has exactly one copy.
        in_doubt = {
            (e.message_id, o.recipient.lower())
            for e in read_events(p.settings)
            if isinstance(e, schemas.DeliveryAttempted)
            for o in e.recipients
            if "in doubt" in o.reply
        }
        doubled = {k for k, n in copies.items() if n > 1}
        assert doubled <= in_doubt, f"duplicates not recorded in doubt: {doubled - in_doubt}"
        assert all(copies[k] <= 2 for k in doubled), "more than one resend"
    finally:
        p.stop_all()
        pf.stop()
