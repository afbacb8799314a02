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
from prometheus_client import Counter, Gauge, Histogram

import schemas
from mxgate import catalog
from mxgate.blobstore import BlobUnavailable
from mxgate.settings import KafkaSettings, Settings
from mxgate.timeutil import utcnow

log = structlog.get_logger("mxgate.kafka")

# The consume loops' health, in the process's default registry (like the roles' other metrics).
DEAD_LETTERED = Counter(
    "mxgate_kafka_dead_lettered",
    "Input records set aside on mxgate.deadletter.v1, by group, source topic and cause.",
    ["group", "topic", "cause"],
)
BATCH_FAILURES = Counter(
    "mxgate_kafka_batch_failures",
    "Aborted batch transactions, by group and kind (transient: store or broker unavailable).",
    ["group", "kind"],
)
UNKNOWN_SCHEMA = Counter(
    "mxgate_kafka_unknown_schema_records",
    "Times a partition was paused on a record of an unknown writer schema.",
    ["group", "topic"],
)
WAITING_FOR_SCHEMA = Gauge(
    "mxgate_kafka_partitions_waiting_for_schema",
    "Partitions paused now on a record of an unknown writer schema (alert when above 0).",
    ["group"],
)
BATCH_BYTES = Histogram(
    "mxgate_kafka_batch_bytes",
    "Bytes of the message bodies a batch (one transaction) holds, as its weigh function counts "
    "them, by group.",
    ["group"],
    buckets=tuple(float(2**n) for n in range(16, 32, 2)),  # 64 KiB .. 1 GiB
)
BATCHES_CUT = Counter(
    "mxgate_kafka_batches_cut_by_bytes",
    "Batches closed early because the next record would take them past their byte budget.",
    ["group"],
)


class KafkaUnavailable(Exception):
    """The broker did not acknowledge in time; the caller must not claim success."""


def base_config(settings: KafkaSettings) -> dict[str, Any]:
    """Config common to every client."""
    if not settings.bootstrap_servers:
        raise KafkaUnavailable("no Kafka bootstrap servers configured")
    cfg: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.instance_id,
    }
    return cfg | security_config(settings)


def security_config(settings: KafkaSettings) -> dict[str, Any]:
    """The librdkafka keys of the settings' TLS and SASL (none for PLAINTEXT), for every client.

    The password is read out of its SecretStr only here, into the dict handed to librdkafka:
    never log a client config.
    """
    cfg: dict[str, Any] = {}
    if settings.security_protocol == "PLAINTEXT":
        return cfg
    cfg["security.protocol"] = settings.security_protocol.lower()
    if settings.security_protocol.startswith("SASL_"):
        cfg["sasl.mechanism"] = settings.sasl_mechanism
        cfg["sasl.username"] = settings.sasl_username
        cfg["sasl.password"] = settings.sasl_password.get_secret_value()
    if settings.ssl_ca_location is not None:
        cfg["ssl.ca.location"] = str(settings.ssl_ca_location)
    if settings.ssl_certificate_location is not None and settings.ssl_key_location is not None:
        cfg["ssl.certificate.location"] = str(settings.ssl_certificate_location)
        cfg["ssl.key.location"] = str(settings.ssl_key_location)
    return cfg


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


class _PossiblyPersisted(Exception):
    """The delivery report said the record timed out: it may have been sent and written."""

    def __init__(self, err: KafkaError, partition: int, timestamp_ms: int) -> None:
        super().__init__(str(err))
        self.partition = partition
        self.timestamp_ms = timestamp_ms


class AsyncProducer:
    """A confluent-kafka producer whose ``produce`` is awaitable until the broker acks.

    One background thread serves delivery reports; librdkafka batches concurrent produces,
    so many sessions awaiting at once share one request (group commit for free).

    A produce that *timed out* is not a definite failure: the request may have been sent and
    the record written, and answering 451 then makes the sender send the message again (two
    message IDs, delivered twice). Within ``message.timeout.ms`` librdkafka already retries
    with the idempotent producer's sequence numbers (no duplicates). After a timeout,
    :meth:`produce` reads the partition back from the record's timestamp on: found, it was
    persisted (success); not found, it produces the record again with the same key (the same
    message ID, which every later stage dedupes on), while ``retry_within`` seconds last. Only
    a definite error, or the bound running out, raises :class:`KafkaUnavailable`.

    What remains: a record that the broker writes *after* the read-back found nothing (a
    request stuck in the broker past its timeout) is followed by its re-produced twin: two
    ``MessageReceived`` with one message ID, which the scanner decides twice and the
    deliverer's dedupe (by message ID and recipient) delivers once; and when the broker stays
    unreachable through the bound, the answer is 451 although the record may have landed (the
    sender's retry is then a second message: the one duplicate Kafka cannot rule out here).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        message_timeout: float = 30.0,
        retry_within: float | None = None,
    ) -> None:
        self._settings = settings
        self._producer = Producer(producer_config(settings, message_timeout=message_timeout))
        self._timeout = message_timeout
        self._retry_within = message_timeout if retry_within is None else retry_within
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kafka-producer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def produce(self, topic: str, key: str, value: bytes) -> None:
        """Produce one record and wait for librdkafka's definite delivery report (acks=all); a
        timed-out one is checked and retried as the class says.

        librdkafka reports every record within message.timeout.ms, success or failure, so
        there is no shorter asyncio timeout here (see receiver.handler for why that matters).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout + self._retry_within
        attempt = 1
        while True:
            try:
                await self._produce_once(topic, key, value)
                if attempt > 1:
                    log.warning("timed-out produce retried", topic=topic, key=key, attempt=attempt)
                return
            except _PossiblyPersisted as e:
                last = e
            log.warning("produce timed out; reading the partition back", topic=topic, key=key,
                        partition=last.partition, attempt=attempt, error=str(last))  # fmt: skip
            left = deadline - loop.time()
            if last.partition >= 0 and left > 0:
                found = await asyncio.to_thread(
                    self._persisted, topic, last.partition, key, value, last.timestamp_ms, left
                )
                if found:
                    log.warning("timed-out produce was persisted", topic=topic, key=key)
                    return
            if deadline - loop.time() <= 0:
                raise KafkaUnavailable(f"produce timed out {attempt}x, not confirmed: {last}")
            attempt += 1

    async def _produce_once(self, topic: str, key: str, value: bytes) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def done(err: KafkaError | None, msg: Message) -> None:
            def settle() -> None:
                if fut.done():
                    return
                if err is not None and err.code() == KafkaError._MSG_TIMED_OUT:
                    part = msg.partition()
                    fut.set_exception(
                        _PossiblyPersisted(err, -1 if part is None else part, msg.timestamp()[1])
                    )
                elif err is not None:
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

    def _persisted(
        self, topic: str, partition: int, key: str, value: bytes, ts_ms: int, within: float
    ) -> bool:
        """Whether the record (same key and value) is on the partition, written since
        ``ts_ms`` (a little earlier: clocks); False when that cannot be told in ``within`` s."""
        return record_on_partition(self._settings, topic, partition, key, value, ts_ms, within)

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued and stop the delivery-report thread."""
        self._producer.flush(timeout)
        self._stop.set()
        self._thread.join(timeout)


def record_on_partition(
    settings: KafkaSettings,
    topic: str,
    partition: int,
    key: str,
    value: bytes,
    since_ms: int,
    within: float,
) -> bool:
    """Whether a record with exactly ``key`` and ``value`` is on ``topic``/``partition`` at or
    after the time ``since_ms`` (less 60 s for clock skew); reads at most ``within`` seconds,
    False when it cannot tell (broker unreachable)."""
    end = time.monotonic() + within
    c = Consumer(
        base_config(settings)
        | {
            "group.id": "mxgate.produce-check",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
            "enable.partition.eof": True,
        }
    )
    want = key.encode()
    try:
        start = max(0, since_ms - 60_000) if since_ms > 0 else 0
        (tp,) = c.offsets_for_times([TopicPartition(topic, partition, start)], timeout=within)
        if tp.offset < 0:
            return False  # nothing written since then
        _, hi = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=within)
        c.assign([TopicPartition(topic, partition, tp.offset)])
        while time.monotonic() < end:
            for m in c.consume(500, 0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return False
                    continue
                if m.key() == want and m.value() == value:
                    return True
                off = m.offset()
                if off is not None and off >= hi - 1:
                    return False
        return False
    except KafkaException:
        return False
    finally:
        c.close()


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
Weigh = Callable[[Incoming], int]
"""The bytes handling a record will hold in memory (its message body), for the byte budget."""


@dataclass(frozen=True, slots=True)
class _Item:
    """One record of a batch: its decoded event, or why it is no event (then it goes to the
    dead-letter topic with the batch)."""

    msg: Message
    incoming: Incoming | None
    error: str = ""


def transient(e: BaseException) -> bool:
    """Whether ``e`` says a dependency is unavailable (the store, the broker) rather than that
    the record cannot be processed: such failures never count towards dead-lettering."""
    if isinstance(e, BlobUnavailable | ConnectionError | KafkaUnavailable):
        return True
    if isinstance(e, KafkaException) and isinstance(e.args[0], KafkaError):
        err: KafkaError = e.args[0]
        return bool(err.retriable()) or err.code() in _NO_LEADER_YET
    return False


class TransactionalLoop:
    """Consume a batch, handle it, produce the outputs and commit the input offsets in one
    Kafka transaction: a crash or rebalance never loses or duplicates a decision.

    Nothing loops, stalls or is skipped:

    * A batch whose handling fails is aborted and tried again; once a batch holding a record
      has failed ``max_attempts`` times, the batch is split and its records are tried one by
      one. A record that fails alone is produced to ``mxgate.deadletter.v1`` (a
      ``DeadLettered`` with its value and error) in the transaction that commits its offset;
      the others carry on. Failures of an unavailable store or broker (:func:`transient`) do
      not count: the batch waits for them, with backoff.
    * A record that is no event (not single-object encoding, or a body that does not decode)
      is dead-lettered with the batch it came in.
    * A record whose writer schema is *unknown* (a newer writer in a rolling upgrade) is not
      poison: its partition is paused at it (nothing past it is committed), counted and logged,
      and the schemas are reread every ``schema_retry`` seconds until it decodes.

    ``hold`` lets a stage leave records that are not yet due (retry tiers) in place: the
    partition is rewound to the held record and paused until it is due.

    ``batch_bytes`` bounds a batch's memory, not only its count: with ``weigh`` saying how
    many bytes a record's handling holds (its body), a batch closes before the record that
    would take it past ``batch_bytes``. That record and every later one already fetched are
    given back (each partition is rewound to its first one) and start the next batch. A
    record heavier than the whole budget is a batch of its own, so nothing ever stalls.
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
        batch_bytes: int | None = None,
        weigh: Weigh | None = None,
    ) -> None:
        if batch_bytes is not None and batch_bytes < 1:
            raise ValueError(f"batch_bytes must be at least 1, not {batch_bytes}")
        self._settings = settings
        self._role = role
        self._group = f"{settings.group_prefix}.{role}"
        self._topics = list(topics)
        self._handler = handler
        self._batch = batch_size
        self._hold = hold
        self._poll_timeout = poll_timeout
        self._batch_bytes = batch_bytes
        self._weigh = weigh
        self._paused: dict[tuple[str, int], float] = {}
        self._schema_wait: set[tuple[str, int]] = set()  # paused on an unknown writer schema
        self._attempts: dict[tuple[str, int, int], int] = {}  # failed batches holding a record
        self._failures = 0  # consecutive failed attempts, for the backoff
        self._deadletter = catalog.name(catalog.DEADLETTER, settings.topic_prefix)
        tid = f"{settings.group_prefix}.{role}.{settings.instance_id}"
        self._producer = Producer(producer_config(settings, transactional_id=tid))
        self._consumer = Consumer(consumer_config(settings, role))
        self.log = log.bind(role=role, instance=settings.instance_id)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; finishes the batch in hand before returning."""
        # init_transactions fences a dead predecessor with the same transactional.id and aborts
        # its open transaction, so its half-done batch becomes invisible downstream.
        await asyncio.to_thread(self._producer.init_transactions, 60)
        if self._settings.schema_dirs:
            schemas.reload(tuple(self._settings.schema_dirs))  # newer writers known up front
        await asyncio.to_thread(self._consumer.subscribe, self._topics, on_revoke=self._revoked)
        try:
            while not stop.is_set():
                self._resume_due()
                msgs = await asyncio.to_thread(self._next_batch)
                items = self._filter(msgs)
                if items:
                    await self._process(items)
        finally:
            await asyncio.to_thread(self._consumer.close)
            await asyncio.to_thread(self._producer.flush, 10)

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Forget what was kept about partitions another member takes over."""
        gone = {(tp.topic, tp.partition) for tp in partitions}
        for k in gone:
            self._paused.pop(k, None)
            self._schema_wait.discard(k)
        self._attempts = {k: v for k, v in self._attempts.items() if k[:2] not in gone}
        WAITING_FOR_SCHEMA.labels(self._group).set(len(self._schema_wait))

    def _next_batch(self) -> list[Message]:
        """Wait for one record, then take whatever else is already fetched (up to the batch
        size). consume(n, timeout) alone would hold a lone record for the whole timeout,
        adding that much latency at every stage when traffic is light."""
        first = self._consumer.consume(1, self._poll_timeout)
        if not first or self._batch == 1:
            return first
        return first + self._consumer.consume(self._batch - 1, 0.002)

    def _filter(self, msgs: list[Message]) -> list[_Item]:
        """The records to commit with this batch, decoded (or with why they are no event), up
        to the byte budget (the records past it are given back for the next batch)."""
        out: list[_Item] = []
        held: set[tuple[str, int]] = set()
        total = 0  # bytes the batch holds so far (``weigh``)
        for n, m in enumerate(msgs):
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
            except schemas.UnknownSchema as e:
                # A newer writer: wait for its schema, never commit past this record.
                held.add(tp)
                self._wait_for_schema(m, e)
                continue
            except schemas.SchemaError as e:
                out.append(_Item(m, None, str(e)))  # no event: dead-lettered with the batch
                continue
            if tp in self._schema_wait:
                self._schema_wait.discard(tp)
                WAITING_FOR_SCHEMA.labels(self._group).set(len(self._schema_wait))
                self.log.warning("writer schema learnt, partition resumed", topic=topic,
                                 partition=partition, offset=offset)  # fmt: skip
            incoming = Incoming(topic, partition, offset, _key(m), event)
            h = self._hold(incoming) if self._hold else None
            if h is not None:
                held.add(tp)
                self._pause(m, h.seconds)
                continue
            size = self._weigh(incoming) if self._weigh else 0
            if self._over_budget(total, size):
                # Close the batch here; this record and the rest start the next one.
                self._give_back(msgs[n:], held)
                BATCHES_CUT.labels(self._group).inc()
                break
            total += size
            out.append(_Item(m, incoming))
        if out:
            BATCH_BYTES.labels(self._group).observe(total)
        return out

    def _over_budget(self, total: int, size: int) -> bool:
        """Whether a record of ``size`` bytes would take a batch holding ``total`` past the
        byte budget. A batch that holds no bytes yet takes any record (one heavier than the
        whole budget is a batch of its own)."""
        return self._batch_bytes is not None and total > 0 and total + size > self._batch_bytes

    def _give_back(self, rest: Sequence[Message], held: set[tuple[str, int]]) -> None:
        """Rewind each partition of ``rest`` (records fetched but not taken into this batch)
        to its first such record, so they are consumed again for the next batch. Partitions
        already rewound to an earlier record (held, unknown schema) are left as they are.

        A seek that fails raises, like the one of a hold: the loop stops before committing
        anything past records it did not handle, and the group's committed offsets decide
        where it goes on."""
        first: dict[tuple[str, int], int] = {}
        for m in rest:
            if m.error() is not None:
                continue
            topic, partition, offset = position(m)
            k = (topic, partition)
            if k not in held:
                first[k] = min(first.get(k, offset), offset)
        for (t, part), off in first.items():
            self._consumer.seek(TopicPartition(t, part, off))

    def _wait_for_schema(self, m: Message, e: schemas.UnknownSchema) -> None:
        topic, partition, offset = position(m)
        tp = (topic, partition)
        if tp not in self._schema_wait:
            self._schema_wait.add(tp)
            UNKNOWN_SCHEMA.labels(self._group, topic).inc()
            WAITING_FOR_SCHEMA.labels(self._group).set(len(self._schema_wait))
            self.log.error("unknown writer schema: partition paused until it is known",
                           topic=topic, partition=partition, offset=offset,
                           fingerprint=e.fingerprint.hex())  # fmt: skip
        self._pause(m, self._settings.schema_retry)

    def _pause(self, m: Message, seconds: float) -> None:
        topic, partition, offset = position(m)
        tp = TopicPartition(topic, partition, offset)
        self._consumer.pause([tp])
        self._consumer.seek(tp)
        self._paused[(topic, partition)] = time.monotonic() + seconds

    def _resume_due(self) -> None:
        now = time.monotonic()
        due = [k for k, t in self._paused.items() if t <= now]
        if not due:
            return
        if self._schema_wait & set(due):
            # Learn schemas deployed since (a newer release's files, or the extra folders).
            schemas.reload(tuple(self._settings.schema_dirs))
        self._consumer.resume([TopicPartition(t, p) for t, p in due])
        for k in due:
            del self._paused[k]

    async def _process(self, items: list[_Item]) -> None:
        limit = self._settings.max_attempts
        if not any(self._attempts.get(position(it.msg), 0) >= limit for it in items):
            await self._attempt(items)
            return
        # Split: one record per transaction, in order per partition; a record that fails alone
        # is dead-lettered, and a partition whose record could not be settled stops here (it
        # was rewound to that record).
        stopped: set[tuple[str, int]] = set()
        settled: dict[tuple[str, int], int] = {}  # next offset, where a failure rewound us
        for it in items:
            topic, partition, offset = position(it.msg)
            tp = (topic, partition)
            if tp in stopped:
                continue
            error = await self._attempt([it])
            if error is not None and not transient(error):
                error = await self._attempt([it], dead=repr(error))
                settled[tp] = offset + 1
            if error is not None:
                stopped.add(tp)
            elif tp in settled:
                settled[tp] = offset + 1
        # A failure seeked its partition back to the record that is now settled: go on after
        # the last record committed, or it would be read (and decided) twice.
        for (t, part), off in settled.items():
            if (t, part) not in stopped:
                with contextlib.suppress(KafkaException):
                    self._consumer.seek(TopicPartition(t, part, off))

    async def _attempt(self, items: list[_Item], dead: str = "") -> BaseException | None:
        """Handle ``items`` in one transaction (with ``dead``: only dead-letter them, with that
        error). Returns the error that aborted it, or None when committed."""
        p = self._producer
        await asyncio.to_thread(p.begin_transaction)
        try:
            events = [it.incoming for it in items if it.incoming is not None]
            outputs = await self._handler(events) if events and not dead else []
            for o in outputs:
                await self._produce(o.topic, o.key, schemas.encode_event(o.event))
            letters = [
                self._dead_letter(it, dead or it.error, "handler" if dead else "undecodable")
                for it in items
                if dead or it.incoming is None
            ]
            for d in letters:
                await self._produce(self._deadletter, d.key, schemas.encode_event(d))
            offsets: dict[tuple[str, int], int] = {}
            for it in items:
                topic, partition, offset = position(it.msg)
                k = (topic, partition)
                offsets[k] = max(offsets.get(k, -1), offset + 1)
            tps = [TopicPartition(t, part, off) for (t, part), off in offsets.items()]
            meta = self._consumer.consumer_group_metadata()
            await asyncio.to_thread(p.send_offsets_to_transaction, tps, meta, 60)
            await asyncio.to_thread(p.commit_transaction, 60)
        except BaseException as e:
            kind = "transient" if transient(e) else "failed"
            self.log.error("batch failed, aborting transaction", error=repr(e), size=len(items),
                           kind=kind)  # fmt: skip
            BATCH_FAILURES.labels(self._group, kind).inc()
            with contextlib.suppress(KafkaException):
                await asyncio.to_thread(p.abort_transaction, 60)
            self._rewind(items)
            if isinstance(e, KafkaException) and e.args[0].fatal():
                raise
            if not isinstance(e, Exception):
                raise
            if kind != "transient":
                for it in items:
                    at = position(it.msg)
                    self._attempts[at] = self._attempts.get(at, 0) + 1
            self._failures += 1
            await asyncio.sleep(min(30.0, self._settings.retry_backoff * 2 ** (self._failures - 1)))
            return e
        self._failures = 0
        for it in items:
            self._attempts.pop(position(it.msg), None)
        for d in letters:
            DEAD_LETTERED.labels(self._group, d.topic, d.cause).inc()
            self.log.error("record dead-lettered", topic=d.topic, partition=d.partition,
                           offset=d.offset, key=d.key, cause=d.cause, attempts=d.attempts,
                           error=d.error, deadletter=self._deadletter)  # fmt: skip
        return None

    async def _produce(self, topic: str, key: str, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, key=key.encode(), value=value)
                return
            except BufferError:
                await asyncio.to_thread(self._producer.poll, 0.1)

    def _dead_letter(self, it: _Item, error: str, cause: str) -> schemas.DeadLettered:
        topic, partition, offset = position(it.msg)
        tried = 0 if cause == "undecodable" else self._attempts.get((topic, partition, offset), 0)
        return schemas.DeadLettered(
            topic=topic, partition=partition, offset=offset, key=_key(it.msg),
            value=it.msg.value() or b"", cause=cause, error=error[:4000], attempts=tried,
            group=self._group, instance=self._settings.instance_id, dead_lettered_at=utcnow(),
        )  # fmt: skip

    def _rewind(self, batch: list[_Item]) -> None:
        """Seek back to the first record of the batch in each partition, to process it again."""
        first: dict[tuple[str, int], int] = {}
        for it in batch:
            topic, partition, offset = position(it.msg)
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


class IncompleteRead(KafkaUnavailable):
    """Some partitions could not be read up to the end captured when the read started (or hold
    records of a writer schema this reader does not know): what was read is not everything."""

    def __init__(self, missing: dict[tuple[str, int], str]) -> None:
        shown = ", ".join(f"{t}[{p}]: {why}" for (t, p), why in sorted(missing.items())[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        super().__init__(f"incomplete read of {len(missing)} partition(s): {shown}{more}")
        self.missing = missing


class EventReader:
    """Every committed event on mxgate's topics (optionally only those keyed by ``keys``, or
    only on the full topic names ``topics``), from the beginning up to the end offsets captured
    when iteration starts; iterate it once.

    It reads *to those ends*: a partition is done when the consumer's position reaches its end
    (transaction markers can sit past the last data record: the position, not the last record's
    offset, says when). Transient partition errors are waited out; when a partition makes no
    progress for ``stall`` seconds, iteration stops with ``complete`` False and ``missing``
    saying why (:func:`read_events` raises :class:`IncompleteRead` instead). A record of an
    unknown writer schema also makes the read incomplete (a newer writer's event we could not
    read); bytes that are no event at all are counted in ``undecodable`` and passed over.
    """

    def __init__(
        self,
        settings: Settings,
        keys: set[str] | None = None,
        topics: Iterable[str] | None = None,
        stall: float = 30.0,
    ) -> None:
        self._settings = settings
        self._keys = keys
        self._topics = list(topics) if topics is not None else None
        self._stall = stall
        self.complete = False
        """True once every partition was read to its end and every record decoded."""
        self.missing: dict[tuple[str, int], str] = {}
        """Partitions not read to their end (or holding unknown schemas), with why."""
        self.undecodable = 0
        """Records passed over because they are no event (they are on the dead-letter path)."""

    def __iter__(self) -> Iterator[schemas.Event]:
        if self._settings.kafka.schema_dirs:
            schemas.reload(tuple(self._settings.kafka.schema_dirs))
        consumer = Consumer(
            base_config(self._settings.kafka)
            | {
                "group.id": "ops.trace",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            yield from self._read(consumer)
        finally:
            consumer.close()

    def _read(self, consumer: Consumer) -> Iterator[schemas.Event]:
        meta = consumer.list_topics(timeout=10)
        ends: dict[tuple[str, int], int] = {}
        assign = []
        for topic in _topics(self._settings) if self._topics is None else self._topics:
            if topic not in meta.topics:
                continue
            for p in meta.topics[topic].partitions:
                lo, hi = _watermarks(consumer, TopicPartition(topic, p))
                if hi > lo:
                    ends[(topic, p)] = hi
                    assign.append(TopicPartition(topic, p, lo))
        if not assign:
            self.complete = True
            return
        consumer.assign(assign)
        pending = set(ends)
        errors: dict[tuple[str, int], str] = {}
        unknown: dict[tuple[str, int], str] = {}
        last_progress = time.monotonic()
        while pending:
            batch = consumer.consume(500, 1.0)
            for m in batch:
                k = (m.topic() or "", m.partition() or 0)
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(k)  # at the end as of now: the captured end is behind
                        last_progress = time.monotonic()
                    else:
                        errors[k] = str(err)  # a transient error is waited out (stall)
                    continue
                last_progress = time.monotonic()
                offset = position(m)[2]
                if offset >= ends[k]:
                    pending.discard(k)
                    continue
                if offset >= ends[k] - 1:
                    pending.discard(k)
                if self._keys is not None and _key(m) not in self._keys:
                    continue
                try:
                    yield schemas.decode_event(m.value() or b"")
                except schemas.UnknownSchema as e:
                    unknown[k] = f"offset {offset}: {e}"
                except schemas.SchemaError:
                    self.undecodable += 1
            if not batch and pending:
                # Past the last data record only markers may remain: the position says so.
                for tp in consumer.position([TopicPartition(t, p) for t, p in pending]):
                    k = (tp.topic, tp.partition)
                    if tp.offset >= 0 and tp.offset >= ends[k]:
                        pending.discard(k)
                if pending and time.monotonic() - last_progress > self._stall:
                    break
        self.missing = {
            k: errors.get(k, f"stalled before offset {ends[k]}") for k in pending
        } | unknown
        self.complete = not self.missing


def read_events(
    settings: Settings,
    keys: set[str] | None = None,
    topics: Iterable[str] | None = None,
    stall: float = 30.0,
) -> Iterator[schemas.Event]:
    """Every committed event on mxgate's topics (optionally only those keyed by ``keys``, or
    only on the full topic names ``topics``), read from the beginning up to the end as it was
    when the call started.

    Raises :class:`IncompleteRead` (after yielding what it read) when some partition could not
    be read to that end: never a silent partial answer. Use :class:`EventReader` to get the
    events with a ``complete`` flag instead (e.g. gc: incomplete means keep everything).
    """
    reader = EventReader(settings, keys, topics, stall)
    yield from reader
    if not reader.complete:
        raise IncompleteRead(reader.missing)


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


def create_acls(
    settings: KafkaSettings, rules: Sequence[catalog.Acl], timeout: float = 30.0
) -> None:
    """Create ``rules`` on the brokers (existing ones are left as they are; Kafka dedupes)."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    bindings = [
        AclBinding(
            # confluent-kafka calls Kafka's CLUSTER resource BROKER.
            ResourceType["BROKER" if a.resource == "CLUSTER" else a.resource],
            a.name,
            ResourcePatternType[a.pattern],
            a.principal,
            "*",
            AclOperation[a.operation],
            AclPermissionType.ALLOW,
        )
        for a in rules
    ]
    admin = AdminClient(base_config(settings))
    for binding, fut in admin.create_acls(bindings, request_timeout=timeout).items():
        try:
            fut.result()
        except KafkaException as e:
            raise KafkaUnavailable(f"ACL not created ({binding}): {e}") from e
