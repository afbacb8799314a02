"""The dedupe record is rebuilt from the delivery topic: an instance with an empty state (a
takeover, a new machine) learns every committed delivery, and nothing from an aborted one."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

import schemas
from deliverer.dedupe import DeliveredLog, rebuild_from_topic
from mxgate import catalog
from mxgate.kafka import create_topics, producer_config

pytestmark = pytest.mark.integration


def _attempt(mid: str, outcomes: dict[str, str], at: dt.datetime) -> bytes:
    return schemas.encode(
        schemas.DELIVERY_ATTEMPTED,
        {
            "message_id": mid, "tenant": "example", "attempted_at": at, "attempt": 1,
            "remote_host": "127.0.0.1:25", "action": "deliver", "next_attempt_at": None,
            "recipients": [
                {"recipient": r, "status": s, "reply_code": 250 if s == "delivered" else 451,
                 "reply": "ok"}
                for r, s in outcomes.items()
            ],
        },
    )  # fmt: skip


def test_rebuild_marks_committed_deliveries_only(kafka, tmp_path: Path) -> None:
    ks = kafka.settings(topic_prefix=f"t{uuid.uuid4().hex[:10]}.", partitions=3)
    create_topics(ks, [catalog.DELIVERY])
    kafka.grant(ks.topic_prefix, ks.group_prefix, retry_tiers=4)
    topic = catalog.name(catalog.DELIVERY, ks.topic_prefix)
    now = dt.datetime.now(dt.UTC)
    p = Producer(producer_config(ks, transactional_id=f"test-{uuid.uuid4()}"))
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, key=b"M1", value=_attempt("M1", {"a@x.test": "delivered",
                                                      "b@x.test": "deferred"}, now))  # fmt: skip
    p.produce(topic, key=b"M3", value=_attempt("M3", {"c@x.test": "delivered"}, now))
    p.commit_transaction(30)
    p.begin_transaction()
    p.produce(topic, key=b"M2", value=_attempt("M2", {"a@x.test": "delivered"}, now))
    p.abort_transaction(30)  # a deliverer that died before committing

    # The rebuild reads as the deliverer does, with its principal.
    deliverer = kafka.as_role(ks, "deliverer")
    log = DeliveredLog(tmp_path / "fresh")
    try:
        n = rebuild_from_topic(log, deliverer, topic, since=now - dt.timedelta(days=1))
        assert n == 2
        assert log.delivered("M1", "A@x.test")  # recipients compare case-insensitively
        assert not log.delivered("M1", "b@x.test")
        assert log.delivered("M3", "c@x.test")
        assert not log.delivered("M2", "a@x.test")
        # Nothing that recent: nothing to read.
        empty = DeliveredLog(tmp_path / "empty")
        try:
            later = now + dt.timedelta(hours=1)
            assert rebuild_from_topic(empty, deliverer, topic, since=later) == 0
        finally:
            empty.close()
    finally:
        log.close()
