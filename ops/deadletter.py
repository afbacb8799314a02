"""The dead-letter index, folded from ``mxgate.deadletter.v1``, and retrying a dead letter.

``DeadLettered`` opens an entry (its id: ``<topic>:<partition>:<offset>`` of the original
record); ``DeadLetterRetried`` marks it retried. `mxgate deadletter` (cli.deadletter) lists,
shows and retries through this index. A retry puts the original key and value back on the
source topic and records who did it, in one Kafka transaction: both or neither.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Producer

import schemas
from mxgate import catalog
from mxgate.kafka import producer_config, read_events
from mxgate.settings import Settings
from mxgate.timeutil import utcnow
from ops.plain import plain

__all__ = ["Letter", "fold", "index", "matches", "retry", "topic"]


@dataclass
class Letter:
    """One dead letter: the record set aside, and what happened to it since."""

    letter: schemas.DeadLettered
    state: str = "dead"  # dead | retried
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        """``<topic>:<partition>:<offset>`` of the original record."""
        return self.letter.id

    def json(self, value: bool = False) -> dict[str, Any]:
        """JSON-ready form; with ``value``, the original bytes (base64) and what they decode to."""
        d = self.letter
        out: dict[str, Any] = {
            "id": d.id, "topic": d.topic, "partition": d.partition, "offset": d.offset,
            "key": d.key, "cause": d.cause, "error": d.error, "attempts": d.attempts,
            "group": d.group, "instance": d.instance,
            "dead_lettered_at": d.dead_lettered_at.isoformat(), "size": len(d.value),
            "state": self.state, "history": self.history,
        }  # fmt: skip
        if value:
            out["value_base64"] = base64.b64encode(d.value).decode()
            original = d.original()
            out["event"] = (
                None if original is None else {"type": type(original).__name__} | plain(original)
            )
        return out


def topic(settings: Settings) -> str:
    """The dead-letter topic's full name."""
    return catalog.name(catalog.DEADLETTER, settings.kafka.topic_prefix)


def fold(events: Iterable[schemas.Event]) -> dict[str, Letter]:
    """The dead-letter index (by id, in the order they were set aside)."""
    out: dict[str, Letter] = {}
    for e in events:
        if isinstance(e, schemas.DeadLettered):
            out[e.id] = Letter(e)
        elif isinstance(e, schemas.DeadLetterRetried) and (entry := out.get(e.id)):
            entry.state = "retried"
            entry.history.append({"event": "retried", "at": e.retried_at.isoformat(),
                                  "by": e.retried_by, "reason": e.reason})  # fmt: skip
    return out


def index(settings: Settings) -> dict[str, Letter]:
    """Every dead letter still on the topic (raises ``IncompleteRead`` rather than guess)."""
    return fold(read_events(settings, topics=[topic(settings)]))


def matches(letter: Letter, settings: Settings, source: str | None, state: str) -> bool:
    """Whether ``letter`` passes the list filters: its source topic (full name, or the catalog
    name without the deployment's prefix) and state (dead | retried | all)."""
    if state != "all" and letter.state != state:
        return False
    if source is None:
        return True
    return letter.letter.topic in {source, settings.kafka.topic_prefix + source}


def retry(settings: Settings, letter: Letter, by: str, reason: str) -> schemas.DeadLetterRetried:
    """Put the dead letter's key and value back on its source topic and record the retry, in
    one transaction. The consumer sees it as new input (a new offset)."""
    d = letter.letter
    done = schemas.DeadLetterRetried(
        topic=d.topic, partition=d.partition, offset=d.offset, key=d.key, retried_by=by,
        reason=reason, retried_at=utcnow(),
    )  # fmt: skip
    p = Producer(
        producer_config(settings.kafka, transactional_id=f"mxgate.deadletter-cli.{uuid.uuid4()}")
    )
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(d.topic, key=d.key.encode(), value=d.value)
    p.produce(topic(settings), key=d.key.encode(), value=schemas.encode_event(done))
    p.commit_transaction(30)
    return done
