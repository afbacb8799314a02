"""`read_events` reads every partition to the end it captured, or says it could not.

Transactional topics end in commit markers past the last data record: the read still finishes
(by the consumer's position, not by a quiet spell) with every event. A record of a writer
schema the reader does not know makes the read incomplete: ``read_events`` raises
``IncompleteRead`` and ``EventReader.complete`` is False, so gc can keep everything.

The reads run as ops (what `mxgate trace` and gc are) on the session's secured broker.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from support.bus import Bus

import schemas
from mxgate import catalog
from mxgate.kafka import EventReader, IncompleteRead, create_topics, producer_config, read_events
from mxgate.settings import Settings

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)


def _settings(tmp_path: Path, bus: Bus) -> tuple[Settings, Settings]:
    """The test's writer (the super user) and its reader (ops), on topics of their own."""
    ks = bus.settings(topic_prefix=f"t{uuid.uuid4().hex[:10]}.", partitions=3)
    create_topics(ks, [catalog.OPS])
    s = Settings(kafka=ks, tenants_file=tmp_path / "tenants.toml")
    bus.grant(ks.topic_prefix, ks.group_prefix, len(s.deliverer.retry_schedule))
    return s, s.model_copy(update={"kafka": bus.as_role(ks, "ops")})


def _redelivered(mid: str) -> schemas.ReplayRedelivered:
    return schemas.ReplayRedelivered(
        message_id=mid, tenant="example", redelivered_at=NOW, run="r", redelivered_by="ops",
        old_action="quarantine", new_action="deliver", reasons=(), rcpt_to=("b@example.test",),
    )  # fmt: skip


def _transactions(s: Settings, topic: str, values: list[tuple[str, bytes]]) -> None:
    """One transaction per record: every partition ends in a commit marker."""
    p = Producer(producer_config(s.kafka, transactional_id=f"t-{uuid.uuid4()}"))
    p.init_transactions(30)
    for key, value in values:
        p.begin_transaction()
        p.produce(topic, key=key.encode(), value=value)
        p.commit_transaction(30)


def test_transaction_markers_past_the_last_record_do_not_cut_the_read_short(
    tmp_path: Path, kafka: Bus
) -> None:
    s, ops = _settings(tmp_path, kafka)
    topic = catalog.name(catalog.OPS, s.kafka.topic_prefix)
    mids = [f"m{i}" for i in range(12)]
    _transactions(s, topic, [(m, schemas.encode_event(_redelivered(m))) for m in mids])
    reader = EventReader(ops, topics=[topic])
    got = [e.message_id for e in reader if isinstance(e, schemas.ReplayRedelivered)]
    assert sorted(got) == sorted(mids)
    assert reader.complete and reader.missing == {}
    assert [e for e in read_events(ops, {"m3"}, topics=[topic])] == [_redelivered("m3")]


def test_a_record_it_cannot_read_makes_the_read_incomplete_not_silently_partial(
    tmp_path: Path, kafka: Bus
) -> None:
    s, ops = _settings(tmp_path, kafka)
    topic = catalog.name(catalog.OPS, s.kafka.topic_prefix)
    newer = schemas.MAGIC + b"\x01" * 8 + b"\x00"  # a writer schema nobody published here
    _transactions(
        s, topic, [("a", schemas.encode_event(_redelivered("a"))), ("n", newer), ("g", b"junk")]
    )
    reader = EventReader(ops, topics=[topic])
    assert [e.message_id for e in reader if isinstance(e, schemas.ReplayRedelivered)] == ["a"]
    assert not reader.complete
    (why,) = reader.missing.values()
    assert "0101010101010101" in why
    assert reader.undecodable == 1  # no event at all: passed over, not a reason to stop
    with pytest.raises(IncompleteRead, match="incomplete read of 1 partition"):
        list(read_events(ops, topics=[topic]))
