"""Real SMTP peers whose reply to the end of DATA is broken: 8-bit garbage
(``250 2.0.0 ok \\xff\\xfe queued``), cut (``250 2.0.0 qu``, no CRLF, then close), twice in one
write (``250 2.0.0 ok`` and ``250 2.0.0 again``), or followed a moment later by an unsolicited
second 250. Each message arrives exactly once, one DeliveryAttempted event records it (the batch
never loops), and the next message over the same route is delivered with its own reply.

The garbage reply once made the event (and the dedupe record) unencodable: the deliverer's
transaction aborted and every re-run of the batch delivered another copy. The cut reply began
with 250: the peer has the message, so it counts as delivered, never resent. An extra 250 must
not be read as the answer to the next message's MAIL, RCPT or DATA: that would shift every reply
by one and "deliver" the next message on the strength of its RCPT's 250 without sending it.
"""

from __future__ import annotations

import time

import pytest
from support import samples
from support.pipeline import MakePipeline, queued_id, wait_for
from support.sink import Fault, SinkThread, mxgate_id

import schemas
from mxgate.kafka import read_events

pytestmark = pytest.mark.integration

FIRST_REPLY: dict[Fault, str] = {
    "garbage": "2.0.0 ok \\xff\\xfe queued",  # kept as bytes, escaped for the event
    "close-mid-reply": "2.0.0 qu",
    "double-250": "2.0.0 ok",
    "late-double-250": "2.0.0 ok",
}


@pytest.mark.parametrize("fault", list(FIRST_REPLY))
def test_peer_with_a_broken_reply_gets_one_copy_and_the_next_message_its_own(
    fault: Fault, sink: SinkThread, make_pipeline: MakePipeline
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
    sink.handler.fault, sink.handler.fault_count = fault, 1  # the first transaction only
    mid = send(1, "c1@example.test")
    wait_for(lambda: attempts(mid), 120, "the DeliveryAttempted event")
    (event,) = attempts(mid)
    (r,) = event.recipients
    assert (r.status, r.reply_code) == ("delivered", 250), r
    assert r.reply.startswith(FIRST_REPLY[fault]), r.reply
    # A looping batch (or a retry of a cut reply) would bring another copy: give it room.
    time.sleep(5)
    assert copies(mid) == 1
    assert len(attempts(mid)) == 1
    # Same route, right after (a pooled session would be reused): its own reply, its own copy.
    mid2 = send(2, "c2@example.test")
    wait_for(lambda: attempts(mid2), 120, "the second message's event")
    (event2,) = attempts(mid2)
    (r2,) = event2.recipients
    assert (r2.status, r2.reply_code, r2.reply) == ("delivered", 250, "2.0.0 Ok: captured"), r2
    wait_for(lambda: copies(mid2), 30, "the second message at the sink")
    time.sleep(2)
    assert copies(mid2) == 1 and copies(mid) == 1
    assert len(attempts(mid2)) == 1
