"""On a real broker, the consume loop's byte budget closes batches early and loses nothing.

A backlog of MessageReceived records whose sizes sum far past ``batch_bytes`` is consumed by
a TransactionalLoop weighing each record by its size: no batch holds more than the budget
(but a record heavier than the budget, alone), and every record is decided exactly once, in
order per partition, although each cut gives records back to the broker by a seek.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

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

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.UTC)
BOUND = 90.0  # seconds: a broken loop fails the test instead of hanging it
BUDGET = 100


def _received(mid: str, size: int) -> schemas.MessageReceived:
    return schemas.MessageReceived(
        message_id=mid, tenant="example", received_at=NOW, accepted_at=NOW, receiver="r",
        client_ip="192.0.2.1", helo="mx.sender.test", mail_from="a@sender.test",
        rcpt_to=("b@example.test",), size=size, sha256="00" * 32, object_key=f"k/{mid}",
    )  # fmt: skip


async def test_batches_stay_within_the_byte_budget_and_every_record_is_decided_once(
    tmp_path: Path, kafka: Any
) -> None:
    ks = kafka.settings(
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        group_prefix=f"g{uuid.uuid4().hex[:10]}",
        instance_id=f"i{uuid.uuid4().hex[:8]}",
        partitions=2,
    )
    create_topics(ks, [catalog.RECEIVED, catalog.SCANNED, catalog.DEADLETTER])
    kafka.grant(ks.topic_prefix, ks.group_prefix, retry_tiers=4)
    received = catalog.name(catalog.RECEIVED, ks.topic_prefix)
    scanned = catalog.name(catalog.SCANNED, ks.topic_prefix)
    # 40 records, 30 bytes each, and three heavier than the whole budget.
    sizes = {f"m{i:02d}": (500 if i in (7, 8, 30) else 30) for i in range(40)}
    p = Producer(base_config(ks) | {"acks": "all", "enable.idempotence": True})
    for i, (mid, size) in enumerate(sizes.items()):
        value = schemas.encode_event(_received(mid, size))
        p.produce(received, key=mid.encode(), value=value, partition=i % 2)
    assert p.flush(30) == 0

    batches: list[list[str]] = []

    async def handle(batch: Sequence[Incoming]) -> list[Output]:
        batches.append([i.key for i in batch])
        return [Output(scanned, i.key, i.event) for i in batch]

    def weigh(i: Incoming) -> int:
        return i.event.size if isinstance(i.event, schemas.MessageReceived) else 0

    # The loop under test as the scanner's principal, on the session's secured broker.
    loop = TransactionalLoop(
        kafka.as_role(ks, "scanner"),
        "scanner",
        [received],
        handle,
        batch_size=50,
        batch_bytes=BUDGET,
        weigh=weigh,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        end = asyncio.get_running_loop().time() + BOUND
        while sum(len(b) for b in batches) < len(sizes):
            assert asyncio.get_running_loop().time() < end, f"not within {BOUND}s: {batches}"
            assert not task.done(), task
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await task

    for b in batches:
        weight = sum(sizes[k] for k in b)
        assert weight <= BUDGET or len(b) == 1, (b, weight)
    # Each heavy record alone; the light ones at most three to a batch (90 of 100 bytes).
    heavy = sorted(b for b in batches if any(sizes[k] > BUDGET for k in b))
    assert heavy == [["m07"], ["m08"], ["m30"]]
    assert max(len(b) for b in batches) <= 3
    # Exactly once, in order per partition, in the loop and in what it committed.
    taken = [k for b in batches for k in b]
    assert sorted(taken) == sorted(sizes)
    for part in (0, 1):
        mine = [k for k in taken if int(k[1:]) % 2 == part]
        assert mine == sorted(mine)
    s = Settings(kafka=ks, tenants_file=tmp_path / "tenants.toml")
    out = [
        e.message_id
        for e in read_events(s, topics=[scanned])
        if isinstance(e, schemas.MessageReceived)
    ]
    assert sorted(out) == sorted(sizes)
