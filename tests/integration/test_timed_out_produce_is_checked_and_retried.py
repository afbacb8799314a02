"""A produce that timed out is not a definite failure (the receiver would answer 451 and the
sender send the message again): ``AsyncProducer`` reads the partition back and, when the record
is not there, produces it again with the same key; only a definite error or the bound running
out raises ``KafkaUnavailable``.

The producer and its read-back run as the receiver's principal on the session's secured broker,
on a received topic of the test's own with the receiver's ACLs: the read-back needs them.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from support.bus import Bus

from mxgate import catalog
from mxgate import kafka as mk
from mxgate.kafka import AsyncProducer, KafkaUnavailable, base_config, record_on_partition
from mxgate.settings import KafkaSettings

pytestmark = pytest.mark.integration


def _topic(bus: Bus, create: bool = True) -> tuple[KafkaSettings, KafkaSettings, str]:
    """The receiver's settings, the test's own (the super user) and a received topic of a
    prefix of its own (with one partition; created only if ``create``)."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    bus.grant(prefix, "mxgate", retry_tiers=4)
    admin = bus.settings(topic_prefix=prefix)
    name = catalog.name(catalog.RECEIVED, prefix)
    if create:
        _create(admin, name)
    return bus.as_role(admin, "receiver"), admin, name


def _create(admin: KafkaSettings, name: str) -> None:
    client = AdminClient(base_config(admin))  # kept alive until the future is done
    client.create_topics([NewTopic(name, 1, 1)])[name].result(timeout=60)


def _values(ks: KafkaSettings, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    c = Consumer(base_config(ks) | {"group.id": f"g-{uuid.uuid4().hex}",
                                    "enable.partition.eof": True})  # fmt: skip
    out = []
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        end = time.monotonic() + 60
        while time.monotonic() < end:
            m = c.poll(1.0)
            if m is None:
                continue
            err = m.error()
            if err is not None and err.code() == KafkaError._PARTITION_EOF:
                break
            if err is None:
                out.append((m.key(), m.value()))
    finally:
        c.close()
    return out


def test_the_read_back_finds_a_written_record_and_only_that_one(kafka: Bus) -> None:
    ks, _, topic = _topic(kafka)
    before = int(time.time() * 1000)

    async def go() -> None:
        p = AsyncProducer(ks, message_timeout=10.0)
        try:
            await p.produce(topic, "m1", b"v1")
        finally:
            p.close()

    asyncio.run(go())
    assert record_on_partition(ks, topic, 0, "m1", b"v1", before, 30.0)
    assert not record_on_partition(ks, topic, 0, "m1", b"other", before, 30.0)
    assert not record_on_partition(ks, topic, 0, "m2", b"v1", before, 30.0)


class _LostAck(AsyncProducer):
    """The broker writes the first record but its acknowledgement is lost (reported as a
    timeout): what a network cut between the broker's write and its response does."""

    lost = 0

    async def _produce_once(self, topic: str, key: str, value: bytes) -> None:
        await super()._produce_once(topic, key, value)
        if self.lost == 0:
            self.lost += 1
            err = KafkaError(KafkaError._MSG_TIMED_OUT)
            raise mk._PossiblyPersisted(err, 0, int(time.time() * 1000))


def test_a_timed_out_record_that_was_written_counts_as_written_once(kafka: Bus) -> None:
    ks, admin, topic = _topic(kafka)

    async def go() -> None:
        p = _LostAck(ks, message_timeout=10.0)
        try:
            await p.produce(topic, "m1", b"v1")  # no KafkaUnavailable: no 451
        finally:
            p.close()

    asyncio.run(go())
    assert _values(admin, topic) == [(b"m1", b"v1")]  # found, not produced again


class _Counting(AsyncProducer):
    attempts = 0
    retrying: asyncio.Event | None = None

    async def _produce_once(self, topic: str, key: str, value: bytes) -> None:
        self.attempts += 1
        if self.attempts == 2 and self.retrying is not None:
            self.retrying.set()  # the first attempt timed out
        await super()._produce_once(topic, key, value)


def test_a_timed_out_record_that_was_not_written_is_produced_again(kafka: Bus) -> None:
    ks, admin, topic = _topic(kafka, create=False)  # no topic yet: the first attempt times out
    p = _Counting(ks, message_timeout=1.0, retry_within=60.0)

    async def go() -> None:
        try:
            p.retrying = asyncio.Event()
            task = asyncio.create_task(p.produce(topic, "m1", b"v1"))
            await p.retrying.wait()
            # The topic appears while the first attempt waits (a leader coming back).
            await asyncio.to_thread(_create, admin, topic)
            await task
        finally:
            p.close()

    asyncio.run(go())
    assert p.attempts >= 2
    assert _values(admin, topic) == [(b"m1", b"v1")]


def test_only_when_the_bound_runs_out_is_it_a_failure(kafka: Bus) -> None:
    ks, _, topic = _topic(kafka, create=False)  # never created: every attempt times out

    async def go() -> None:
        p = AsyncProducer(ks, message_timeout=1.0, retry_within=1.0)
        try:
            with pytest.raises(KafkaUnavailable, match=r"timed out \d+x, not confirmed"):
                await p.produce(topic, "m1", b"v1")
        finally:
            p.close()

    asyncio.run(go())
