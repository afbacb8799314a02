"""Typed events: one frozen dataclass per Avro record schema in ``schemas/avro/``.

The dataclasses mirror the ``.avsc`` files field by field, in order, with the same types and
defaults (``tests/unit/test_event_types.py`` fails when they drift). Arrays are tuples, maps
dicts, ``["null", T]`` unions ``T | None`` and ``timestamp-micros`` longs aware datetimes.
Every role works with these; the Avro dicts exist only at the Kafka boundary, in
:func:`encode_event` and :func:`decode_event`, which keep the single-object encoding and its
fingerprint lookup of :mod:`schemas.wire`.
"""

from __future__ import annotations

import datetime as dt
import enum
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any, ClassVar, Self, Union, get_args, get_origin, get_type_hints

from schemas.wire import SchemaError, decode, encode

__all__ = [
    "EVENT_TYPES",
    "RECORD_TYPES",
    "DeadLetterRetried",
    "DeadLettered",
    "DeliveryAttempted",
    "DeliveryRetry",
    "EngineControlled",
    "EngineStatus",
    "EngineVerdict",
    "Event",
    "GreylistEntry",
    "MessageQuarantined",
    "MessageReceived",
    "MessageRejected",
    "MessageScanned",
    "QuarantineDeleted",
    "QuarantineReleased",
    "RecipientOutcome",
    "Record",
    "ReplayRedelivered",
    "ReputationListed",
    "RetroscanAlert",
    "TlsInfo",
    "TrainingLabelled",
    "WorkKind",
    "decode_event",
    "encode_event",
]


class WorkKind(enum.StrEnum):
    """What a delivery work item (``DeliveryRetry``) delivers."""

    DECISION = "decision"
    """The scanner's decision for received mail: its ``action`` is deliver or tag."""
    RELEASE = "release"
    """A message released from quarantine by a person."""
    DSN = "dsn"
    """A delivery status notification the gateway wrote (from the null sender)."""
    DIGEST = "digest"
    """A quarantine digest the gateway wrote (from the null sender)."""


def _convert(hint: Any) -> Callable[[Any], Any]:
    """How to turn a decoded Avro value into the Python value of a field typed ``hint``."""
    origin = get_origin(hint)
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.from_avro
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint
    if origin is tuple:
        item = _convert(get_args(hint)[0])
        return lambda v: tuple(item(x) for x in v)
    if origin is dict:
        return dict
    if origin in (types.UnionType, Union):
        (inner,) = [a for a in get_args(hint) if a is not type(None)]
        conv = _convert(inner)
        return lambda v: None if v is None else conv(v)
    return lambda v: v


def _plain(value: Any) -> Any:
    """A field's value as fastavro writes it."""
    if isinstance(value, Record):
        return value.to_avro()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


_CONVERTERS: dict[type[Record], tuple[tuple[str, Callable[[Any], Any]], ...]] = {}


def _converters(cls: type[Record]) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    """(field name, converter) of ``cls``, in field order; worked out once per class."""
    got = _CONVERTERS.get(cls)
    if got is None:
        hints = get_type_hints(cls)
        got = _CONVERTERS[cls] = tuple((f.name, _convert(hints[f.name])) for f in fields(cls))
    return got


class Record:
    """Base of every event dataclass: conversion to and from the Avro record dict."""

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # every subclass is a dataclass
    SCHEMA: ClassVar[str]
    """The record's Avro full name (its file is ``schemas/avro/<SCHEMA>.avsc``)."""

    @classmethod
    def from_avro(cls, rec: Mapping[str, Any]) -> Self:
        """The dataclass for a record decoded with this record's current schema."""
        rec = cls._legacy(rec)
        return cls(**{name: conv(rec[name]) for name, conv in _converters(cls)})

    @classmethod
    def _legacy(cls, rec: Mapping[str, Any]) -> Mapping[str, Any]:
        """Reinterpret what older writers put in fields whose meaning has moved since."""
        return rec

    def to_avro(self) -> dict[str, Any]:
        """The record as the Avro dict fastavro writes."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLettered(Record):
    """A consumer gave up on one input record (a handler that kept failing on it, or bytes that are
    no event) and set it aside, in the same transaction that committed its offset. Topic
    mxgate.deadletter.v1, key: the record's own key (a message ID)."""

    SCHEMA: ClassVar[str] = "mxgate.events.DeadLettered"

    topic: str
    """Full name of the topic the record was on."""
    partition: int
    offset: int
    key: str
    """The record's key (UTF-8; undecodable bytes replaced)."""
    value: bytes
    """The record's value exactly as it was (empty for none)."""
    cause: str
    """handler (processing it kept failing) | undecodable (not an event)"""
    error: str
    """The last error, as text."""
    attempts: int
    """Failed attempts before it was set aside (0 for undecodable)."""
    group: str
    """Consumer group that gave up on it."""
    instance: str = ""
    """The group member (instance id) that did."""
    dead_lettered_at: dt.datetime

    @property
    def id(self) -> str:
        """The dead letter's id: ``<topic>:<partition>:<offset>`` of the original record."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    def original(self) -> Event | None:
        """The event the record held, when its bytes decode (None for undecodable ones)."""
        try:
            return decode_event(self.value)
        except SchemaError:
            return None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterRetried(Record):
    """An operator put a dead-lettered record back on its source topic (`mxgate deadletter retry`),
    in the same transaction as this event. Topic mxgate.deadletter.v1, key: the record's key."""

    SCHEMA: ClassVar[str] = "mxgate.events.DeadLetterRetried"

    topic: str
    """Source topic of the dead letter (where the value went again)."""
    partition: int
    """Partition of the original record."""
    offset: int
    """Offset of the original record: with topic and partition, the dead letter's id."""
    key: str
    retried_by: str
    """Who retried it (user@host)."""
    reason: str = ""
    retried_at: dt.datetime

    @property
    def id(self) -> str:
        """The id of the dead letter this retried (see :attr:`DeadLettered.id`)."""
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryAttempted(Record):
    """One delivery attempt of a message to its tenant's route, with each recipient's outcome. Key:
    message_id."""

    SCHEMA: ClassVar[str] = "mxgate.events.DeliveryAttempted"

    message_id: str
    tenant: str
    attempted_at: dt.datetime
    attempt: int
    """1 for the first attempt."""
    remote_host: str
    """host:port tried."""
    action: str
    """The scanner action this delivery carries out (deliver | tag), or the kind of mail the
    gateway sends itself (release | dsn | digest)."""
    recipients: tuple[RecipientOutcome, ...]
    next_attempt_at: dt.datetime | None = None
    """Set when some recipient was deferred."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryRetry(Record):
    """Work item on a retry tier: deliver these recipients again not before due_at. Key:
    message_id."""

    SCHEMA: ClassVar[str] = "mxgate.events.DeliveryRetry"

    message_id: str
    tenant: str
    action: str
    reasons: tuple[str, ...]
    spam_score: float = 0.0
    mail_from: str
    rcpt_to: tuple[str, ...]
    """Only the recipients still to deliver."""
    object_key: str
    received_at: dt.datetime
    client_ip: str = ""
    helo: str = ""
    attempt: int
    """Number of the attempt this item will make."""
    due_at: dt.datetime
    first_attempt_at: dt.datetime
    auth_results: str = ""
    """The Authentication-Results header computed at the first attempt from the scan's verdicts
    (empty when no authentication engine ran)."""
    kind: WorkKind = WorkKind.DECISION
    """What the item delivers: decision (the scanner's action, deliver | tag), release (a
    quarantine release), dsn (a delivery status notification), digest (a quarantine digest).
    For the last three, action repeats the kind, as items written before this field said it
    there (added in v3)."""
    sender_auth: str = ""
    """How the scan authenticated the envelope sender: ``spf`` (SPF pass for its domain),
    ``dkim`` (a verified DKIM signature of its domain) or empty (neither). A DSN goes to the
    sender only then, or when the recipient was verified at RCPT time (added in v4; older
    items decode as empty: no DSN unless the recipient was verified)."""
    size: int | None = None
    """Size in bytes of the stored body the item delivers, for the deliverer's batch byte
    budget; None when the writer did not say (added in v5; older items decode as None and
    count as the largest message the receiver accepts)."""

    @classmethod
    def _legacy(cls, rec: Mapping[str, Any]) -> Mapping[str, Any]:
        """Items written before ``kind`` existed said a kind other than decision in ``action``
        (they decode with the default, ``decision``)."""
        if rec["kind"] == WorkKind.DECISION and rec["action"] in _LEGACY_KINDS:
            return {**rec, "kind": rec["action"]}
        return rec

    @classmethod
    def first(
        cls,
        kind: WorkKind,
        *,
        message_id: str,
        tenant: str,
        reasons: Iterable[str],
        mail_from: str,
        rcpt_to: Iterable[str],
        object_key: str,
        received_at: dt.datetime,
        now: dt.datetime,
        action: str = "",
        spam_score: float = 0.0,
        client_ip: str = "",
        helo: str = "",
        auth_results: str = "",
        sender_auth: str = "",
        size: int | None = None,
    ) -> DeliveryRetry:
        """The work item for a first attempt, due ``now``: the one constructor of new items.

        ``action`` is the scanner's (deliver | tag) for a ``decision``; for the other kinds it
        is the kind itself, which deliverers older than ``kind`` dispatch on.
        """
        if kind is WorkKind.DECISION:
            if not action:
                raise ValueError("a decision work item needs the scanner's action")
        else:
            action = kind.value
        return cls(
            message_id=message_id, tenant=tenant, action=action, reasons=tuple(reasons),
            spam_score=spam_score, mail_from=mail_from, rcpt_to=tuple(rcpt_to),
            object_key=object_key, received_at=received_at, client_ip=client_ip, helo=helo,
            attempt=1, due_at=now, first_attempt_at=now, auth_results=auth_results, kind=kind,
            sender_auth=sender_auth, size=size,
        )  # fmt: skip

    @classmethod
    def for_decision(
        cls,
        scanned: MessageScanned,
        now: dt.datetime,
        *,
        extra_reasons: Sequence[str] = (),
        auth_results: str = "",
        sender_auth: str = "",
    ) -> DeliveryRetry:
        """The first attempt that carries out ``scanned``'s decision (deliver or tag)."""
        return cls.first(
            WorkKind.DECISION, message_id=scanned.message_id, tenant=scanned.tenant,
            action=scanned.action, reasons=(*scanned.reasons, *extra_reasons),
            spam_score=scanned.spam_score, mail_from=scanned.mail_from,
            rcpt_to=scanned.rcpt_to, object_key=scanned.object_key,
            received_at=scanned.received_at, client_ip=scanned.client_ip, helo=scanned.helo,
            now=now, auth_results=auth_results, sender_auth=sender_auth, size=scanned.size,
        )  # fmt: skip

    def next_attempt(self, rcpt_to: Iterable[str], due_at: dt.datetime) -> DeliveryRetry:
        """The item for the next attempt of ``rcpt_to`` (the recipients still deferred)."""
        return replace(self, rcpt_to=tuple(rcpt_to), attempt=self.attempt + 1, due_at=due_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineControlled(Record):
    """Ops switched an engine on or off cluster-wide (`mxgate engines disable|enable`). Topic
    mxgate.control.v1 (compacted), key: engine/<engine>; the latest record per engine is in
    force."""

    SCHEMA: ClassVar[str] = "mxgate.events.EngineControlled"

    engine: str
    enabled: bool
    reason: str = ""
    actor: str = ""
    """Who switched it (user@host)."""
    at: dt.datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineStatus(Record):
    """One scanner's view of one engine, reported periodically. Topic mxgate.control.v1
    (compacted), key: status/<scanner>/<engine>."""

    SCHEMA: ClassVar[str] = "mxgate.events.EngineStatus"

    scanner: str
    engine: str
    kind: str
    version: str
    rules_version: str
    state: str
    """enabled | disabled | open | half-open (circuit breaker)"""
    scans: int = 0
    errors: int = 0
    error_rate: float = 0.0
    """Failed share of the last 200 scans."""
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    last_error: str | None = None
    at: dt.datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineVerdict(Record):
    """What one engine found in one message."""

    SCHEMA: ClassVar[str] = "mxgate.events.EngineVerdict"

    engine: str
    kind: str
    """antivirus | antispam | auth | policy"""
    engine_version: str
    rules_version: str
    """Signature or rule set version."""
    outcome: str
    """clean | infected | spam | match | error | timeout | skipped | disabled | unscannable"""
    score: float = 0.0
    symbols: tuple[str, ...] = ()
    duration_ms: float = 0.0
    error: str | None = None
    shadow: bool = False
    """A shadow engine: logged and scored, never counted in the action (added in v2)."""
    detail: dict[str, str] = field(default_factory=dict)
    """The engine's structured finding, per engine (added in v3). Auth engines: spf {result,
    domain, reason}, dkim {result, header.d, header.s, reason}, dmarc {result, policy,
    reason}, arc {cv, reason}; other engines may leave it empty."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageQuarantined(Record):
    """A message was held back (quarantine) or dropped (discard) by decision; its body stays in the
    store. Key: message_id."""

    SCHEMA: ClassVar[str] = "mxgate.events.MessageQuarantined"

    message_id: str
    tenant: str
    quarantined_at: dt.datetime
    action: str
    """quarantine | discard"""
    reasons: tuple[str, ...]
    mail_from: str
    rcpt_to: tuple[str, ...]
    object_key: str
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageReceived(Record):
    """A message was accepted by a receiver: its body is durable in the object store. Key:
    message_id."""

    SCHEMA: ClassVar[str] = "mxgate.events.MessageReceived"

    message_id: str
    """mxgate's own ID (26-char, time-sortable), also the Kafka key."""
    tenant: str
    received_at: dt.datetime
    """When the last byte of DATA arrived."""
    accepted_at: dt.datetime
    """When the body was durable (before the event was produced)."""
    receiver: str
    """Host name of the receiver that accepted it."""
    client_ip: str
    client_port: int = 0
    helo: str
    tls: TlsInfo | None = None
    mail_from: str
    """Envelope sender; empty string for the null sender <>."""
    rcpt_to: tuple[str, ...]
    size: int
    sha256: str
    """Hex SHA-256 of the raw message exactly as received."""
    object_key: str
    """Key of the raw message in the object store."""
    header_message_id: str | None = None
    """The Message-ID header, if any."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageRejected(Record):
    """The receiver refused a message in the SMTP session (550) because the scanner's decision
    arrived in time and the tenant rejects that action in session. The message stays quarantined
    for audit. Key: message_id."""

    SCHEMA: ClassVar[str] = "mxgate.events.MessageRejected"

    message_id: str
    tenant: str
    rejected_at: dt.datetime
    action: str
    """The scanner's action that was refused in session."""
    reasons: tuple[str, ...]
    reply: str
    """The SMTP reply given to the sender."""
    waited_ms: float
    """How long the receiver waited for the decision."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageScanned(Record):
    """The scanner's one decision for a message: every engine's verdict and the action. Key:
    message_id."""

    SCHEMA: ClassVar[str] = "mxgate.events.MessageScanned"

    message_id: str
    tenant: str
    scanned_at: dt.datetime
    scanner: str
    """Host/process of the scanner that decided."""
    action: str
    """deliver | tag | quarantine | discard"""
    reasons: tuple[str, ...]
    spam_score: float = 0.0
    policy_version: str
    verdicts: tuple[EngineVerdict, ...]
    active_engines: tuple[str, ...] = ()
    """Engines enabled when this decision was made."""
    mail_from: str
    rcpt_to: tuple[str, ...]
    object_key: str
    sha256: str
    size: int
    received_at: dt.datetime
    client_ip: str = ""
    helo: str = ""
    defects: tuple[str, ...] = ()
    """MIME/archive problems met while parsing."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QuarantineDeleted(Record):
    """Someone deleted a quarantined message from the quarantine index; it can no longer be
    released. Key: message_id."""

    SCHEMA: ClassVar[str] = "mxgate.events.QuarantineDeleted"

    message_id: str
    tenant: str
    deleted_at: dt.datetime
    deleted_by: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class QuarantineReleased(Record):
    """Someone released a quarantined message: it is sent through delivery to rcpt_to. Key:
    message_id."""

    SCHEMA: ClassVar[str] = "mxgate.events.QuarantineReleased"

    message_id: str
    tenant: str
    released_at: dt.datetime
    released_by: str
    """Who released it (operator or admin name)."""
    reason: str
    rcpt_to: tuple[str, ...]
    """Recipients it is released to."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientOutcome(Record):
    """What happened to one recipient in one delivery attempt."""

    SCHEMA: ClassVar[str] = "mxgate.events.RecipientOutcome"

    recipient: str
    status: str
    """delivered | deferred | bounced | expired"""
    reply_code: int = 0
    reply: str = ""
    """The remote SMTP reply text or the local error."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayRedelivered(Record):
    """An operator's replay re-emitted a message for delivery (incident recovery).
    Key: message_id."""

    SCHEMA: ClassVar[str] = "mxgate.events.ReplayRedelivered"

    message_id: str
    tenant: str
    redelivered_at: dt.datetime
    run: str
    """Name of the replay run (its topic is mxgate.replay.<run>)."""
    redelivered_by: str
    """Who ran the replay (login name)."""
    old_action: str
    new_action: str
    reasons: tuple[str, ...]
    rcpt_to: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReputationListed(Record):
    """A file hash was listed as known-bad, or withdrawn (listed=false). Topic mxgate.reputation.v1
    (compacted), key: the SHA-256 in lowercase hex; the latest record per hash is in force. The
    reputation engine reads it from the beginning at start and follows it."""

    SCHEMA: ClassVar[str] = "mxgate.events.ReputationListed"

    sha256: str
    """SHA-256 of the file, lowercase hex."""
    listed: bool
    """true: known-bad; false: withdrawn."""
    source: str = ""
    """Who listed it (feed, analyst, sandbox)."""
    reason: str = ""
    """What it is, e.g. a malware family; shown as the verdict's symbol."""
    listed_at: dt.datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class GreylistEntry(Record):
    """One greylisting state (RFC 6647) shared by every receiver. Topic mxgate.greylist.v1
    (compacted), key: the entry's key; the latest record per key is in force, a tombstone or a
    past expires_at ends it. A triplet entry (client network, sender, recipient) is written
    when a triplet is first refused and again when its retry passes; a network entry (sender
    and recipient empty) auto-allows a client network whose triplet passed."""

    SCHEMA: ClassVar[str] = "mxgate.events.GreylistEntry"

    key: str
    """SHA-256 hex of tenant, network, sender and recipient (the record key)."""
    tenant: str
    network: str
    """The client's network: its /24 (IPv4) or /64 (IPv6), per the tenant's settings."""
    sender: str = ""
    """Envelope sender, lower case ("<>" for the null sender); empty for a network entry."""
    recipient: str = ""
    """Envelope recipient, lower case; empty for a network entry."""
    first_seen: dt.datetime
    """When the triplet was first refused (a network entry: when it was allowed)."""
    passed_at: dt.datetime | None = None
    """When a retry after the delay was accepted; None while it waits."""
    expires_at: dt.datetime
    """After this the entry counts as never seen."""
    written_by: str = ""
    """Instance id of the receiver that wrote it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetroscanAlert(Record):
    """A retro-scan found that mail already delivered would now be held: the engines or rules
    changed since. Key: message_id."""

    SCHEMA: ClassVar[str] = "mxgate.events.RetroscanAlert"

    message_id: str
    tenant: str
    alerted_at: dt.datetime
    run: str
    """Name of the retro-scan run (its replay topic is mxgate.replay.<run>)."""
    old_action: str
    """What was decided (and carried out) at the time."""
    new_action: str
    """What the current engines and policy decide."""
    reasons: tuple[str, ...]
    """Reasons of the new decision."""
    verdicts: tuple[EngineVerdict, ...]
    """The new verdicts."""
    mail_from: str
    rcpt_to: tuple[str, ...]
    received_at: dt.datetime
    object_key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsInfo(Record):
    """TLS facts of the SMTP session."""

    SCHEMA: ClassVar[str] = "mxgate.events.TlsInfo"

    version: str
    cipher: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingLabelled(Record):
    """A person labelled a message ham or spam (release from quarantine, report as spam): training
    input for learning engines. Key: message_id."""

    SCHEMA: ClassVar[str] = "mxgate.events.TrainingLabelled"

    message_id: str
    tenant: str
    labelled_at: dt.datetime
    label: str
    """ham | spam"""
    source: str
    """release | report"""
    labelled_by: str
    reason: str
    object_key: str
    """The raw message in the object store."""
    action: str
    """The action the scanner had decided."""


# Kinds a DeliveryRetry written before ``kind`` named in ``action``.
_LEGACY_KINDS = frozenset({WorkKind.RELEASE, WorkKind.DSN, WorkKind.DIGEST})

Event = (
    MessageReceived
    | MessageScanned
    | DeliveryAttempted
    | MessageQuarantined
    | DeliveryRetry
    | QuarantineReleased
    | QuarantineDeleted
    | TrainingLabelled
    | RetroscanAlert
    | ReplayRedelivered
    | EngineControlled
    | EngineStatus
    | MessageRejected
    | ReputationListed
    | DeadLettered
    | DeadLetterRetried
    | GreylistEntry
)
"""Every record that travels as a top-level event (the others are nested in them)."""

EVENT_TYPES: Mapping[str, type[Event]] = {
    MessageReceived.SCHEMA: MessageReceived,
    MessageScanned.SCHEMA: MessageScanned,
    DeliveryAttempted.SCHEMA: DeliveryAttempted,
    MessageQuarantined.SCHEMA: MessageQuarantined,
    DeliveryRetry.SCHEMA: DeliveryRetry,
    QuarantineReleased.SCHEMA: QuarantineReleased,
    QuarantineDeleted.SCHEMA: QuarantineDeleted,
    TrainingLabelled.SCHEMA: TrainingLabelled,
    RetroscanAlert.SCHEMA: RetroscanAlert,
    ReplayRedelivered.SCHEMA: ReplayRedelivered,
    EngineControlled.SCHEMA: EngineControlled,
    EngineStatus.SCHEMA: EngineStatus,
    MessageRejected.SCHEMA: MessageRejected,
    ReputationListed.SCHEMA: ReputationListed,
    DeadLettered.SCHEMA: DeadLettered,
    DeadLetterRetried.SCHEMA: DeadLetterRetried,
    GreylistEntry.SCHEMA: GreylistEntry,
}
"""The event dataclass for each full name of ``schemas.EVENTS``."""

RECORD_TYPES: Mapping[str, type[Record]] = {
    **EVENT_TYPES,
    TlsInfo.SCHEMA: TlsInfo,
    EngineVerdict.SCHEMA: EngineVerdict,
    RecipientOutcome.SCHEMA: RecipientOutcome,
}
"""The dataclass for every record schema, nested ones included."""


def encode_event(event: Event) -> bytes:
    """``event`` in single-object encoding with its current schema's fingerprint."""
    return encode(event.SCHEMA, event.to_avro())


def decode_event(value: bytes) -> Event:
    """The typed event in a single-object encoded value, whichever known schema version wrote
    it (older versions resolve into today's, defaults filling the fields added since).

    Raises :class:`schemas.SchemaError` for anything that is not a known event.
    """
    name, rec = decode(value)
    cls = EVENT_TYPES.get(name)
    if cls is None:
        raise SchemaError(f"{name} is not a top-level event")
    try:
        return cls.from_avro(rec)
    except (KeyError, TypeError, ValueError) as e:
        raise SchemaError(f"{name} does not fit its dataclass: {e}") from e
