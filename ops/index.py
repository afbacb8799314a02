"""The message index: find messages by mxgate ID, Message-ID header, sender, recipient and time.

Kafka keys events by message ID only, so every other way in needs an index. This one is a
plain consumer folding ``mxgate.received.v1`` and ``mxgate.scanned.v1`` into a rocksdict
(RocksDB) database under ``MXGATE_OPS__STATE_PATH/index``, with the consumed offsets stored in
the same database and written in the same batch as the entries they produced: after a crash it
resumes exactly where its last batch ended, with no duplicate and no gap.

Why a catch-up consumer and not a faust-streaming table: the index is read by short-lived CLI
commands (``mxgate trace --sender …``), and RocksDB allows one process per database. A faust
worker would hold the database for itself and need a query service in front; here the command
that asks catches the index up to the topics' current end (incrementally, from its stored
offsets) and answers from it, with nothing left running. The scoreboard, which must keep
counting all the time, is the faust app (:mod:`ops.scoreboard`).

Layout (every key a str, values JSON):

- ``m/<id>``: a summary of the message (tenant, envelope, times, header Message-ID, action);
- ``h/<Message-ID header>/<id>``, ``s/<sender>/<µs>/<id>``, ``r/<recipient>/<µs>/<id>``,
  ``t/<µs>/<id>``: secondary keys (addresses lower-cased; ``<µs>`` = received_at, 17 digits,
  so a prefix scan runs in time order);
- ``o/<topic>/<partition>``: the next offset to read.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from rocksdict import Rdict, WriteBatch

import schemas
from mxgate import catalog
from mxgate.kafka import base_config, position
from mxgate.settings import Settings

__all__ = ["MessageIndex", "Query"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _micros(t: dt.datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return (t - _EPOCH) // dt.timedelta(microseconds=1)


def _ts(t: dt.datetime) -> str:
    return f"{_micros(t):017d}"


@dataclass(frozen=True, slots=True)
class Query:
    """What to look for; every given criterion must hold (AND)."""

    message_id: str | None = None
    header_message_id: str | None = None
    sender: str | None = None
    recipient: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    tenant: str | None = None


class MessageIndex:
    """The rocksdict index of one deployment (topic prefix); use as a context manager."""

    def __init__(self, settings: Settings, path: Path | None = None) -> None:
        self.settings = settings
        base = path or settings.ops.state_path / "index"
        # One database per topic prefix: test pipelines and deployments never mix.
        self.path = base / (settings.kafka.topic_prefix.strip(".") or "default")
        self.path.mkdir(parents=True, exist_ok=True)
        self.db = Rdict(str(self.path))

    def __enter__(self) -> MessageIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush and release the database (RocksDB allows one process at a time)."""
        self.db.close()

    # -- building ---------------------------------------------------------------------------

    def _topics(self) -> list[str]:
        p = self.settings.kafka.topic_prefix
        return [catalog.name(catalog.RECEIVED, p), catalog.name(catalog.SCANNED, p)]

    def refresh(self, quiet: float = 5.0) -> int:
        """Catch up with the topics' current end; returns how many events were indexed."""
        consumer = Consumer(
            base_config(self.settings.kafka)
            | {
                "group.id": "ops.index",  # never committed: offsets live in the index
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        done = 0
        try:
            meta = consumer.list_topics(timeout=10)
            ends: dict[tuple[str, int], int] = {}
            assign = []
            for topic in self._topics():
                if topic not in meta.topics:
                    continue
                for p in meta.topics[topic].partitions:
                    lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                    start = max(lo, int(self.db.get(f"o/{topic}/{p}") or "0"))
                    if hi > start:
                        ends[(topic, p)] = hi
                        assign.append(TopicPartition(topic, p, start))
            if not assign:
                return 0
            consumer.assign(assign)
            pending = set(ends)
            while pending:
                batch = consumer.consume(500, quiet)
                if not batch:
                    break  # the rest up to the end is transaction markers
                wb = WriteBatch()
                summaries: dict[str, dict[str, Any]] = {}
                for m in batch:
                    if m.error():
                        continue
                    topic, part, offset = position(m)
                    k = (topic, part)
                    if offset >= ends[k] - 1:
                        pending.discard(k)
                    try:
                        event = schemas.decode_event(m.value() or b"")
                    except schemas.SchemaError:
                        continue
                    else:
                        done += self._add(wb, summaries, event)
                    finally:
                        wb.put(f"o/{topic}/{part}", str(offset + 1))
                for mid, summary in summaries.items():
                    wb.put(f"m/{mid}", json.dumps(summary))
                self.db.write(wb)  # entries and offsets together: resume exactly here
        finally:
            consumer.close()
        return done

    def _add(
        self, wb: WriteBatch, summaries: dict[str, dict[str, Any]], event: schemas.Event
    ) -> int:
        """Fold one event into its message's summary (JSON, as stored); 1 if it counted."""
        if not isinstance(event, schemas.MessageReceived | schemas.MessageScanned):
            return 0
        mid = event.message_id
        if not mid:
            return 0
        cur = summaries.get(mid) or self.get(mid) or {"message_id": mid}
        if isinstance(event, schemas.MessageReceived):
            ts = _ts(event.received_at)
            cur.update(
                tenant=event.tenant,
                received_at=event.received_at.isoformat(),
                mail_from=event.mail_from,
                rcpt_to=list(event.rcpt_to),
                header_message_id=event.header_message_id,
                object_key=event.object_key,
                size=event.size,
            )
            if event.header_message_id:
                wb.put(f"h/{event.header_message_id}/{mid}", ts)
            wb.put(f"s/{event.mail_from.lower()}/{ts}/{mid}", "")
            for r in event.rcpt_to:
                wb.put(f"r/{r.lower()}/{ts}/{mid}", "")
            wb.put(f"t/{ts}/{mid}", "")
        else:
            cur.update(action=event.action, reasons=list(event.reasons))
        summaries[mid] = cur
        return 1

    # -- querying ---------------------------------------------------------------------------

    def get(self, message_id: str) -> dict[str, Any] | None:
        """The summary of one message, or None."""
        v = self.db.get(f"m/{message_id}")
        return json.loads(v) if v is not None else None

    def _scan(self, prefix: str) -> Iterator[str]:
        it = self.db.iter()
        it.seek(prefix)
        while it.valid():
            key = it.key()
            if not key.startswith(prefix):
                break
            yield key[len(prefix) :]
            it.next()

    def _ids_in(self, prefix: str, q: Query) -> list[str]:
        lo = _ts(q.since) if q.since else ""
        hi = _ts(q.until) if q.until else "~"
        out = []
        for rest in self._scan(prefix):
            ts, _, mid = rest.partition("/")
            if lo <= ts <= hi:
                out.append(mid)
        return out

    def find(self, q: Query) -> list[dict[str, Any]]:
        """Summaries of the messages matching every criterion of ``q``, oldest first."""
        sets: list[list[str]] = []
        if q.message_id:
            sets.append([q.message_id])
        if q.header_message_id:
            sets.append(list(self._scan(f"h/{q.header_message_id}/")))
        if q.sender is not None:
            sets.append(self._ids_in(f"s/{q.sender.lower()}/", q))
        if q.recipient:
            sets.append(self._ids_in(f"r/{q.recipient.lower()}/", q))
        if not sets:
            sets.append([rest.partition("/")[2] for rest in self._time_range(q)])
        ids = set(sets[0]).intersection(*sets[1:])
        found = [s for m in ids if (s := self.get(m)) is not None and _matches(s, q)]
        return sorted(found, key=lambda s: (s.get("received_at", ""), s["message_id"]))

    def _time_range(self, q: Query) -> Iterator[str]:
        hi = _ts(q.until) if q.until else "~"
        it = self.db.iter()
        it.seek(f"t/{_ts(q.since)}" if q.since else "t/")
        while it.valid():
            key = it.key()
            if not key.startswith("t/") or key[2:19] > hi:
                break
            yield key[2:]
            it.next()


def _matches(s: dict[str, Any], q: Query) -> bool:
    if "received_at" not in s:
        return False  # decided but its MessageReceived expired from the topic
    at = dt.datetime.fromisoformat(s["received_at"])
    if q.since and at < q.since:
        return False
    if q.until and at > q.until:
        return False
    return not (q.tenant and s.get("tenant") != q.tenant)
