"""A consume loop on a real broker never loops on, stalls at or skips a bad record.

* A record the handler always fails on is tried with its batch ``max_attempts`` times, then
  alone once more, and lands on ``mxgate.deadletter.v1`` with its value and error; every other
  record is processed exactly once.
* Bytes that are no event are dead-lettered at once (cause ``undecodable``).
* ``mxgate deadletter list|show|retry --json`` (the console script) finds them, shows the
  original record, and puts it back on its source topic, recorded as ``DeadLetterRetried``.
* A record written with a schema the reader does not know (a newer writer in a rolling upgrade)
  stays uncommitted, with its partition paused, and is processed once the reader learns the
  schema; the other partition carries on meanwhile.

The loop runs as the scanner's principal and `mxgate deadletter` as ops, on the session's
secured broker with the catalog's ACLs on the test's topics: their rights suffice.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import io
import json
import os
import subprocess
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from fastavro import parse_schema, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form
from prometheus_client import REGISTRY
from support.bus import Bus
from support.cli import MXGATE

import schemas
from mxgate import catalog
from mxgate.kafka import (
    Incoming,
    Output,
    TransactionalLoop,
    base_config,
    create_topics,
    read_events,
)
from mxgate.settings import Settings
from ops.operators import identify

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
BOUND = 90.0  # seconds: a broken loop fails the test instead of hanging it


def _received(mid: str) -> schemas.MessageReceived:
    return schemas.MessageReceived(
        message_id=mid, tenant="example", received_at=NOW, accepted_at=NOW, receiver="r",
        client_ip="192.0.2.1", helo="mx.sender.test", mail_from="a@sender.test",
        rcpt_to=("b@example.test",), size=10, sha256="00" * 32, object_key=f"k/{mid}",
    )  # fmt: skip


def _settings(tmp_path: Path, bus: Bus, **kafka: Any) -> Settings:
    """The test's own settings (the super user), the roles granted their ACLs on its topics."""
    ks = bus.settings(
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        group_prefix=f"g{uuid.uuid4().hex[:10]}",
        instance_id=f"i{uuid.uuid4().hex[:8]}",
        partitions=2,
        **kafka,
    )
    s = Settings(kafka=ks, tenants_file=tmp_path / "tenants.toml")
    create_topics(ks, [catalog.RECEIVED, catalog.SCANNED, catalog.DEADLETTER])
    bus.grant(ks.topic_prefix, ks.group_prefix, len(s.deliverer.retry_schedule))
    return s


def _produce(s: Settings, topic: str, records: list[tuple[int, str, bytes]]) -> None:
    p = Producer(base_config(s.kafka) | {"acks": "all", "enable.idempotence": True})
    for partition, key, value in records:
        p.produce(topic, key=key.encode(), value=value, partition=partition)
    assert p.flush(30) == 0


def _cli(s: Settings, bus: Bus, cwd: Path, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MXGATE_")} | {
        **bus.env("ops"),
        "MXGATE_KAFKA__TOPIC_PREFIX": s.kafka.topic_prefix,
        "MXGATE_TENANTS_FILE": str(s.tenants_file),
    }
    done = subprocess.run(
        [MXGATE, "deadletter", *args, "--json"],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _committed(s: Settings, role: str, topic: str, partition: int) -> int:
    c = Consumer(base_config(s.kafka) | {"group.id": f"{s.kafka.group_prefix}.{role}"})
    try:
        for attempt in range(6):
            try:
                (tp,) = c.committed([TopicPartition(topic, partition)], timeout=10)
                return int(tp.offset)
            except KafkaException:
                # A transaction's offsets still being written (unstable), or a slow coordinator.
                if attempt == 5:
                    raise
        raise AssertionError("unreachable")
    finally:
        c.close()


async def _until(check: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + BOUND
    # In a thread: a check may ask the broker for committed offsets, which blocks, and the
    # loop under test must go on committing meanwhile (else the offsets stay unstable and the
    # query times out: a deadlock of the test's own making).
    while not await asyncio.to_thread(check):
        assert loop.time() < end, f"not within {BOUND}s: {what}"
        await asyncio.sleep(0.2)


async def _running(loop: TransactionalLoop, body: Callable[[], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        await body()
    finally:
        stop.set()
        await task


async def test_a_record_that_always_fails_is_dead_lettered_and_the_rest_go_on_once(
    tmp_path: Path, kafka: Bus
) -> None:
    s = _settings(tmp_path, kafka, max_attempts=3, retry_backoff=0.05)
    p = s.kafka.topic_prefix
    received = catalog.name(catalog.RECEIVED, p)
    out_topic = catalog.name(catalog.SCANNED, p)
    dead_topic = catalog.name(catalog.DEADLETTER, p)
    good = [f"good-{i}" for i in range(8)]
    poison = _received("poison")
    records = [(i % 2, m, schemas.encode_event(_received(m))) for i, m in enumerate(good[:4])]
    records += [(0, "poison", schemas.encode_event(poison)), (1, "garbage", b"not an event")]
    records += [(i % 2, m, schemas.encode_event(_received(m))) for i, m in enumerate(good[4:])]
    _produce(s, received, records)

    calls: Counter[str] = Counter()

    async def handle(batch: Sequence[Incoming]) -> list[Output]:
        for i in batch:
            assert isinstance(i.event, schemas.MessageReceived)
            calls[i.event.message_id] += 1
        if any(i.key == "poison" for i in batch):
            raise ValueError("cannot encode \udcff")  # what a remote 8-bit reply once did
        return [Output(out_topic, i.key, i.event) for i in batch]

    loop = TransactionalLoop(
        kafka.as_role(s.kafka, "scanner"), "scanner", [received], handle, batch_size=50
    )
    out: list[schemas.Event] = []
    dead: list[schemas.Event] = []

    async def body() -> None:
        def done() -> bool:
            out[:] = list(read_events(s, topics=[out_topic]))
            dead[:] = list(read_events(s, topics=[dead_topic]))
            return len(dead) >= 2 and len(out) >= len(good)

        await _until(done, "every good record decided, poison and garbage dead-lettered")

    await _running(loop, body)

    # Every good record decided exactly once, in spite of the batches that failed around them.
    assert sorted(e.message_id for e in out if isinstance(e, schemas.MessageReceived)) == good
    letters = {e.key: e for e in dead if isinstance(e, schemas.DeadLettered)}
    assert set(letters) == {"poison", "garbage"}
    d = letters["poison"]
    assert (d.topic, d.partition, d.offset, d.cause) == (received, 0, 2, "handler")
    assert d.group == f"{s.kafka.group_prefix}.scanner" and d.instance == s.kafka.instance_id
    assert d.value == schemas.encode_event(poison) and d.original() == poison
    assert "cannot encode" in d.error and d.attempts == 4  # 3 with the batch, 1 alone
    # No loop: the poison was handled once per attempt, no more.
    assert calls["poison"] == d.attempts
    g = letters["garbage"]
    assert (g.cause, g.value, g.attempts, g.partition) == ("undecodable", b"not an event", 0, 1)
    assert "C3 01" in g.error
    # Both partitions committed to their ends: nothing skipped, nothing left to loop on.
    assert _committed(s, "scanner", received, 0) == 5
    assert _committed(s, "scanner", received, 1) == 5
    sample = REGISTRY.get_sample_value(
        "mxgate_kafka_dead_lettered_total",
        {"group": d.group, "topic": received, "cause": "handler"},
    )
    assert sample == 1.0

    # Ops find them, look at one, and put the poison back once its cause is fixed.
    listed = _cli(s, kafka, tmp_path, "list")
    assert {x["key"]: x["id"] for x in listed} == {"poison": d.id, "garbage": g.id}
    assert _cli(s, kafka, tmp_path, "list", "--topic", catalog.RECEIVED.name) == listed
    assert _cli(s, kafka, tmp_path, "list", "--topic", "mxgate.delivery.v1") == []
    shown = _cli(s, kafka, tmp_path, "show", d.id)
    assert (shown["cause"], shown["attempts"], shown["state"]) == ("handler", 4, "dead")
    assert base64.b64decode(shown["value_base64"]) == schemas.encode_event(poison)
    assert shown["event"]["type"] == "MessageReceived"
    assert shown["event"]["message_id"] == "poison"
    assert _cli(s, kafka, tmp_path, "show", g.id)["event"] is None
    done = _cli(s, kafka, tmp_path, "retry", d.id, "--reason", "fixed")
    # On the secured bus the CLI authenticated as ops, and records that principal.
    me = identify(kafka.env("ops").get("MXGATE_KAFKA__SASL_USERNAME")).name
    assert (done["id"], done["state"], done["retried_by"]) == (d.id, "retried", me)
    assert [x["key"] for x in _cli(s, kafka, tmp_path, "list")] == ["garbage"]
    (again,) = _cli(s, kafka, tmp_path, "list", "--state", "retried")
    assert again["history"][0]["by"] == me and again["history"][0]["reason"] == "fixed"
    back = [e for e in read_events(s, topics=[received]) if isinstance(e, schemas.MessageReceived)]
    assert [e.message_id for e in back].count("poison") == 2  # the original and the retry
    retried = [
        e for e in read_events(s, topics=[dead_topic]) if isinstance(e, schemas.DeadLetterRetried)
    ]
    assert [(r.id, r.retried_by) for r in retried] == [(d.id, me)]


def _v2_writer() -> tuple[dict[str, Any], bytes]:
    """MessageReceived as a newer release writes it: one more field (with a default), as a
    self-contained schema; and its fingerprint."""
    doc = json.loads((schemas.SCHEMA_DIR / f"{schemas.MESSAGE_RECEIVED}.avsc").read_text())
    tls = json.loads((schemas.SCHEMA_DIR / "mxgate.events.TlsInfo.avsc").read_text())
    doc = copy.deepcopy(doc)
    for f in doc["fields"]:
        if f["name"] == "tls":
            f["type"] = ["null", tls]
    doc["fields"].append({"name": "arrived_via", "type": "string", "default": ""})
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parse_schema(doc)), "CRC-64-AVRO"))
    return doc, fp


async def test_an_unknown_writer_schema_pauses_its_partition_until_learnt(
    tmp_path: Path, kafka: Bus
) -> None:
    learnt = tmp_path / "schemas"
    learnt.mkdir()
    s = _settings(tmp_path, kafka, schema_retry=0.3, schema_dirs=(learnt,))
    received = catalog.name(catalog.RECEIVED, s.kafka.topic_prefix)
    doc, fp = _v2_writer()
    rec = _received("newer").to_avro() | {"arrived_via": "smtp"}
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(doc), rec)
    newer = schemas.MAGIC + fp + buf.getvalue()
    with pytest.raises(schemas.UnknownSchema):
        schemas.decode_event(newer)
    _produce(
        s,
        received,
        [
            (0, "before", schemas.encode_event(_received("before"))),
            (0, "newer", newer),
            (0, "after", schemas.encode_event(_received("after"))),
            (1, "other", schemas.encode_event(_received("other"))),
        ],
    )
    seen: list[str] = []

    async def handle(batch: Sequence[Incoming]) -> list[Output]:
        seen.extend(i.key for i in batch)
        return []

    loop = TransactionalLoop(
        kafka.as_role(s.kafka, "scanner"), "scanner", [received], handle, batch_size=50
    )
    group = f"{s.kafka.group_prefix}.scanner"

    def paused() -> bool:
        return (
            REGISTRY.get_sample_value(
                "mxgate_kafka_unknown_schema_records_total", {"group": group, "topic": received}
            )
            == 1.0
            and "other" in seen
            and _committed(s, "scanner", received, 1) == 1
        )

    async def body() -> None:
        await _until(paused, "the other partition decided, this one paused")
        # Rereads happen every 0.3 s: wait for several, the record must still be waiting.
        waiting = REGISTRY.get_sample_value(
            "mxgate_kafka_partitions_waiting_for_schema", {"group": group}
        )
        assert waiting == 1.0
        await asyncio.sleep(1.5)
        assert seen.count("before") == 1 and "newer" not in seen and "after" not in seen
        # Never past the unknown record (asked from a thread, as in _until).
        assert await asyncio.to_thread(_committed, s, "scanner", received, 0) == 1
        # The reader learns the schema (a newer release's file, deployed beside it).
        (learnt / f"{schemas.MESSAGE_RECEIVED}.{fp.hex()}.avsc").write_text(json.dumps(doc))
        await _until(
            lambda: "after" in seen and _committed(s, "scanner", received, 0) == 3,
            "the paused partition resumed",
        )

    try:
        await _running(loop, body)
    finally:
        schemas.reload()  # the test process forgets the learnt schema
    assert sorted(seen) == ["after", "before", "newer", "other"]
    assert (
        REGISTRY.get_sample_value("mxgate_kafka_partitions_waiting_for_schema", {"group": group})
        == 0.0
    )
