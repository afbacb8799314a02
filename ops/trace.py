"""`mxgate trace`: one message's whole history, read back from the topics (rule 6)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

import schemas
from mxgate.kafka import read_events
from mxgate.settings import Settings


def _plain(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _when(rec: dict[str, Any]) -> dt.datetime | None:
    """The event's own time: its first ``*_at`` timestamp field (every schema has one)."""
    for k, v in rec.items():
        if k.endswith("_at") and isinstance(v, dt.datetime):
            return v
    return None


def _is_control(name: str, rec: dict[str, Any]) -> bool:
    # Control events (engine switched off, rules reloaded …) are not about one message.
    return "message_id" not in rec and name != schemas.DELIVERY_RETRY


def history(settings: Settings, message_id: str) -> dict[str, Any]:
    """The history of one message, read from every topic: see :func:`fold`."""
    return fold(read_events(settings), message_id)


def fold(events: Iterable[tuple[str, dict[str, Any]]], message_id: str) -> dict[str, Any]:
    """The history of one message, from ``events`` ((full name, record) pairs), as a
    JSON-ready dict.

    ``outcome`` is one of: delivered, quarantined, discarded, released, deleted, bounced,
    expired, deferred, scanned (decided, not yet carried out), received (not yet decided),
    unknown. ``recipients`` maps each recipient to its latest delivery status.
    ``events`` lists every event about the message, of every kind (those added later too,
    found through ``schemas.EVENTS``), plus the control events (records without a message ID,
    e.g. an engine switched off) from its arrival to its last event, in time order; each is
    the record with ``event`` (short name) added.
    """
    received = None
    scanned = None
    quarantine = None
    released: list[dict] = []
    deleted = None
    deliveries: list[dict] = []
    mine: list[tuple[str, dict]] = []
    control: list[tuple[str, dict]] = []
    for name, rec in events:
        if _is_control(name, rec):
            control.append((name, rec))
            continue
        if rec.get("message_id") != message_id:
            continue
        if name == schemas.DELIVERY_RETRY:
            continue  # internal work items; the attempts they lead to are the facts
        mine.append((name, rec))
        if name == schemas.MESSAGE_RECEIVED:
            received = rec
        elif name == schemas.MESSAGE_SCANNED:
            scanned = rec
        elif name == schemas.MESSAGE_QUARANTINED:
            quarantine = rec
        elif name == schemas.QUARANTINE_RELEASED:
            released.append(rec)
        elif name == schemas.QUARANTINE_DELETED:
            deleted = rec
        elif name == schemas.DELIVERY_ATTEMPTED:
            deliveries.append(rec)
    deliveries.sort(key=lambda d: (d["attempt"], d["attempted_at"]))
    recipients: dict[str, str] = {}
    for d in deliveries:
        for r in d["recipients"]:
            recipients[r["recipient"]] = r["status"]
    delivery_outcome = None
    if recipients:
        states = set(recipients.values())
        order = ("deferred", "bounced", "expired", "delivered")
        delivery_outcome = next(s for s in order if s in states)
    if deleted is not None:
        outcome = "deleted"
    elif released:
        outcome = delivery_outcome or "released"
    elif quarantine is not None:
        outcome = "quarantined" if quarantine["action"] == "quarantine" else "discarded"
    elif delivery_outcome:
        outcome = delivery_outcome
    elif scanned is not None:
        outcome = "scanned"
    elif received is not None:
        outcome = "received"
    else:
        outcome = "unknown"
    times = [t for _, r in mine if (t := _when(r)) is not None]
    if times:
        lo, hi = min(times), max(times)
        mine += [(n, r) for n, r in control if (t := _when(r)) is not None and lo <= t <= hi]
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    mine.sort(key=lambda nr: _when(nr[1]) or far)
    return _plain(
        {
            "message_id": message_id,
            "outcome": outcome,
            "recipients": recipients,
            "received": received,
            "scanned": scanned,
            "deliveries": deliveries,
            "quarantine": quarantine,
            "releases": released,
            "deletion": deleted,
            "events": [{"event": _short(n), **r} for n, r in mine],
        }
    )


def _line(e: dict[str, Any]) -> list[str]:
    """One event as text lines; kinds without a dedicated form are listed field by field."""
    kind = e["event"]
    at = next((v for k, v in e.items() if k.endswith("_at") and isinstance(v, str)), "?")
    if kind == "MessageReceived":
        return [
            f"  {at}  received  tenant={e['tenant']} from=<{e['mail_from']}> "
            f"to={','.join(e['rcpt_to'])} client={e['client_ip']} helo={e['helo']} "
            f"size={e['size']} sha256={e['sha256'][:16]}… key={e['object_key']}"
            + (f" message-id={e['header_message_id']}" if e.get("header_message_id") else "")
        ]
    if kind == "MessageScanned":
        out = []
        for v in e["verdicts"]:
            extra = f" error={v['error']}" if v["error"] else ""
            shadow = " (shadow)" if v.get("shadow") else ""
            out.append(
                f"  {at}  verdict   {v['engine']}{shadow} {v['engine_version']} "
                f"rules={v['rules_version']} {v['outcome']} score={v['score']:g} "
                f"symbols={','.join(v['symbols']) or '-'} {v['duration_ms']:.1f}ms{extra}"
            )
        out.append(
            f"  {at}  action    {e['action']} reasons={','.join(e['reasons']) or '-'} "
            f"policy={e['policy_version']} score={e['spam_score']:g} by={e['scanner']}"
        )
        return out
    if kind == "DeliveryAttempted":
        return [
            f"  {at}  attempt {e['attempt']} to {e['remote_host']}: "
            f"{o['recipient']} {o['status']} {o['reply_code']} {o['reply']}"
            for o in e["recipients"]
        ]
    if kind == "MessageQuarantined":
        return [f"  {at}  {e['action']}  reasons={','.join(e['reasons'])}"]
    if kind == "QuarantineReleased":
        return [
            f"  {at}  released by {e['released_by']} to {','.join(e['rcpt_to'])}: {e['reason']}"
        ]
    if kind == "QuarantineDeleted":
        return [f"  {at}  deleted by {e['deleted_by']}: {e['reason']}"]
    skip = {"event", "message_id", "tenant"}
    fields = " ".join(
        f"{k}={json.dumps(v) if isinstance(v, list | dict) else v}"
        for k, v in e.items()
        if k not in skip and not (k.endswith("_at") and v == at)
    )
    return [f"  {at}  {kind}  {fields}"]


def render(h: dict[str, Any]) -> str:
    """A human-readable history: one line per fact, in time order."""
    lines = [f"message {h['message_id']}: {h['outcome']}"]
    for e in h.get("events", []):
        lines.extend(_line(e))
    return "\n".join(lines)
