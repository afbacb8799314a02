"""Replay and retro-scan: decide stored messages again, with other engines or another policy.

Both read the recorded log back (``MessageReceived`` and ``MessageScanned``), fetch each body
from the object store (written once, so it is the very message that was decided) and run it
through :class:`scanner.service.Scanner`, the production code path, with the engines and
policy asked for. The new decisions go to the run's own topic ``mxgate.replay.<run>``, which no
role consumes: a replay delivers nothing unless asked to (``redeliver``), and then records it
(``ReplayRedelivered`` on ``mxgate.ops.v1``, the delivery work on ``mxgate.delivery.submit.v1``).

:func:`decide` is pure, and a replay with a message's recorded engines (its
``active_engines``) and its tenant's current policy reproduces the recorded action; the diff
shows only what the other engines or policy change.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from pydantic import ValidationError

import schemas
from mxgate import catalog
from mxgate.blobstore import open_store
from mxgate.errors import ConfigError
from mxgate.kafka import create_topics, producer_config, read_events
from mxgate.settings import Settings
from mxgate.tenants import Policy, Tenants
from mxgate.timeutil import utcnow
from scanner.engines.common import Engine
from scanner.engines.registry import build_engines
from scanner.service import Scanner

__all__ = ["Change", "ReplayResult", "load_policy", "replay", "retroscan"]

DELIVERABLE = frozenset({"deliver", "tag"})
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Change:
    """One message whose action the replay changes."""

    message_id: str
    tenant: str
    old_action: str
    new_action: str
    old_reasons: tuple[str, ...]
    new_reasons: tuple[str, ...]

    @classmethod
    def between(cls, old: schemas.MessageScanned, new: schemas.MessageScanned) -> Change:
        """The change from the recorded decision ``old`` to the replayed ``new``."""
        return cls(new.message_id, new.tenant, old.action, new.action, old.reasons, new.reasons)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``changed`` entries of ``mxgate replay --json``)."""
        return {
            "message_id": self.message_id,
            "tenant": self.tenant,
            "old_action": self.old_action,
            "new_action": self.new_action,
            "old_reasons": list(self.old_reasons),
            "new_reasons": list(self.new_reasons),
        }


@dataclass(slots=True)
class ReplayResult:
    """What a replay or retro-scan run did."""

    run: str
    topic: str
    replayed: list[str] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # received, but no recorded decision
    redelivered: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "run": self.run,
            "topic": self.topic,
            "replayed": self.replayed,
            "changed": [c.as_dict() for c in self.changed],
            "undecided": self.missing,
            "redelivered": self.redelivered,
            "alerts": self.alerts,
        }


def load_policy(path: Path) -> Policy:
    """A policy from a TOML file: the fields of a tenant's ``[policy]`` table at top level
    (or under ``[policy]``)."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(str(path), "policy", str(e)) from None
    try:
        return Policy.model_validate(data.get("policy", data))
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(str(path), ".".join(map(str, err["loc"])), err["msg"]) from None


@dataclass(frozen=True, slots=True)
class _Recorded:
    received: schemas.MessageReceived
    scanned: schemas.MessageScanned | None
    released: bool


def _recorded(settings: Settings) -> dict[str, _Recorded]:
    """Every received message still on the topics, with its decision and quarantine fate."""
    p = settings.kafka.topic_prefix
    topics = [catalog.name(t, p) for t in (catalog.RECEIVED, catalog.SCANNED, catalog.QUARANTINE)]
    received: dict[str, schemas.MessageReceived] = {}
    scanned: dict[str, schemas.MessageScanned] = {}
    settled: set[str] = set()  # released or deleted from quarantine already
    for event in read_events(settings, topics=topics):
        if isinstance(event, schemas.MessageReceived):
            received[event.message_id] = event
        elif isinstance(event, schemas.MessageScanned):
            scanned[event.message_id] = event
        elif isinstance(event, schemas.QuarantineReleased | schemas.QuarantineDeleted):
            settled.add(event.message_id)
    return {m: _Recorded(r, scanned.get(m), m in settled) for m, r in received.items()}


class _Run:
    """Engines, store and producer of one run; scans with the production Scanner."""

    def __init__(self, settings: Settings, run: str, policy: Policy | None) -> None:
        self.settings = settings
        self.run = run
        self.policy = policy
        self.tenants = Tenants.load(settings.tenants_file)
        self.store = open_store(settings.store)
        self.engines: dict[tuple[str, ...], list[Engine]] = {}
        self.topic = catalog.replay_topic(run)
        create_topics(settings.kafka, [self.topic])
        self.topic_name = catalog.name(self.topic, settings.kafka.topic_prefix)
        self.producer = Producer(producer_config(settings.kafka))

    def scanner(self, names: Sequence[str]) -> Scanner:
        key = tuple(names)
        if key not in self.engines:
            cfg = self.settings.scanner.model_copy(update={"engines": key})
            self.engines[key] = build_engines(cfg)
        return Scanner(
            self.settings,
            self.tenants,
            self.store,
            self.engines[key],
            name=f"replay:{self.run}",
            policy=self.policy,
        )

    def emit(
        self,
        topic: str,
        event: schemas.MessageScanned
        | schemas.DeliveryRetry
        | schemas.ReplayRedelivered
        | schemas.RetroscanAlert,
    ) -> None:
        """Produce ``event`` keyed by its message ID (acknowledged by :meth:`close`)."""
        value = schemas.encode_event(event)
        self.producer.produce(topic, key=event.message_id.encode(), value=value)
        self.producer.poll(0)

    async def close(self) -> None:
        left = await asyncio.to_thread(self.producer.flush, 30)
        for engines in self.engines.values():
            for e in engines:
                await e.aclose()
        await self.store.aclose()
        if left:
            raise RuntimeError(f"{left} replay record(s) not acknowledged by Kafka")


async def _rescan(
    run: _Run,
    items: list[_Recorded],
    engines: Sequence[str] | None,
    progress: Progress | None,
) -> list[tuple[_Recorded, schemas.MessageScanned]]:
    out = []
    for i, item in enumerate(items):
        names = engines
        if names is None:
            # The engines that decided it at the time (its recorded active_engines).
            recorded = item.scanned.active_engines if item.scanned else ()
            names = recorded or run.settings.scanner.engines
        new = await run.scanner(names).scan(item.received)
        run.emit(run.topic_name, new)
        out.append((item, new))
        if progress:
            progress(i + 1, len(items))
    return out


def replay(
    settings: Settings,
    start: dt.datetime,
    end: dt.datetime,
    *,
    run: str,
    tenant: str | None = None,
    engines: Sequence[str] | None = None,
    policy: Policy | None = None,
    redeliver: bool = False,
    progress: Progress | None = None,
    by: str = "",
) -> ReplayResult:
    """Re-decide the messages received in ``[start, end]`` and diff against the record.

    ``engines``: engine names (default: each message's recorded engines); ``policy``: one
    policy for every tenant (default: each tenant's own). With ``redeliver``, a message held
    back at the time (quarantine, discard) that the new decision would deliver, and that was
    neither released nor deleted since, is sent to delivery and the fact recorded, with ``by``
    (the operator's identity; default: the login name).
    """
    return asyncio.run(
        _replay(settings, start, end, run, tenant, engines, policy, redeliver, progress, by)
    )


async def _replay(
    settings: Settings,
    start: dt.datetime,
    end: dt.datetime,
    run_name: str,
    tenant: str | None,
    engines: Sequence[str] | None,
    policy: Policy | None,
    redeliver: bool,
    progress: Progress | None,
    by: str,
) -> ReplayResult:
    items = [
        r
        for r in _recorded(settings).values()
        if start <= r.received.received_at <= end
        and (tenant is None or r.received.tenant == tenant)
    ]
    items.sort(key=lambda r: (r.received.received_at, r.received.message_id))
    run = _Run(settings, run_name, policy)
    result = ReplayResult(run_name, run.topic_name)
    try:
        for item, new in await _rescan(run, items, engines, progress):
            mid = new.message_id
            result.replayed.append(mid)
            old = item.scanned
            if old is None:
                result.missing.append(mid)
                continue
            if old.action == new.action:
                continue
            result.changed.append(Change.between(old, new))
            if (
                redeliver
                and new.action in DELIVERABLE
                and old.action not in DELIVERABLE
                and not item.released
            ):
                _redeliver(run, old, new, by or _user())
                result.redelivered.append(mid)
    finally:
        await run.close()
    return result


def _redeliver(
    run: _Run, old: schemas.MessageScanned, new: schemas.MessageScanned, by: str
) -> None:
    """Queue the message for delivery now and record who did it and why."""
    now = utcnow()
    p = run.settings.kafka.topic_prefix
    run.emit(
        catalog.name(catalog.SUBMIT, p),
        schemas.DeliveryRetry.for_decision(new, now, extra_reasons=[f"replay:{run.run}"]),
    )
    run.emit(
        catalog.name(catalog.OPS, p),
        schemas.ReplayRedelivered(
            message_id=new.message_id,
            tenant=new.tenant,
            redelivered_at=now,
            run=run.run,
            redelivered_by=by,
            old_action=old.action,
            new_action=new.action,
            reasons=new.reasons,
            rcpt_to=new.rcpt_to,
        ),
    )


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def retroscan(
    settings: Settings,
    since: dt.datetime,
    *,
    run: str,
    progress: Progress | None = None,
) -> ReplayResult:
    """Rescan the mail delivered (deliver or tag) since ``since`` with today's configured
    engines and each tenant's policy; a ``RetroscanAlert`` for every message that would now be
    held back. Returns the run, ``alerts`` naming the messages alerted on."""
    return asyncio.run(_retroscan(settings, since, run, progress))


async def _retroscan(
    settings: Settings, since: dt.datetime, run_name: str, progress: Progress | None
) -> ReplayResult:
    items = [
        r
        for r in _recorded(settings).values()
        if r.scanned is not None
        and r.scanned.action in DELIVERABLE
        and r.received.received_at >= since
    ]
    items.sort(key=lambda r: (r.received.received_at, r.received.message_id))
    run = _Run(settings, run_name, None)
    result = ReplayResult(run_name, run.topic_name)
    ops = catalog.name(catalog.OPS, settings.kafka.topic_prefix)
    try:
        for item, new in await _rescan(run, items, settings.scanner.engines, progress):
            mid = new.message_id
            result.replayed.append(mid)
            old = item.scanned
            assert old is not None  # filtered above
            if new.action in DELIVERABLE:
                continue
            result.changed.append(Change.between(old, new))
            run.emit(
                ops,
                schemas.RetroscanAlert(
                    message_id=mid,
                    tenant=new.tenant,
                    alerted_at=utcnow(),
                    run=run_name,
                    old_action=old.action,
                    new_action=new.action,
                    reasons=new.reasons,
                    verdicts=new.verdicts,
                    mail_from=new.mail_from,
                    rcpt_to=new.rcpt_to,
                    received_at=new.received_at,
                    object_key=new.object_key,
                ),
            )
            result.alerts.append(mid)
    finally:
        await run.close()
    return result
