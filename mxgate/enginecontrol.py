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

Switches are signed when ``kafka.control_key`` is set: an HMAC-SHA-256 over the signing key's
id, the record's key and its value bytes (the encoded Avro event, which is its canonical
content) in the record header ``mxgate-hmac``, the id (``kafka.control_key_id``) in the header
``mxgate-key-id``. The headers carry them so the Avro event needs no new schema version. A
reader with a key applies only a switch whose signature checks with the key its id names: the
current key or one of ``kafka.control_keys_previous`` (rotation: old switches still count until
their key is removed). A switch signed before key ids existed (a signature, no id header; the
MAC over key and value only) is checked against every accepted key. A scanner's own status
records can never switch an engine: an ``EngineControlled`` counts only under its own
``engine/<name>`` key, an ``EngineStatus`` only under a ``status/`` key. Anything else is
ignored, logged and counted (``mxgate_control_rejected``): ``unsigned``, ``unknown_key``,
``bad_signature``, ``wrong_key``. Keys are never logged; ids are.

The consumer uses no group: it assigns the partition from the beginning, so every scanner sees
every record and none commits offsets.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from prometheus_client import Counter

import schemas
from mxgate import catalog
from mxgate.kafka import KafkaUnavailable, base_config, position, producer_config
from mxgate.settings import KafkaSettings
from mxgate.timeutil import utcnow

log = structlog.get_logger("mxgate.enginecontrol")

SIGNATURE_HEADER = "mxgate-hmac"
KEY_ID_HEADER = "mxgate-key-id"

CONTROL_REJECTED = Counter(
    "mxgate_control_rejected",
    "Control-topic records ignored, by why (unsigned, unknown_key, bad_signature, wrong_key).",
    ["why"],
)

__all__ = [
    "KEY_ID_HEADER",
    "SIGNATURE_HEADER",
    "ControlView",
    "ControlWatcher",
    "accepted_keys",
    "publish_control",
    "publish_status",
    "read_control",
    "sign",
    "signed_headers",
]

Headers = dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None


def sign(control_key: str, key: bytes, value: bytes, key_id: str = "") -> str:
    """The hex HMAC-SHA-256 of one control record: the signing key's id and a NUL (when it has
    one; ids never hold a NUL), its key, a NUL, its value bytes. Binding the id means a record
    cannot be passed off as signed by another key, or as one from before key ids."""
    prefix = key_id.encode() + b"\0" if key_id else b""
    return hmac.new(control_key.encode(), prefix + key + b"\0" + value, hashlib.sha256).hexdigest()


def signed_headers(
    control_key: str, key_id: str, key: bytes, value: bytes
) -> list[tuple[str, str | bytes | None]]:
    """The headers of a record signed with ``control_key`` (known by ``key_id``)."""
    mac = sign(control_key, key, value, key_id)
    return [(SIGNATURE_HEADER, mac.encode()), (KEY_ID_HEADER, key_id.encode())]


def _header(headers: Headers, wanted: str) -> str | None:
    pairs = headers.items() if isinstance(headers, dict) else headers or []
    for name, v in pairs:
        if name == wanted and v is not None:
            return v.decode("ascii", "replace") if isinstance(v, bytes) else v
    return None


def accepted_keys(settings: KafkaSettings) -> dict[str, str]:
    """Key id -> key of every key a verifier accepts: the current one first, then the
    previous ones (empty when switches are not signed)."""
    current = settings.control_key.get_secret_value()
    if not current:
        return {}
    previous = settings.control_keys_previous
    return {settings.control_key_id: current} | {
        kid: k.get_secret_value() for kid, k in previous.items()
    }


def topic_name(settings: KafkaSettings) -> str:
    """The control topic's name with the deployment's prefix."""
    return catalog.name(catalog.CONTROL, settings.topic_prefix)


@dataclass
class ControlView:
    """What the control topic says: switches per engine and the latest status reports."""

    switches: dict[str, schemas.EngineControlled] = field(default_factory=dict)
    statuses: dict[tuple[str, str], schemas.EngineStatus] = field(default_factory=dict)
    control_key: str = ""
    """With a key, only signed switches count: signed with it (under ``key_id``) or with one
    of ``previous_keys``."""
    key_id: str = "1"
    previous_keys: dict[str, str] = field(default_factory=dict)
    """Earlier keys by id that still verify (rotation)."""
    rejected: int = 0
    """Records ignored as unsigned, signed with an unknown key, badly signed or under the
    wrong key."""

    @classmethod
    def from_settings(cls, settings: KafkaSettings) -> ControlView:
        """An empty view that verifies with the keys of ``settings``."""
        keys = accepted_keys(settings)
        current = keys.pop(settings.control_key_id, "")
        return cls(control_key=current, key_id=settings.control_key_id, previous_keys=keys)

    def apply(self, value: bytes | None, key: bytes | None, headers: Headers = None) -> None:
        """Fold one record in; undecodable records and tombstones of unknown keys are ignored,
        and so (logged and counted) are switches that are unsigned or badly signed while a key
        is set, or under a key that is not their engine's."""
        k = (key or b"").decode("utf-8", "replace")
        if value is None:  # a tombstone: forget the key
            if k.startswith("engine/") and self._authentic(k, key or b"", b"", headers):
                self.switches.pop(k[7:], None)
            return
        try:
            event = schemas.decode_event(value)
        except schemas.SchemaError:
            return
        if isinstance(event, schemas.EngineControlled):
            if k != f"engine/{event.engine}":
                self._reject("wrong_key", k, event.engine)
            elif self._authentic(k, key or b"", value, headers):
                self.switches[event.engine] = event
        elif isinstance(event, schemas.EngineStatus):
            if k.startswith("status/"):
                self.statuses[(event.scanner, event.engine)] = event
            else:
                self._reject("wrong_key", k, event.engine)

    def _authentic(self, k: str, key: bytes, value: bytes, headers: Headers) -> bool:
        if not self.control_key:
            return True
        got = _header(headers, SIGNATURE_HEADER)
        if got is None:
            self._reject("unsigned", k)
            return False
        keys = {self.key_id: self.control_key} | self.previous_keys
        kid = _header(headers, KEY_ID_HEADER)
        if kid is None:  # signed before key ids: any accepted key may have made it
            if any(hmac.compare_digest(got, sign(c, key, value)) for c in keys.values()):
                return True
            self._reject("bad_signature", k)
            return False
        secret = keys.get(kid)
        if secret is None:
            self._reject("unknown_key", k, key_id=kid)
            return False
        if not hmac.compare_digest(got, sign(secret, key, value, kid)):
            self._reject("bad_signature", k, key_id=kid)
            return False
        return True

    def _reject(self, why: str, k: str, engine: str = "", key_id: str = "") -> None:
        self.rejected += 1
        CONTROL_REJECTED.labels(why).inc()
        log.warning(
            "control record ignored", why=why, key=k, engine=engine or k[7:], key_id=key_id[:64]
        )

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
    key = f"engine/{engine}".encode()
    value = schemas.encode_event(switch)
    control_key = settings.control_key.get_secret_value()
    headers = []
    if control_key:
        headers = signed_headers(control_key, settings.control_key_id, key, value)
    p = _producer(settings)
    errors: list[str] = []
    p.produce(
        topic_name(settings),
        key=key,
        value=value,
        headers=headers,
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

    view = ControlView.from_settings(settings)
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
            view.apply(m.value(), m.key(), m.headers())
            pos = position(m)[2] + 1
    finally:
        c.close()
    return view


class ControlWatcher:
    """Follows the control topic in a background thread; the scanner's :class:`Controls`."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._view = ControlView.from_settings(settings)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.records = 0

    def start(self) -> ControlWatcher:
        """Start following (returns at once)."""
        if not self._view.control_key:
            log.warning(
                "no kafka.control_key set: engine switches are not authenticated; anyone who "
                "can produce to the control topic can switch engines off"
            )
        else:  # the ids only: keys are never logged
            ids = [self._view.key_id, *self._view.previous_keys]
            log.info("engine switches are verified", key_ids=ids)
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
                    self._view.apply(m.value(), m.key(), m.headers())
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
