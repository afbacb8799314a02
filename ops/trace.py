"""`mxgate trace`: one message's whole history, read back from the topics."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

import schemas
from mxgate.kafka import read_events
from mxgate.settings import Settings
from ops.plain import plain


def _when(event: schemas.Event) -> dt.datetime | None:
    """The event's own time: its first ``*_at`` (or ``at``) timestamp field; every schema has
    one."""
    for f in dataclasses.fields(event):
        v = getattr(event, f.name)
        if _is_time(f.name) and isinstance(v, dt.datetime):
            return v
    return None


def _is_time(field_name: str) -> bool:
    return field_name == "at" or field_name.endswith("_at")


def _message_id(event: schemas.Event) -> str | None:
    """The message an event is about; None for control events (engine switched off, a hash
    listed …), which are about no one message."""
    if isinstance(event, schemas.DeadLettered | schemas.DeadLetterRetried):
        return event.key  # set aside from a message topic: keyed by its message ID
    mid = getattr(event, "message_id", None)
    return mid if isinstance(mid, str) else None


def history(settings: Settings, message_id: str) -> dict[str, Any]:
    """The history of one message, read from every topic: see :func:`fold`."""
    return fold(read_events(settings), message_id)


def fold(events: Iterable[schemas.Event], message_id: str) -> dict[str, Any]:
    """The history of one message, from ``events``, as a JSON-ready dict.

    ``outcome`` is one of: delivered, quarantined, discarded, released, deleted, bounced,
    expired, deferred, scanned (decided, not yet carried out), received (not yet decided),
    dead-lettered (set aside on mxgate.deadletter.v1 and not retried since), unknown.
    ``recipients`` maps each recipient to its latest delivery status.
    ``events`` lists every event about the message, of every kind (those added later too:
    kinds without a place of their own are listed as they are), plus the control events
    (events without a message ID, e.g. an engine switched off) from its arrival to its last
    event, in time order; each is the event's fields with ``event`` (short name) added.
    """
    received: schemas.MessageReceived | None = None
    scanned: schemas.MessageScanned | None = None
    quarantine: schemas.MessageQuarantined | None = None
    released: list[schemas.QuarantineReleased] = []
    deleted: schemas.QuarantineDeleted | None = None
    deliveries: list[schemas.DeliveryAttempted] = []
    dead: schemas.DeadLettered | None = None  # set aside and not retried since
    mine: list[schemas.Event] = []
    control: list[schemas.Event] = []
    for ev in events:
        mid = _message_id(ev)
        if mid is None:
            # A status report of a healthy engine is a heartbeat, not part of any history.
            if not (isinstance(ev, schemas.EngineStatus) and ev.state == "enabled"):
                control.append(ev)
            continue
        if mid != message_id or isinstance(ev, schemas.DeliveryRetry):
            continue  # work items are internal; the attempts they lead to are the facts
        mine.append(ev)
        if isinstance(ev, schemas.MessageReceived):
            received = ev
        elif isinstance(ev, schemas.MessageScanned):
            scanned = ev
        elif isinstance(ev, schemas.MessageQuarantined):
            quarantine = ev
        elif isinstance(ev, schemas.QuarantineReleased):
            released.append(ev)
        elif isinstance(ev, schemas.QuarantineDeleted):
            deleted = ev
        elif isinstance(ev, schemas.DeliveryAttempted):
            deliveries.append(ev)
        elif isinstance(ev, schemas.DeadLettered):
            dead = ev
        elif isinstance(ev, schemas.DeadLetterRetried):
            dead = None
    deliveries.sort(key=lambda d: (d.attempt, d.attempted_at))
    recipients: dict[str, str] = {}
    for d in deliveries:
        for r in d.recipients:
            recipients[r.recipient] = r.status
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
        outcome = "quarantined" if quarantine.action == "quarantine" else "discarded"
    elif dead is not None:
        outcome = "dead-lettered"
    elif delivery_outcome:
        outcome = delivery_outcome
    elif scanned is not None:
        outcome = "scanned"
    elif received is not None:
        outcome = "received"
    else:
        outcome = "unknown"
    times = [t for e in mine if (t := _when(e)) is not None]
    if times:
        lo, hi = min(times), max(times)
        mine += [e for e in control if (t := _when(e)) is not None and lo <= t <= hi]
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    mine.sort(key=lambda e: _when(e) or far)
    return {
        "message_id": message_id,
        "outcome": outcome,
        "recipients": recipients,
        "received": plain(received),
        "scanned": plain(scanned),
        "deliveries": plain(deliveries),
        "quarantine": plain(quarantine),
        "releases": plain(released),
        "deletion": plain(deleted),
        "events": [{"event": type(e).__name__, **plain(e)} for e in mine],
    }


def _line(e: dict[str, Any]) -> list[str]:
    """One event of a history (its JSON-ready form) as text lines; kinds without a dedicated
    form are listed field by field."""
    kind = e["event"]
    at = next((v for k, v in e.items() if _is_time(k) and isinstance(v, str)), "?")
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
            shadow = " (shadow)" if v["shadow"] else ""
            detail = " ".join(f"{k}={x}" for k, x in sorted(v["detail"].items()))
            out.append(
                f"  {at}  verdict   {v['engine']}{shadow} {v['engine_version']} "
                f"rules={v['rules_version']} {v['outcome']} score={v['score']:g} "
                f"symbols={','.join(v['symbols']) or '-'} {v['duration_ms']:.1f}ms{extra}"
                + (f" detail: {detail}" if detail else "")
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
        if k not in skip and not (_is_time(k) and v == at)
    )
    return [f"  {at}  {kind}  {fields}"]


def render(h: dict[str, Any]) -> str:
    """A human-readable history: one line per fact, in time order."""
    lines = [f"message {h['message_id']}: {h['outcome']}"]
    for e in h.get("events", []):
        lines.extend(_line(e))
    return "\n".join(lines)
