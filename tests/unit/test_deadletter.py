"""Dead letters without a broker: which failures count, the events, the index, unknown schemas."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException
from fastavro import parse_schema, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

import schemas
from mxgate.blobstore import BlobMissing, BlobUnavailable
from mxgate.kafka import IncompleteRead, KafkaUnavailable, transient
from mxgate.settings import KafkaSettings, Settings
from ops.deadletter import fold, matches

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)


def _letter(offset: int = 7, value: bytes = b"junk") -> schemas.DeadLettered:
    return schemas.DeadLettered(
        topic="p.mxgate.received.v1", partition=2, offset=offset, key="m1", value=value,
        cause="handler", error="ValueError('x')", attempts=4, group="mxgate.scanner",
        dead_lettered_at=NOW,
    )  # fmt: skip


def test_outages_do_not_count_towards_dead_lettering_but_bugs_do() -> None:
    assert transient(BlobUnavailable("store down"))
    assert transient(ConnectionResetError())
    assert transient(KafkaUnavailable("no broker"))
    assert transient(KafkaException(KafkaError(KafkaError._TRANSPORT)))
    assert not transient(KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)))
    assert not transient(ValueError("cannot encode"))
    assert not transient(UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates"))
    assert not transient(BlobMissing("gone"))  # a missing body will not come back by waiting
    assert issubclass(IncompleteRead, KafkaUnavailable)


def test_a_dead_letter_keeps_the_original_record_and_names_itself_by_its_position() -> None:
    original = schemas.EngineControlled(engine="clamav", enabled=False, at=NOW)
    d = _letter(value=schemas.encode_event(original))
    assert d.id == "p.mxgate.received.v1:2:7"
    assert d.original() == original
    assert _letter(value=b"junk").original() is None
    assert schemas.decode_event(schemas.encode_event(d)) == d


def test_the_index_folds_retries_and_filters_by_source_topic_and_state() -> None:
    a, b = _letter(7), _letter(8)
    retried = schemas.DeadLetterRetried(
        topic=a.topic, partition=a.partition, offset=a.offset, key=a.key, retried_by="ops",
        reason="fixed", retried_at=NOW,
    )  # fmt: skip
    index = fold([a, b, retried, schemas.DeadLetterRetried(**{**retried.to_avro(), "offset": 99})])
    assert list(index) == [a.id, b.id]
    assert index[a.id].state == "retried" and index[a.id].history[0]["by"] == "ops"
    assert index[b.id].state == "dead"
    s = Settings(kafka=KafkaSettings(topic_prefix="p."))
    assert matches(index[b.id], s, "mxgate.received.v1", "dead")
    assert matches(index[b.id], s, "p.mxgate.received.v1", "all")
    assert not matches(index[b.id], s, "mxgate.delivery.v1", "dead")
    assert not matches(index[a.id], s, None, "dead")
    shown = index[b.id].json(value=True)
    assert shown["value_base64"] == "anVuaw==" and shown["event"] is None


def test_an_unknown_writer_schema_is_told_apart_from_garbage_and_learnt_on_reload(
    tmp_path: Path,
) -> None:
    doc = json.loads((schemas.SCHEMA_DIR / f"{schemas.ENGINE_CONTROLLED}.avsc").read_text())
    doc["fields"].append({"name": "ticket", "type": "string", "default": ""})
    parsed = parse_schema(doc)
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    buf = io.BytesIO()
    schemaless_writer(
        buf, parsed, {"engine": "yara", "enabled": True, "reason": "", "actor": "", "at": NOW,
                      "ticket": "T-1"}
    )  # fmt: skip
    value = schemas.MAGIC + fp + buf.getvalue()
    with pytest.raises(schemas.UnknownSchema) as e:
        schemas.decode_event(value)
    assert e.value.fingerprint == fp
    with pytest.raises(schemas.SchemaError) as g:
        schemas.decode_event(b"garbage!!!!")
    assert not isinstance(g.value, schemas.UnknownSchema)
    (tmp_path / "newer.avsc").write_text(json.dumps(doc))
    try:
        schemas.reload((tmp_path,))
        event = schemas.decode_event(value)  # resolved into this reader's shape
        assert event == schemas.EngineControlled(engine="yara", enabled=True, at=NOW)
    finally:
        schemas.reload()
    with pytest.raises(schemas.UnknownSchema):
        schemas.decode_event(value)


def test_trace_shows_a_message_set_aside_until_it_is_retried() -> None:
    from ops.trace import fold as trace

    received = schemas.MessageReceived(
        message_id="m1", tenant="t", received_at=NOW, accepted_at=NOW, receiver="r",
        client_ip="192.0.2.1", helo="h", mail_from="a@x", rcpt_to=("b@y",), size=1,
        sha256="0" * 64, object_key="k",
    )  # fmt: skip
    d = _letter(value=schemas.encode_event(received))
    other = schemas.DeadLettered(**{**d.to_avro(), "key": "m2", "offset": 9})
    h = trace([received, d, other], "m1")
    assert h["outcome"] == "dead-lettered"
    assert [e["event"] for e in h["events"]] == ["MessageReceived", "DeadLettered"]
    retried = schemas.DeadLetterRetried(
        topic=d.topic, partition=d.partition, offset=d.offset, key="m1", retried_by="ops",
        retried_at=NOW,
    )  # fmt: skip
    assert trace([received, d, retried], "m1")["outcome"] == "received"
