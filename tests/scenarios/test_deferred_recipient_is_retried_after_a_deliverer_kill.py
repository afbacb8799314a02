"""Temporary failures are retried with backoff from durable retry topics, and the retry
survives a killed deliverer: no retry state lives only in memory."""

from __future__ import annotations

import pytest
from support import samples
from support.pipeline import MakePipeline, queued_id, wait_for
from support.sink import SinkThread

import schemas
from mxgate.kafka import read_events
from ops.trace import history

pytestmark = pytest.mark.integration


def test_deferred_recipient_is_retried_after_a_deliverer_kill(
    sink: SinkThread, make_pipeline: MakePipeline
) -> None:
    sink.handler.fault = "tempfail"  # 451 to every DATA until told otherwise
    p = make_pipeline(sink.port)
    p.start_all()
    code, text = p.send(samples.clean_message(3), ["later@example.test"])
    assert code == 250, text
    mid = queued_id(text)

    def attempts() -> list[schemas.DeliveryAttempted]:
        return [
            e for e in read_events(p.settings, {mid}) if isinstance(e, schemas.DeliveryAttempted)
        ]

    # At least two deferred attempts: the first, and one from retry tier 0.
    deferred = wait_for(lambda: a if len(a := attempts()) >= 2 else None, 120, "2 attempts")
    assert all(r.recipients[0].status == "deferred" for r in deferred)
    assert all(r.recipients[0].reply_code == 451 for r in deferred)
    assert deferred[0].attempt == 1 and deferred[1].attempt == 2
    assert deferred[0].next_attempt_at is not None
    assert sink.messages == []

    # Kill the deliverer while the next retry waits in its tier; heal the server; restart.
    p.kill("deliverer")
    sink.handler.fault = "none"
    p.start("deliverer")
    wait_for(lambda: sink.messages, 120, "the retried delivery")
    h = wait_for(
        lambda: h if (h := history(p.settings, mid))["outcome"] == "delivered" else None,
        60,
        "the trace to show the delivery",
    )
    assert [d["attempt"] for d in h["deliveries"]] == sorted(d["attempt"] for d in h["deliveries"])
    assert h["deliveries"][-1]["attempt"] >= 3
    assert len(sink.messages) == 1, "exactly one copy after the retries"
