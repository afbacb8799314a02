"""Waiting for the scanner's decision inside the SMTP session (rejects in session).

One consumer thread per receiver process follows the scanned topic from its end (no consumer
group: every receiver sees every decision, and decisions are small) and hands each one to the
session waiting for that message ID, if any.
"""

from __future__ import annotations

import asyncio
import threading

import structlog
from confluent_kafka import OFFSET_END, Consumer, KafkaError, TopicPartition

import schemas
from mxgate import catalog
from mxgate.kafka import base_config
from mxgate.settings import KafkaSettings

log = structlog.get_logger("mxgate.receiver")


class DecisionWatcher:
    """Delivers MessageScanned events to sessions that registered their message ID."""

    def __init__(self, settings: KafkaSettings, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._topic = catalog.name(catalog.SCANNED, settings.topic_prefix)
        self._waiting: dict[str, asyncio.Future[schemas.MessageScanned]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._consumer = Consumer(
            base_config(settings)
            | {
                "group.id": f"{settings.group_prefix}.receiver-decisions",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self._thread = threading.Thread(target=self._follow, name="decisions", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        """Assign every partition at its end; returns once the consumer is positioned."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"could not follow {self._topic} within {timeout:.0f}s")

    def _follow(self) -> None:
        meta = self._consumer.list_topics(self._topic, timeout=30)
        parts = meta.topics[self._topic].partitions if self._topic in meta.topics else {}
        self._consumer.assign([TopicPartition(self._topic, p, OFFSET_END) for p in parts])
        self._ready.set()
        while not self._stop.is_set():
            m = self._consumer.poll(0.2)
            if m is None:
                continue
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("decision stream error", error=str(err))
                continue
            key = (m.key() or b"").decode()
            with self._lock:
                fut = self._waiting.pop(key, None)
            if fut is None:
                continue
            try:
                event = schemas.decode_event(m.value() or b"")
            except schemas.SchemaError:
                continue
            if isinstance(event, schemas.MessageScanned):
                self._loop.call_soon_threadsafe(_settle, fut, event)
        self._consumer.close()

    def expect(self, message_id: str) -> asyncio.Future[schemas.MessageScanned]:
        """Register interest in ``message_id`` *before* its MessageReceived is produced, so a
        fast decision cannot slip past."""
        fut: asyncio.Future[schemas.MessageScanned] = self._loop.create_future()
        with self._lock:
            self._waiting[message_id] = fut
        return fut

    def forget(self, message_id: str) -> None:
        """Stop waiting (the wait ran out, or the accept failed)."""
        with self._lock:
            fut = self._waiting.pop(message_id, None)
        if fut is not None and not fut.done():
            fut.cancel()

    def close(self) -> None:
        """Stop the consumer thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)


def _settle(fut: asyncio.Future[schemas.MessageScanned], decision: schemas.MessageScanned) -> None:
    if not fut.done():
        fut.set_result(decision)
