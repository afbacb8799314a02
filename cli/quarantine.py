"""`mxgate quarantine`: list, show, release and delete held messages, per tenant.

The quarantine index is the quarantine topic folded by message ID: ``MessageQuarantined``
opens an entry, ``QuarantineReleased`` / ``QuarantineDeleted`` close it. Bodies stay in the
object store, untouched. A release is three events in one Kafka transaction: the release
(who and why), a ``ham`` training label, and a delivery work item on the submit topic that
the deliverer sends like any other mail (dedupe included, so a message is never released
twice to the same recipient). ``report-spam`` labels delivered mail ``spam``.

A release or deletion is recorded once, however many operators close one entry at once: its
transaction runs under the message's own transactional id, and the entry's state is read again
only after ``init_transactions``, which fences any other one of that message still in flight
(its commit fails) and waits for one being committed. So of two concurrent releases one
records ``QuarantineReleased`` and the other finds the entry released, or is fenced and says so.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import Annotated

import typer
from confluent_kafka import KafkaError, KafkaException, Producer

import schemas
from cli.common import JsonOpt, acting_as, echo_json, load_settings
from mxgate import catalog
from mxgate.kafka import producer_config, read_events
from mxgate.settings import Settings
from mxgate.timeutil import utcnow
from ops.operators import Action
from ops.quarantine import Entry, build_digest, group_for_digest, index, matches, parse_when

quarantine_app = typer.Typer(
    help="Held-back messages: list, show, release, delete (per tenant).", no_args_is_help=True
)

TenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="Tenant whose quarantine.")]
# list/show/release/delete: an operator who names no tenant means all of them.
AnyTenantOpt = Annotated[
    str | None, typer.Option("--tenant", "-t", help="Only this tenant (default: all).")
]


def _settings() -> Settings:
    return load_settings()


def _get(settings: Settings, tenant: str | None, message_id: str) -> Entry:
    e = index(settings).get(message_id)
    if e is None or (tenant is not None and e.tenant != tenant):
        where = f"the quarantine of {tenant}" if tenant else "any quarantine"
        typer.echo(f"error: no message {message_id} in {where}", err=True)
        raise typer.Exit(1)
    return e


def _producer(settings: Settings, name: str) -> Producer:
    """A transactional producer ``mxgate.quarantine-cli.<name>``, its transactions initialised
    (which fences an earlier producer of that id and completes its open transaction)."""
    p = Producer(producer_config(settings.kafka, transactional_id=f"mxgate.quarantine-cli.{name}"))
    p.init_transactions(30)
    return p


def _commit(p: Producer, records: list[tuple[str, str, schemas.Event]]) -> None:
    """Produce (topic, key, event) in one transaction: all or nothing."""
    p.begin_transaction()
    for topic, key, event in records:
        p.produce(topic, key=key.encode(), value=schemas.encode_event(event))
    p.commit_transaction(30)


def _produce(settings: Settings, records: list[tuple[str, str, schemas.Event]]) -> None:
    """Produce (topic, key, event) in one transaction of a producer of its own."""
    _commit(_producer(settings, str(uuid.uuid4())), records)


def _claim(settings: Settings, tenant: str | None, message_id: str) -> tuple[Producer, Entry]:
    """The message's own producer, and its entry read after claiming it: held, or exit 1.

    Every release or deletion of one message uses the transactional id of that message, so
    after ``init_transactions`` no other one of it can still commit: the state read now is
    the one this command's record follows."""
    p = _producer(settings, f"entry.{message_id}")
    e = _get(settings, tenant, message_id)
    if e.state != "held":
        typer.echo(f"error: {message_id} is already {e.state}", err=True)
        raise typer.Exit(1)
    return p, e


# How a producer learns that another one took its transactional id over.
_FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}


def _commit_claimed(
    p: Producer, message_id: str, records: list[tuple[str, str, schemas.Event]]
) -> None:
    """:func:`_commit` of a claimed entry; exit 1 when another command claimed it meanwhile."""
    try:
        _commit(p, records)
    except KafkaException as err:
        if err.args[0].code() in _FENCED:
            # Fenced: another release or deletion of the message started after this one
            # claimed it, and records its own; nothing of this one is written.
            typer.echo(
                f"error: {message_id}: another release or deletion took over, nothing recorded "
                f"here (see `mxgate quarantine show {message_id}`): {err.args[0].str()}",
                err=True,
            )
            raise typer.Exit(1) from None
        raise


@quarantine_app.command("list")
def list_(
    tenant: AnyTenantOpt = None,
    sender: Annotated[str | None, typer.Option(help="Envelope sender contains this.")] = None,
    recipient: Annotated[str | None, typer.Option(help="A recipient contains this.")] = None,
    reason: Annotated[str | None, typer.Option(help="A reason contains this.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time or age (6h, 2d).")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time or age (6h, 2d).")] = None,
    state: Annotated[str, typer.Option(help="held | released | deleted | all")] = "held",
    as_json: JsonOpt = False,
) -> None:
    """List quarantined messages (one tenant's, or all), oldest first."""
    s = _settings()
    acting_as(s, Action.read, tenant)
    now = utcnow()
    rows = [
        e
        for e in index(s).values()
        if matches(
            e,
            tenant=tenant,
            sender=sender,
            recipient=recipient,
            reason=reason,
            since=parse_when(since, now) if since else None,
            until=parse_when(until, now) if until else None,
            state=state,
        )
    ]
    rows.sort(key=lambda e: e.quarantined_at)
    if as_json:
        typer.echo(json.dumps([e.json() for e in rows], indent=2))
        return
    for e in rows:
        typer.echo(
            f"{e.message_id}  {e.quarantined_at:%Y-%m-%d %H:%M}  {e.state:8} "
            f"<{e.mail_from}> -> {','.join(e.rcpt_to)}  [{', '.join(e.reasons)}]"
        )
    typer.echo(f"{len(rows)} message(s)", err=True)


@quarantine_app.command()
def show(message_id: str, tenant: AnyTenantOpt = None, as_json: JsonOpt = False) -> None:
    """One quarantined message: envelope, reasons, history and its headers from the store."""
    from mxgate.blobstore import BlobError, open_store

    s = _settings()
    e = _get(s, tenant, message_id)
    acting_as(s, Action.read, e.tenant)

    async def headers() -> dict[str, str]:
        store = open_store(s.store)
        try:
            raw = await store.get(e.object_key)
        except BlobError as err:
            return {"error": str(err)}
        finally:
            await store.aclose()
        msg = BytesHeaderParser(policy=default_policy).parsebytes(raw)
        return {k: str(msg[k]) for k in ("From", "To", "Subject", "Date", "Message-ID") if msg[k]}

    out = e.json() | {"headers": asyncio.run(headers())}
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    for k, v in out.items():
        typer.echo(f"{k:15} {v}")


@quarantine_app.command()
def release(
    message_id: str,
    reason: Annotated[str, typer.Option("--reason", help="Why it is released (recorded).")],
    tenant: AnyTenantOpt = None,
    to: Annotated[
        list[str] | None, typer.Option("--to", help="Release only to these recipients.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a quarantined message on through delivery; records who and why, and labels it ham."""
    s = _settings()
    e = _get(s, tenant, message_id)
    tenant = e.tenant
    who = acting_as(s, Action.release, tenant)  # before anything about the message is said
    if e.state != "held":
        typer.echo(f"error: {message_id} is already {e.state}", err=True)
        raise typer.Exit(1)
    rcpts = list(to) if to else e.rcpt_to
    unknown = [r for r in rcpts if r not in e.rcpt_to]
    if unknown:
        typer.echo(f"error: not recipients of {message_id}: {', '.join(unknown)}", err=True)
        raise typer.Exit(2)
    producer, e = _claim(s, tenant, message_id)
    now = utcnow()
    prefix = s.kafka.topic_prefix
    released = schemas.QuarantineReleased(
        message_id=message_id, tenant=tenant, released_at=now, released_by=who, reason=reason,
        rcpt_to=tuple(rcpts),
    )  # fmt: skip
    label = schemas.TrainingLabelled(
        message_id=message_id, tenant=tenant, labelled_at=now, label="ham", source="release",
        labelled_by=who, reason=reason, object_key=e.object_key, action=e.action,
    )  # fmt: skip
    work = schemas.DeliveryRetry.first(
        schemas.WorkKind.RELEASE, message_id=message_id, tenant=tenant,
        reasons=[*e.reasons, f"released by {who}"], mail_from=e.mail_from, rcpt_to=rcpts,
        object_key=e.object_key, received_at=e.quarantined_at, now=now,
    )  # fmt: skip
    _commit_claimed(
        producer,
        message_id,
        [
            (catalog.name(catalog.QUARANTINE, prefix), message_id, released),
            (catalog.name(catalog.TRAINING, prefix), message_id, label),
            (catalog.name(catalog.SUBMIT, prefix), message_id, work),
        ],
    )
    if as_json:
        typer.echo(json.dumps({"message_id": message_id, "released_to": rcpts, "by": who}))
    else:
        typer.echo(f"released {message_id} to {', '.join(rcpts)} (by {who})")


@quarantine_app.command()
def delete(
    message_id: str,
    tenant: AnyTenantOpt = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Remove a message from the quarantine: it can no longer be released.

    The body stays in the object store: it is content-addressed, so another message may
    share it; the store's lifecycle rules expire it.
    """
    s = _settings()
    e = _get(s, tenant, message_id)
    tenant = e.tenant
    who = acting_as(s, Action.delete, tenant)
    if e.state != "held":
        typer.echo(f"error: {message_id} is already {e.state}", err=True)
        raise typer.Exit(1)
    producer, _ = _claim(s, tenant, message_id)
    deleted = schemas.QuarantineDeleted(
        message_id=message_id, tenant=tenant, deleted_at=utcnow(), deleted_by=who, reason=reason
    )
    topic = catalog.name(catalog.QUARANTINE, s.kafka.topic_prefix)
    _commit_claimed(producer, message_id, [(topic, message_id, deleted)])
    if as_json:
        echo_json({"message_id": message_id, "tenant": tenant, "state": "deleted", "by": who})
    else:
        typer.echo(f"deleted {message_id} from the quarantine of {tenant} (by {who})")


@quarantine_app.command("report-spam")
def report_spam(
    message_id: str,
    tenant: TenantOpt,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Label a delivered message spam: a training event for learning engines."""
    s = _settings()
    who = acting_as(s, Action.report_spam, tenant)
    decided = [e for e in read_events(s, {message_id}) if isinstance(e, schemas.MessageScanned)]
    scanned = decided[-1] if decided else None
    if scanned is None or scanned.tenant != tenant:
        typer.echo(f"error: no decided message {message_id} for {tenant}", err=True)
        raise typer.Exit(1)
    label = schemas.TrainingLabelled(
        message_id=message_id, tenant=tenant, labelled_at=utcnow(), label="spam",
        source="report", labelled_by=who, reason=reason, object_key=scanned.object_key,
        action=scanned.action,
    )  # fmt: skip
    _produce(s, [(catalog.name(catalog.TRAINING, s.kafka.topic_prefix), message_id, label)])
    if as_json:
        echo_json({"message_id": message_id, "tenant": tenant, "label": "spam", "by": who})
    else:
        typer.echo(f"reported {message_id} as spam (by {who})")


@quarantine_app.command()
def digest(
    tenant: TenantOpt,
    since: Annotated[str, typer.Option(help="Held since (ISO time or age).")] = "24h",
    recipient: Annotated[str | None, typer.Option(help="Only this recipient.")] = None,
    send: Annotated[bool, typer.Option("--send", help="Send them through delivery.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Per-recipient digests of what was held; `--send` mails them (run it daily from cron)."""
    from mxgate.blobstore import open_store
    from mxgate.ids import new_message_id

    s = _settings()
    acting_as(s, Action.digest if send else Action.read, tenant)
    now = utcnow()
    start = parse_when(since, now)
    held = [e for e in index(s).values() if e.tenant == tenant and e.quarantined_at >= start]
    groups = group_for_digest(held)
    if recipient:
        groups = {k: v for k, v in groups.items() if k == recipient.lower()}
    mails = {
        r: build_digest(
            hostname=s.deliverer.hostname, tenant=tenant, recipient=r, entries=es, now=now
        )
        for r, es in groups.items()
    }
    sent: dict[str, str] = {}
    if send and mails:

        async def store_all() -> dict[str, str]:
            store = open_store(s.store)
            try:
                return {r: (await store.put(m)).key for r, m in mails.items()}
            finally:
                await store.aclose()

        keys = asyncio.run(store_all())
        records: list[tuple[str, str, schemas.Event]] = []
        for r, key in keys.items():
            did = new_message_id()
            sent[r] = did
            work = schemas.DeliveryRetry.first(
                schemas.WorkKind.DIGEST, message_id=did, tenant=tenant,
                reasons=["quarantine digest"], mail_from="", rcpt_to=[r], object_key=key,
                received_at=now, now=now, helo=s.deliverer.hostname,
            )  # fmt: skip
            records.append((catalog.name(catalog.SUBMIT, s.kafka.topic_prefix), did, work))
        _produce(s, records)
    if as_json:
        typer.echo(json.dumps({
            r: {"held": [e.message_id for e in groups[r]], "digest_id": sent.get(r)}
            for r in groups
        }, indent=2))  # fmt: skip
        return
    for r, m in mails.items():
        if send:
            typer.echo(f"sent digest to {r} ({len(groups[r])} held) as {sent[r]}")
        else:
            typer.echo(m.decode("utf-8", "replace"))
