"""When the in-session wait for a decision runs out, the answer is 250 and the pipeline carries
on as usual."""

from __future__ import annotations

from typing import TypeVar

import pytest
from support import samples
from support.pipeline import MakePipeline, Pipeline, queued_id, wait_for
from support.sink import SinkThread

import schemas
from mxgate.kafka import read_events

pytestmark = pytest.mark.integration
E = TypeVar("E", bound=schemas.Record)


def events(p: Pipeline, kind: type[E]) -> list[E]:
    return [e for e in read_events(p.settings) if isinstance(e, kind)]


def test_wait_running_out_answers_250_and_pipeline_carries_on(
    sink: SinkThread, make_pipeline: MakePipeline
) -> None:
    p = make_pipeline(
        sink.port,
        tenant_extra='session_reject = { wait = 1.5, actions = ["quarantine"] }',
    )
    p.start("deliverer")
    p.start("receiver")  # no scanner yet: no decision can arrive in time
    code, text = p.send(samples.eicar_plain(), ["victim@example.test"])
    assert code == 250, text
    mid = queued_id(text)
    p.start("scanner")
    quarantined = wait_for(
        lambda: events(p, schemas.MessageQuarantined), 90, "the later quarantine"
    )
    assert [r.message_id for r in quarantined] == [mid]
    assert events(p, schemas.MessageRejected) == []
