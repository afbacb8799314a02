"""Rejects inside the SMTP session: a tenant that asks for it has malware refused with 550
during the session once the decision arrives in time; when the wait runs out the answer is 250
and the pipeline carries on as usual."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import pytest
from support import samples
from support.pipeline import Pipeline, queued_id, wait_for
from support.sink import SinkThread

import schemas
from mxgate.kafka import read_events

pytestmark = pytest.mark.integration
E = TypeVar("E", bound=schemas.Record)


def events(p: Pipeline, kind: type[E]) -> list[E]:
    return [e for e in read_events(p.settings) if isinstance(e, kind)]


def test_malware_is_refused_in_session_and_clean_mail_accepted(kafka, tmp_path: Path) -> None:
    sink = SinkThread().start()
    p = Pipeline(
        tmp_path,
        kafka.bootstrap_servers,
        sink.port,
        tenant_extra='session_reject = { wait = 30, actions = ["quarantine", "discard"] }',
    )
    try:
        p.start_all()
        code, text = p.send(samples.eicar_zip(), ["victim@example.test"])
        assert code == 550, text
        assert text.startswith("5.7.1") and "virus:" in text, text
        mid = text.rsplit(" ", 1)[-1]

        code, text = p.send(samples.clean_message(5), ["friend@example.test"])
        assert code == 250, text
        clean = queued_id(text)
        wait_for(lambda: sink.messages, 60, "the clean message delivered")

        rejected = wait_for(lambda: events(p, schemas.MessageRejected), 30, "the rejection")
        assert [r.message_id for r in rejected] == [mid]
        assert rejected[0].action == "quarantine" and rejected[0].reply.startswith("550")
        # Nothing was lost: the refused message is still decided and held for audit.
        quarantined = wait_for(
            lambda: events(p, schemas.MessageQuarantined), 60, "the quarantine record"
        )
        assert [r.message_id for r in quarantined] == [mid]
        assert [m for m in sink.messages if clean.encode() not in m.data] == []
    finally:
        p.stop_all()
        sink.stop()


def test_wait_running_out_answers_250_and_pipeline_carries_on(kafka, tmp_path: Path) -> None:
    sink = SinkThread().start()
    p = Pipeline(
        tmp_path,
        kafka.bootstrap_servers,
        sink.port,
        tenant_extra='session_reject = { wait = 1.5, actions = ["quarantine"] }',
    )
    try:
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
    finally:
        p.stop_all()
        sink.stop()
