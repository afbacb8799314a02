"""The engine control topic: ops switch engines cluster-wide; scanners report engine status.

``mxgate.control.v1`` (:data:`mxgate.catalog.CONTROL`) is compacted and has one partition. It
carries two events:

- ``EngineControlled`` under key ``engine/<name>``: the latest one per engine says whether it
  is switched on. Written by ``mxgate engines disable|enable``; every scanner follows the topic
  (:class:`ControlWatcher`) and stops or resumes running the engine within about a second,
  without a restart. No record means on.
- ``EngineStatus`` under key ``status/<scanner>/<engine>``: each scanner's view of each engine
  (state, versions, recent error rate, p50/p99), published every ``scanner.control_refresh``
  seconds; ``mxgate engines`` reads them back.

The consumer uses no group: it assigns the partition from the beginning, so every scanner sees
every record and none commits offsets.
"""

from __future__ import annotations

import getpass
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

import schemas
from mxgate import catalog
from mxgate.kafka import KafkaUnavailable, base_config, position, producer_config
from mxgate.settings import KafkaSettings
from mxgate.timeutil import utcnow

__all__ = [
    "ControlView",
    "ControlWatcher",
    "publish_control",
    "publish_status",
    "read_control",
]


def topic_name(settings: KafkaSettings) -> str:
    """The control topic's name with the deployment's prefix."""
    return catalog.name(catalog.CONTROL, settings.topic_prefix)


@dataclass
class ControlView:
    """What the control topic says: switches per engine and the latest status reports."""

    switches: dict[str, schemas.EngineControlled] = field(default_factory=dict)
    statuses: dict[tuple[str, str], schemas.EngineStatus] = field(default_factory=dict)

    def apply(self, value: bytes | None, key: bytes | None) -> None:
        """Fold one record in; undecodable records and tombstones of unknown keys are ignored."""
        k = (key or b"").decode("utf-8", "replace")
        if value is None:  # a tombstone: forget the key
            if k.startswith("engine/"):
                self.switches.pop(k[7:], None)
            return
        try:
            event = schemas.decode_event(value)
        except schemas.SchemaError:
            return
        if isinstance(event, schemas.EngineControlled):
            self.switches[event.engine] = event
        elif isinstance(event, schemas.EngineStatus):
            self.statuses[(event.scanner, event.engine)] = event

    def disabled_reason(self, engine: str) -> str | None:
        """The reason ``engine`` is switched off, or None when it is on."""
        switch = self.switches.get(engine)
        if switch is None or switch.enabled:
            return None
        return switch.reason or "disabled"


def _producer(settings: KafkaSettings) -> Producer:
    return Producer(producer_config(settings, message_timeout=15.0))


def _flush(p: Producer, timeout: float) -> None:
    if p.flush(timeout) != 0:
        raise KafkaUnavailable("the control topic did not acknowledge in time")


def publish_control(
    settings: KafkaSettings, engine: str, enabled: bool, reason: str = "", actor: str = ""
) -> schemas.EngineControlled:
    """Switch ``engine`` on or off cluster-wide; returns the event written."""
    switch = schemas.EngineControlled(
        engine=engine,
        enabled=enabled,
        reason=reason,
        actor=actor or f"{getpass.getuser()}@{socket.gethostname()}",
        at=utcnow(),
    )
    p = _producer(settings)
    errors: list[str] = []
    p.produce(
        topic_name(settings),
        key=f"engine/{engine}",
        value=schemas.encode_event(switch),
        on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
    )
    _flush(p, 20.0)
    if errors:
        raise KafkaUnavailable(f"control record not written: {errors[0]}")
    return switch


def publish_status(
    producer: Producer, settings: KafkaSettings, scanner: str, status: list[dict[str, Any]]
) -> None:
    """Queue one EngineStatus per engine (fire and forget: status is advisory)."""
    now = utcnow()
    for s in status:
        event = schemas.EngineStatus(
            scanner=scanner,
            engine=s["engine"],
            kind=s["kind"],
            version=s["version"],
            rules_version=s["rules_version"],
            state=s["state"],
            scans=int(s["scans"]),
            errors=int(s["errors"]),
            error_rate=float(s["error_rate"]),
            p50_ms=float(s["p50_ms"]),
            p99_ms=float(s["p99_ms"]),
            last_error=(s["last_error"] or None) and str(s["last_error"])[:500],
            at=now,
        )
        producer.produce(
            topic_name(settings),
            key=f"status/{scanner}/{s['engine']}",
            value=schemas.encode_event(event),
        )
    producer.poll(0)


def _consumer(settings: KafkaSettings) -> Consumer:
    cfg = base_config(settings) | {
        # No group membership: "group.id" is required by librdkafka but never joined/committed.
        "group.id": f"{settings.group_prefix}.control-reader",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
    }
    c = Consumer(cfg)
    c.assign([TopicPartition(topic_name(settings), 0, OFFSET_BEGINNING)])
    return c


def read_control(settings: KafkaSettings, timeout: float = 15.0) -> ControlView:
    """Read the control topic from its beginning to its current end."""
    import time

    view = ControlView()
    c = _consumer(settings)
    try:
        _low, high = c.get_watermark_offsets(
            TopicPartition(topic_name(settings), 0), timeout=timeout
        )
        deadline = time.monotonic() + timeout
        pos = 0
        while pos < high:
            if time.monotonic() > deadline:
                raise KafkaUnavailable("timed out reading the control topic")
            m = c.poll(0.5)
            if m is None:
                continue
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    break
                raise KafkaUnavailable(str(err))
            view.apply(m.value(), m.key())
            pos = position(m)[2] + 1
    finally:
        c.close()
    return view


class ControlWatcher:
    """Follows the control topic in a background thread; the scanner's :class:`Controls`."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._view = ControlView()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.records = 0

    def start(self) -> ControlWatcher:
        """Start following (returns at once)."""
        self._thread = threading.Thread(target=self._run, name="control-watcher", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        c = _consumer(self._settings)
        try:
            while not self._stop.is_set():
                m = c.poll(0.5)
                if m is None or m.error():
                    continue  # EOF and transient errors: keep following
                with self._lock:
                    self._view.apply(m.value(), m.key())
                    self.records += 1
        finally:
            c.close()

    def disabled_reason(self, engine: str) -> str | None:
        """The reason ops switched ``engine`` off, or None."""
        with self._lock:
            return self._view.disabled_reason(engine)

    def stop(self) -> None:
        """Stop following and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
