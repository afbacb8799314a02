"""A real SMTP peer that answers the end of DATA with 8-bit garbage (``250 2.0.0 ok \\xff\\xfe
queued``): the message arrives exactly once and its DeliveryAttempted event is committed.

Before the fix the undecodable reply made the event (and the dedupe record) unencodable, the
deliverer's transaction aborted, and every re-run of the batch delivered another copy.
"""

from __future__ import annotations

import time

import pytest
from support import samples
from support.pipeline import MakePipeline, queued_id, wait_for
from support.sink import SinkThread, mxgate_id

import schemas
from mxgate.kafka import read_events

pytestmark = pytest.mark.integration


def test_garbage_reply_to_data_delivers_one_copy_and_records_it(
    sink: SinkThread, make_pipeline: MakePipeline
) -> None:
    p = make_pipeline(sink.port)

    def attempts(mid: str) -> list[schemas.DeliveryAttempted]:
        return [
            e for e in read_events(p.settings, {mid}) if isinstance(e, schemas.DeliveryAttempted)
        ]

    def copies(mid: str) -> int:
        return sum(1 for m in sink.messages if mxgate_id(m.data) == mid)

    def send(i: int, rcpt: str) -> str:
        code, text = p.send(samples.clean_message(i), [rcpt], "alice@sender.test")
        assert code == 250, text
        return queued_id(text)

    p.start_all()
    sink.handler.fault = "garbage"  # every transaction
    mid = send(1, "g1@example.test")
    wait_for(lambda: attempts(mid), 120, "the DeliveryAttempted event")
    (event,) = attempts(mid)
    (r,) = event.recipients
    assert (r.status, r.reply_code) == ("delivered", 250)
    assert r.reply == "2.0.0 ok \\xff\\xfe queued"
    # A looping batch re-ran about every second, each time with another copy: give it room.
    time.sleep(5)
    assert copies(mid) == 1
    assert len(attempts(mid)) == 1
    # The partition moved on: the next message is delivered (and recorded) once as well.
    mid2 = send(2, "g2@example.test")
    wait_for(lambda: attempts(mid2), 120, "the second message's event")
    assert copies(mid2) == 1 and copies(mid) == 1
