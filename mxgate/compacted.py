"""A compacted topic held as a local table: read whole at start, then followed in a thread.

Several roles keep small shared state this way (the greylisting triplets every receiver
shares, the reputation hashes every scanner shares): the latest record per key is the state,
every instance reads the topic from the beginning to its end before it serves, then applies
new records as they arrive, so an instance started or restarted anywhere holds the same table.
The consumer joins no group and commits nothing: it assigns every partition from the beginning.

What a record means is the caller's: :class:`CompactedFollower` hands each (key, value) to an
``apply`` callback (a tombstone has ``value`` None) and keeps nothing itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from mxgate.kafka import KafkaUnavailable, base_config
from mxgate.settings import KafkaSettings

__all__ = ["Apply", "CompactedFollower"]

Apply = Callable[[bytes | None, bytes | None], None]
"""Folds one record (key, value; value None for a tombstone) into the caller's table."""


class CompactedFollower:
    """Reads ``topic`` to its end (:meth:`load`), then follows it (:meth:`start`).

    ``group`` is only a name librdkafka requires (partitions are assigned by hand, nothing is
    committed); the role's ACLs grant it. ``apply`` runs on the loading thread, then on the
    follower thread: it must be thread-safe towards the readers of its table.
    """

    def __init__(self, settings: KafkaSettings, topic: str, group: str, apply: Apply) -> None:
        self.settings = settings
        self.topic = topic
        self.group = group
        self._apply = apply
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None
        self.records = 0
        """Records applied so far (loading and following)."""

    def _new_consumer(self) -> Consumer:
        return Consumer(
            base_config(self.settings)
            | {
                "group.id": self.group,
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
            }
        )

    def _fold(self, key: bytes | None, value: bytes | None) -> None:
        self._apply(key, value)
        self.records += 1

    def load(self, timeout: float) -> None:
        """Read every partition from the beginning to its end as it was when loading began.

        Raises :class:`KafkaUnavailable` when the topic is missing or cannot be read in time:
        a role must not serve from a table it could not load.
        """
        c = self._new_consumer()
        try:
            deadline = time.monotonic() + timeout
            meta = c.list_topics(self.topic, timeout=timeout)
            t = meta.topics.get(self.topic)
            if t is None or t.error is not None or not t.partitions:
                raise KafkaUnavailable(f"topic {self.topic} not found")
            ends: dict[int, int] = {}
            for p in t.partitions:
                _lo, hi = c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=timeout)
                ends[p] = hi
            c.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in ends])
            pending = {p for p, hi in ends.items() if hi > 0}
            while pending:
                if time.monotonic() > deadline:
                    raise KafkaUnavailable(f"timed out reading {self.topic}")
                m = c.poll(0.5)
                if m is None:
                    continue
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(m.partition())
                        continue
                    raise KafkaUnavailable(f"reading {self.topic}: {err}")
                self._fold(m.key(), m.value())
                part, offset = m.partition() or 0, m.offset() or 0
                if offset + 1 >= ends[part]:
                    pending.discard(part)
        except BaseException:
            c.close()
            raise
        self._consumer = c  # the follower goes on from where loading stopped

    def start(self) -> None:
        """Follow the topic in a daemon thread (after :meth:`load`)."""
        self._thread = threading.Thread(
            target=self._follow, name=f"follow-{self.topic}", daemon=True
        )
        self._thread.start()

    def _follow(self) -> None:
        c = self._consumer or self._new_consumer()
        self._consumer = None
        try:
            while not self._stop.is_set():
                m = c.poll(0.5)
                if m is None or m.error():
                    continue  # EOF and transient errors: librdkafka reconnects by itself
                self._fold(m.key(), m.value())
        finally:
            c.close()

    def stop(self) -> None:
        """Stop following and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        elif self._consumer is not None:
            self._consumer.close()
            self._consumer = None
