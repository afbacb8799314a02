"""At most one copy per recipient: a local record of every remote 250, in rocksdict.

It is written right after the remote server accepts a recipient and before the attempt's event
is committed to Kafka, so a deliverer killed between the two does not deliver again when the
batch is re-run after restart.

On start the record is also rebuilt from the delivery topic (:func:`rebuild_from_topic`), so
an instance that takes over another's partitions knows what that one delivered and committed.
What no rebuild can know is a 250 that another instance got and died before committing: SMTP
has no two-phase commit (RFC 1047), so that narrow window stays with the instance that owns
the state_path; restarting it under the same instance id (static membership) closes it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from rocksdict import Options, Rdict, WriteOptions

import schemas
from deliverer.text import safe_address, safe_reply
from mxgate.kafka import base_config, position
from mxgate.settings import KafkaSettings


class DeliveredLog:
    """Which (message, recipient) pairs a remote server already accepted."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        opts = Options()
        opts.create_if_missing(True)
        self._db = Rdict(str(path), opts)
        wo = WriteOptions()
        # Survives a process kill (the WAL is in the page cache); fsync per write would cost a
        # disk flush per recipient for the rarer case of losing the machine itself.
        wo.sync = False
        self._db.set_write_options(wo)

    @staticmethod
    def _key(message_id: str, recipient: str) -> str:
        # safe_address: identity for every printable address, and the same form that events
        # carry, so a rebuild from the topic finds the key the live path wrote.
        return f"{message_id}\x00{safe_address(recipient).lower()}"

    def delivered(self, message_id: str, recipient: str) -> bool:
        """True when this recipient of this message was already accepted downstream."""
        return self._key(message_id, recipient) in self._db

    def mark(self, message_id: str, recipient: str, reply: str) -> None:
        """Record the remote's acceptance of ``recipient``."""
        # An unencodable value would raise here, after the remote's 250: the batch would re-run
        # and deliver again.
        self._db[self._key(message_id, recipient)] = safe_reply(reply)

    def intend(self, message_id: str, recipients: list[str]) -> None:
        """Note that DATA is about to end for ``recipients``: from here until the reply is
        read, a crash leaves their outcome unknown (the remote may have committed)."""
        for r in recipients:
            self._db["?" + self._key(message_id, r)] = b""

    def settle(self, message_id: str, recipients: list[str]) -> None:
        """The remote's reply for ``recipients`` was read: their outcome is known."""
        for r in recipients:
            self._db.delete("?" + self._key(message_id, r))

    def in_doubt(self, message_id: str, recipient: str) -> bool:
        """True when an earlier attempt died between the end of DATA and the reply."""
        return ("?" + self._key(message_id, recipient)) in self._db

    def close(self) -> None:
        """Flush and close the database."""
        self._db.close()


def rebuild_from_topic(
    delivered: DeliveredLog,
    kafka: KafkaSettings,
    topic: str,
    since: dt.datetime,
    timeout: float = 60.0,
) -> int:
    """Mark every recipient the committed DeliveryAttempted events of ``topic`` (from
    ``since`` on) record as delivered; returns how many were read.

    Another instance that takes over a partition (or a replacement machine with an empty
    state_path) thus knows what its predecessors delivered and committed. Only committed
    transactions are read; a 250 whose event was never committed is covered by the local
    record of the instance that got it (see the module doc).
    """
    consumer = Consumer(
        base_config(kafka)
        | {
            "group.id": f"{kafka.group_prefix}.deliverer.dedupe-rebuild",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    marked = 0
    try:
        meta = consumer.list_topics(topic, timeout=timeout)
        if topic not in meta.topics or meta.topics[topic].error is not None:
            return 0
        parts = [
            TopicPartition(topic, p, int(since.timestamp() * 1000))
            for p in meta.topics[topic].partitions
        ]
        starts = consumer.offsets_for_times(parts, timeout=timeout)
        ends: dict[int, int] = {}
        assign = []
        for tp in starts:
            _, hi = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout)
            start = tp.offset if tp.offset >= 0 else hi  # -1: nothing that recent
            if hi > start:
                ends[tp.partition] = hi
                assign.append(TopicPartition(topic, tp.partition, start))
        if not assign:
            return 0
        consumer.assign(assign)
        pending = set(ends)
        while pending:
            batch = consumer.consume(500, 5.0)
            if not batch:
                break  # only transaction markers (or nothing) left
            for m in batch:
                if m.error():
                    pending.discard(m.partition() or 0)  # partition EOF (it has one)
                    continue
                _, part, offset = position(m)
                if offset >= ends[part] - 1:
                    pending.discard(part)
                try:
                    event = schemas.decode_event(m.value() or b"")
                except schemas.SchemaError:
                    continue
                if not isinstance(event, schemas.DeliveryAttempted):
                    continue
                for r in event.recipients:
                    if r.status == "delivered":
                        delivered.mark(event.message_id, r.recipient, r.reply)
                        marked += 1
    finally:
        consumer.close()
    return marked
