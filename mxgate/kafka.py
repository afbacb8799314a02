"""Kafka helpers shared by the roles: client configs, topic creation, an asyncio producer,
and the consume-transform-produce loop that gives every stage exactly-once decisions.

This is the Kafka boundary: the loop and :func:`read_events` decode records into typed events
(:mod:`schemas.events`) and the loop encodes its outputs; roles never see Avro dicts.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

import schemas
from mxgate import catalog
from mxgate.settings import KafkaSettings, Settings

log = structlog.get_logger("mxgate.kafka")


class KafkaUnavailable(Exception):
    """The broker did not acknowledge in time; the caller must not claim success."""


def base_config(settings: KafkaSettings) -> dict[str, Any]:
    """Config common to every client."""
    if not settings.bootstrap_servers:
        raise KafkaUnavailable("no Kafka bootstrap servers configured")
    return {"bootstrap.servers": settings.bootstrap_servers, "client.id": settings.instance_id}


def producer_config(
    settings: KafkaSettings, transactional_id: str | None = None, message_timeout: float = 30.0
) -> dict[str, Any]:
    """An idempotent producer that waits for all in-sync replicas."""
    cfg = base_config(settings) | {
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 2,
        "compression.type": "lz4",
        "message.timeout.ms": int(message_timeout * 1000),
    }
    if transactional_id:
        cfg["transactional.id"] = transactional_id
        cfg["transaction.timeout.ms"] = settings.transaction_timeout_ms
        # librdkafka refuses a record timeout longer than the transaction's.
        cfg["message.timeout.ms"] = min(cfg["message.timeout.ms"], settings.transaction_timeout_ms)
    return cfg


def consumer_config(settings: KafkaSettings, group: str, static: bool = True) -> dict[str, Any]:
    """A consumer that sees only committed transactions and never auto-commits."""
    cfg = base_config(settings) | {
        "group.id": f"{settings.group_prefix}.{group}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": settings.session_timeout_ms,
        "max.poll.interval.ms": 600_000,
        "partition.assignment.strategy": "cooperative-sticky",
    }
    if static:
        # Static membership: a restarted instance takes its partitions back without a rebalance.
        cfg["group.instance.id"] = f"{group}-{settings.instance_id}"
    return cfg


def create_topics(
    settings: KafkaSettings, topics: Iterable[catalog.Topic], timeout: float = 30.0
) -> list[str]:
    """Create the catalog's topics; existing ones are left alone. Returns the names created."""
    admin = AdminClient(base_config(settings))
    existing = set(admin.list_topics(timeout=timeout).topics)
    new = []
    for t in topics:
        full = catalog.name(t, settings.topic_prefix)
        if full in existing:
            continue
        new.append(
            NewTopic(
                full,
                num_partitions=t.partitions or settings.partitions,
                replication_factor=settings.replication_factor,
                config=t.topic_config()
                | {"min.insync.replicas": str(min(2, settings.replication_factor))},
            )
        )
    created = []
    for name, fut in admin.create_topics(new, operation_timeout=timeout).items() if new else []:
        try:
            fut.result()
            created.append(name)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created


class AsyncProducer:
    """A confluent-kafka producer whose ``produce`` is awaitable until the broker acks.

    One background thread serves delivery reports; librdkafka batches concurrent produces,
    so many sessions awaiting at once share one request (group commit for free).
    """

    def __init__(self, settings: KafkaSettings, message_timeout: float = 30.0) -> None:
        self._producer = Producer(producer_config(settings, message_timeout=message_timeout))
        self._timeout = message_timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kafka-producer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def produce(self, topic: str, key: str, value: bytes) -> None:
        """Produce one record and wait for librdkafka's definite delivery report (acks=all).

        librdkafka reports every record within message.timeout.ms, success or failure, so
        there is no shorter asyncio timeout here (see receiver.handler for why that matters).
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def done(err: KafkaError | None, _msg: Message) -> None:
            def settle() -> None:
                if fut.done():
                    return
                if err is not None:
                    fut.set_exception(KafkaUnavailable(str(err)))
                else:
                    fut.set_result(None)

            loop.call_soon_threadsafe(settle)

        try:
            self._producer.produce(topic, value=value, key=key.encode(), on_delivery=done)
        except BufferError as e:
            raise KafkaUnavailable(f"producer queue full: {e}") from e
        except KafkaException as e:
            raise KafkaUnavailable(str(e)) from e
        try:
            # A safety net only: the report arrives within message.timeout.ms.
            await asyncio.wait_for(fut, self._timeout + 30)
        except TimeoutError:
            raise KafkaUnavailable("no delivery report from librdkafka") from None

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued and stop the delivery-report thread."""
        self._producer.flush(timeout)
        self._stop.set()
        self._thread.join(timeout)


@dataclass(frozen=True, slots=True)
class Incoming:
    """One consumed record, decoded: where it came from and its event."""

    topic: str
    partition: int
    offset: int
    key: str
    event: schemas.Event


@dataclass(frozen=True, slots=True)
class Output:
    """An event to produce inside the current transaction (encoded by the loop)."""

    topic: str
    key: str
    event: schemas.Event


@dataclass(frozen=True, slots=True)
class Hold:
    """Returned by a hold check: this record is not due for ``seconds``; keep it for later."""

    seconds: float


Handler = Callable[[Sequence[Incoming]], Awaitable[Sequence[Output]]]
HoldCheck = Callable[[Incoming], Hold | None]


class TransactionalLoop:
    """Consume a batch, handle it, produce the outputs and commit the input offsets in one
    Kafka transaction: a crash or rebalance never loses or duplicates a decision.

    The handler gets the batch's records decoded; a record that is not a known event is
    logged and skipped (its offset is committed with the batch: retrying cannot fix it).
    ``hold`` lets a stage leave records that are not yet due (retry tiers) in place: the
    partition is rewound to the held record and paused until it is due.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        role: str,
        topics: Sequence[str],
        handler: Handler,
        batch_size: int = 50,
        hold: HoldCheck | None = None,
        poll_timeout: float = 0.5,
    ) -> None:
        self._settings = settings
        self._role = role
        self._topics = list(topics)
        self._handler = handler
        self._batch = batch_size
        self._hold = hold
        self._poll_timeout = poll_timeout
        self._paused: dict[tuple[str, int], float] = {}
        tid = f"{settings.group_prefix}.{role}.{settings.instance_id}"
        self._producer = Producer(producer_config(settings, transactional_id=tid))
        self._consumer = Consumer(consumer_config(settings, role))
        self.log = log.bind(role=role, instance=settings.instance_id)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; finishes the batch in hand before returning."""
        # init_transactions fences a dead predecessor with the same transactional.id and aborts
        # its open transaction, so its half-done batch becomes invisible downstream.
        await asyncio.to_thread(self._producer.init_transactions, 60)
        await asyncio.to_thread(self._consumer.subscribe, self._topics)
        try:
            while not stop.is_set():
                self._resume_due()
                msgs = await asyncio.to_thread(self._next_batch)
                batch, events = self._filter(msgs)
                if batch:
                    await self._process(batch, events)
        finally:
            await asyncio.to_thread(self._consumer.close)
            await asyncio.to_thread(self._producer.flush, 10)

    def _next_batch(self) -> list[Message]:
        """Wait for one record, then take whatever else is already fetched (up to the batch
        size). consume(n, timeout) alone would hold a lone record for the whole timeout,
        adding that much latency at every stage when traffic is light."""
        first = self._consumer.consume(1, self._poll_timeout)
        if not first or self._batch == 1:
            return first
        return first + self._consumer.consume(self._batch - 1, 0.002)

    def _filter(self, msgs: list[Message]) -> tuple[list[Message], list[Incoming]]:
        """The records to commit with this batch, and the decoded events among them."""
        out: list[Message] = []
        events: list[Incoming] = []
        held: set[tuple[str, int]] = set()
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self.log.warning("consume error", error=str(err))
                continue
            topic, partition, offset = position(m)
            tp = (topic, partition)
            if tp in held:
                continue
            try:
                event = schemas.decode_event(m.value() or b"")
            except schemas.SchemaError as e:
                self.log.error("undecodable input skipped", topic=topic, offset=offset,
                               error=str(e))  # fmt: skip
                out.append(m)
                continue
            incoming = Incoming(topic, partition, offset, _key(m), event)
            h = self._hold(incoming) if self._hold else None
            if h is not None:
                held.add(tp)
                self._pause(m, h.seconds)
                continue
            out.append(m)
            events.append(incoming)
        return out, events

    def _pause(self, m: Message, seconds: float) -> None:
        topic, partition, offset = position(m)
        tp = TopicPartition(topic, partition, offset)
        self._consumer.pause([tp])
        self._consumer.seek(tp)
        self._paused[(topic, partition)] = time.monotonic() + seconds

    def _resume_due(self) -> None:
        now = time.monotonic()
        due = [k for k, t in self._paused.items() if t <= now]
        if due:
            self._consumer.resume([TopicPartition(t, p) for t, p in due])
            for k in due:
                del self._paused[k]

    async def _process(self, batch: list[Message], events: list[Incoming]) -> None:
        p = self._producer
        await asyncio.to_thread(p.begin_transaction)
        try:
            outputs = await self._handler(events) if events else []
            for o in outputs:
                value = schemas.encode_event(o.event)
                while True:
                    try:
                        p.produce(o.topic, key=o.key.encode(), value=value)
                        break
                    except BufferError:
                        await asyncio.to_thread(p.poll, 0.1)
            offsets: dict[tuple[str, int], int] = {}
            for m in batch:
                topic, partition, offset = position(m)
                k = (topic, partition)
                offsets[k] = max(offsets.get(k, -1), offset + 1)
            tps = [TopicPartition(t, part, off) for (t, part), off in offsets.items()]
            meta = self._consumer.consumer_group_metadata()
            await asyncio.to_thread(p.send_offsets_to_transaction, tps, meta, 60)
            await asyncio.to_thread(p.commit_transaction, 60)
        except BaseException as e:
            self.log.error("batch failed, aborting transaction", error=repr(e), size=len(batch))
            with contextlib.suppress(KafkaException):
                await asyncio.to_thread(p.abort_transaction, 60)
            self._rewind(batch)
            if isinstance(e, KafkaException) and e.args[0].fatal():
                raise
            if not isinstance(e, Exception):
                raise
            await asyncio.sleep(1.0)

    def _rewind(self, batch: list[Message]) -> None:
        """Seek back to the first record of the batch in each partition, to process it again."""
        first: dict[tuple[str, int], int] = {}
        for m in batch:
            topic, partition, offset = position(m)
            k = (topic, partition)
            first[k] = min(first.get(k, offset), offset)
        for (t, part), off in first.items():
            with contextlib.suppress(KafkaException):
                self._consumer.seek(TopicPartition(t, part, off))


def position(m: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a consumed record (the client's types allow None; a
    record from ``consume`` always has them, an EOF event its partition's end)."""
    topic, partition, offset = m.topic(), m.partition(), m.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


def _key(m: Message) -> str:
    return (m.key() or b"").decode("utf-8", "replace")


def _topics(settings: Settings) -> list[str]:
    tiers = len(settings.deliverer.retry_schedule)
    return [catalog.name(t, settings.kafka.topic_prefix) for t in catalog.all_topics(tiers)]


def read_events(
    settings: Settings, keys: set[str] | None = None, topics: Iterable[str] | None = None
) -> Iterator[schemas.Event]:
    """Every committed event on mxgate's topics (optionally only those keyed by ``keys``, or
    only on the full topic names ``topics``), read from the beginning up to the end as it was
    when the call started."""
    consumer = Consumer(
        base_config(settings.kafka)
        | {
            "group.id": "ops.trace",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    try:
        meta = consumer.list_topics(timeout=10)
        ends: dict[tuple[str, int], int] = {}
        assign = []
        for topic in _topics(settings) if topics is None else topics:
            if topic not in meta.topics:
                continue
            for p in meta.topics[topic].partitions:
                lo, hi = _watermarks(consumer, TopicPartition(topic, p))
                if hi > lo:
                    ends[(topic, p)] = hi
                    assign.append(TopicPartition(topic, p, lo))
        if not assign:
            return
        consumer.assign(assign)
        pending = set(ends)
        while pending:
            batch = consumer.consume(500, 5.0)
            if not batch:
                break  # five quiet seconds: the rest is transaction markers, or nothing
            for m in batch:
                if m.error():
                    pending.discard((m.topic() or "", m.partition() or 0))  # partition EOF
                    continue
                topic, partition, offset = position(m)
                k = (topic, partition)
                if offset >= ends[k] - 1:
                    pending.discard(k)
                if offset >= ends[k]:
                    continue
                if keys is None or _key(m) in keys:
                    try:
                        yield schemas.decode_event(m.value() or b"")
                    except schemas.SchemaError:
                        continue
    finally:
        consumer.close()


_NO_LEADER_YET = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
    }
)


def _watermarks(consumer: Consumer, tp: TopicPartition, tries: int = 20) -> tuple[int, int]:
    """A partition's low and high offsets, retried while a fresh topic has no leader yet."""
    for i in range(tries):
        try:
            return consumer.get_watermark_offsets(tp, timeout=10)
        except KafkaException as e:
            err = e.args[0]
            if i == tries - 1 or not (err.retriable() or err.code() in _NO_LEADER_YET):
                raise
            time.sleep(0.25)
    raise AssertionError("unreachable")
