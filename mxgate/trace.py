"""`mxgate trace`: one message's whole history, read back from the topics (rule 6)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, TopicPartition

import schemas
from mxgate import catalog
from mxgate.kafka import base_config
from mxgate.settings import Settings


def _topics(settings: Settings) -> list[str]:
    tiers = len(settings.deliverer.retry_schedule)
    return [catalog.name(t, settings.kafka.topic_prefix) for t in catalog.all_topics(tiers)]


def read_events(settings: Settings, keys: set[str] | None = None) -> Iterator[tuple[str, dict]]:
    """Every committed event on mxgate's topics (optionally only those keyed by ``keys``),
    read from the beginning up to the end as it was when the call started."""
    consumer = Consumer(
        base_config(settings.kafka)
        | {
            "group.id": "mxgate.trace",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    try:
        meta = consumer.list_topics(timeout=10)
        ends: dict[tuple[str, int], int] = {}
        assign = []
        for topic in _topics(settings):
            if topic not in meta.topics:
                continue
            for p in meta.topics[topic].partitions:
                lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
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
                k = (m.topic(), m.partition())
                if m.error():
                    pending.discard(k)  # partition EOF
                    continue
                if m.offset() >= ends[k] - 1:
                    pending.discard(k)
                if m.offset() >= ends[k]:
                    continue
                if keys is None or (m.key() or b"").decode() in keys:
                    try:
                        yield schemas.decode(m.value() or b"")
                    except schemas.SchemaError:
                        continue
    finally:
        consumer.close()


def _plain(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def history(settings: Settings, message_id: str) -> dict[str, Any]:
    """The history of one message as a JSON-ready dict.

    ``outcome`` is one of: delivered, quarantined, discarded, bounced, expired, deferred,
    scanned (decided, not yet carried out), received (not yet decided), unknown.
    ``recipients`` maps each recipient to its latest delivery status.
    """
    received = None
    scanned = None
    quarantine = None
    deliveries: list[dict] = []
    for name, rec in read_events(settings, {message_id}):
        if rec.get("message_id") != message_id:
            continue
        if name == schemas.MESSAGE_RECEIVED:
            received = rec
        elif name == schemas.MESSAGE_SCANNED:
            scanned = rec
        elif name == schemas.MESSAGE_QUARANTINED:
            quarantine = rec
        elif name == schemas.DELIVERY_ATTEMPTED:
            deliveries.append(rec)
    deliveries.sort(key=lambda d: (d["attempt"], d["attempted_at"]))
    recipients: dict[str, str] = {}
    for d in deliveries:
        for r in d["recipients"]:
            recipients[r["recipient"]] = r["status"]
    if quarantine is not None:
        outcome = "quarantined" if quarantine["action"] == "quarantine" else "discarded"
    elif recipients:
        states = set(recipients.values())
        order = ("deferred", "bounced", "expired", "delivered")
        outcome = next(s for s in order if s in states)
    elif scanned is not None:
        outcome = "scanned"
    elif received is not None:
        outcome = "received"
    else:
        outcome = "unknown"
    return _plain(
        {
            "message_id": message_id,
            "outcome": outcome,
            "recipients": recipients,
            "received": received,
            "scanned": scanned,
            "deliveries": deliveries,
            "quarantine": quarantine,
        }
    )


def render(h: dict[str, Any]) -> str:
    """A human-readable history."""
    lines = [f"message {h['message_id']}: {h['outcome']}"]
    r = h["received"]
    if r:
        lines.append(
            f"  {r['received_at']}  received  tenant={r['tenant']} from=<{r['mail_from']}> "
            f"to={','.join(r['rcpt_to'])} client={r['client_ip']} helo={r['helo']} "
            f"size={r['size']} sha256={r['sha256'][:16]}… key={r['object_key']}"
        )
    s = h["scanned"]
    if s:
        for v in s["verdicts"]:
            extra = f" error={v['error']}" if v["error"] else ""
            lines.append(
                f"  {s['scanned_at']}  verdict   {v['engine']} {v['engine_version']} "
                f"rules={v['rules_version']} {v['outcome']} score={v['score']:g} "
                f"symbols={','.join(v['symbols']) or '-'} {v['duration_ms']:.1f}ms{extra}"
            )
        lines.append(
            f"  {s['scanned_at']}  action    {s['action']} reasons={','.join(s['reasons']) or '-'} "
            f"policy={s['policy_version']} score={s['spam_score']:g}"
        )
    for d in h["deliveries"]:
        for o in d["recipients"]:
            lines.append(
                f"  {d['attempted_at']}  attempt {d['attempt']} to {d['remote_host']}: "
                f"{o['recipient']} {o['status']} {o['reply_code']} {o['reply']}"
            )
    q = h["quarantine"]
    if q:
        lines.append(f"  {q['quarantined_at']}  {q['action']}  reasons={','.join(q['reasons'])}")
    return "\n".join(lines)
