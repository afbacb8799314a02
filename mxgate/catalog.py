"""The topic catalog: every topic mxgate uses, declared once.

Names are versioned (``.v1``): an incompatible change makes a new topic, never a rewrite of an
old one. ``mxgate topics create`` creates them; nothing relies on broker auto-creation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import schemas

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Topic:
    """One topic: its stable name, what it carries and how it is kept."""

    name: str
    events: tuple[str, ...]
    doc: str
    partitions: int | None = None  # None: the settings' default
    retention_ms: int = 14 * DAY_MS
    compacted: bool = False
    config: dict[str, str] = field(default_factory=dict)

    def topic_config(self) -> dict[str, str]:
        """Broker-side config for creating the topic."""
        cfg = {
            "cleanup.policy": "compact" if self.compacted else "delete",
            "retention.ms": str(self.retention_ms),
            "min.insync.replicas": "1",
        }
        cfg.update(self.config)
        return cfg


RECEIVED = Topic(
    "mxgate.received.v1",
    (schemas.MESSAGE_RECEIVED,),
    "One MessageReceived per accepted message, keyed by message ID.",
)
SCANNED = Topic(
    "mxgate.scanned.v1",
    (schemas.MESSAGE_SCANNED,),
    "Exactly one MessageScanned per received message: every verdict and the action.",
)
DELIVERY = Topic(
    "mxgate.delivery.v1",
    (schemas.DELIVERY_ATTEMPTED,),
    "Every delivery attempt with each recipient's outcome.",
    retention_ms=30 * DAY_MS,
)
QUARANTINE = Topic(
    "mxgate.quarantine.v1",
    (schemas.MESSAGE_QUARANTINED, schemas.QUARANTINE_RELEASED, schemas.QUARANTINE_DELETED),
    "Messages held back or discarded by decision, and their later release or deletion "
    "(the quarantine index is this topic folded by message ID); kept forever, so a held "
    "message and its body stay until released or deleted.",
    # Not 30 days: a held entry (and, through gc, its body) must outlive any retention. Not
    # compacted either: compaction by message ID would drop the MessageQuarantined once its
    # release or deletion is written, and the index and `quarantine show` need it.
    retention_ms=-1,
)
RETRY = Topic(
    "mxgate.delivery.retry.v1",
    (schemas.DELIVERY_RETRY,),
    "Deferred recipients waiting for their next attempt (one tier topic per delay, see below).",
    retention_ms=7 * DAY_MS,
)
SUBMIT = Topic(
    "mxgate.delivery.submit.v1",
    (schemas.DELIVERY_RETRY,),
    "Work the gateway itself sends now: DSNs, quarantine releases, digests (due at once).",
    retention_ms=7 * DAY_MS,
)
TRAINING = Topic(
    "mxgate.training.v1",
    (schemas.TRAINING_LABELLED,),
    "Ham/spam labels from people (quarantine release, report-as-spam) for learning engines.",
    retention_ms=365 * DAY_MS,
)

OPS = Topic(
    "mxgate.ops.v1",
    (schemas.RETROSCAN_ALERT, schemas.REPLAY_REDELIVERED),
    "Operator-visible facts: retro-scan alerts (delivered mail now detected) and replay "
    "redeliveries.",
    retention_ms=365 * DAY_MS,
)

CONTROL = Topic(
    "mxgate.control.v1",
    (schemas.ENGINE_CONTROLLED, schemas.ENGINE_STATUS),
    "Engine switches by ops (EngineControlled, key engine/<name>) and each scanner's engine "
    "status (EngineStatus, key status/<scanner>/<engine>); compacted: the latest per key counts.",
    partitions=1,  # one ordered log: every scanner reads all of it
    retention_ms=-1,
    compacted=True,
)

REJECTED = Topic(
    "mxgate.rejected.v1",
    (schemas.MESSAGE_REJECTED,),
    "Messages refused inside the SMTP session (550) because the decision arrived in time.",
    retention_ms=30 * DAY_MS,
)

REPUTATION = Topic(
    "mxgate.reputation.v1",
    (schemas.REPUTATION_LISTED,),
    "Known-bad attachment hashes (ReputationListed, key: SHA-256 hex) for the reputation engine; "
    "compacted: the latest record per hash counts, listed=false withdraws it.",
    partitions=1,  # a lookup table every scanner reads whole: one ordered log is enough
    retention_ms=-1,
    compacted=True,
)

DEADLETTER = Topic(
    "mxgate.deadletter.v1",
    (schemas.DEAD_LETTERED, schemas.DEAD_LETTER_RETRIED),
    "Input records a consumer set aside (a handler kept failing on them, or they are no event), "
    "each with its original value and error, and operators' retries of them "
    "(`mxgate deadletter`).",
    retention_ms=365 * DAY_MS,  # kept long: every one is mail someone must still look at
)

TOPICS: tuple[Topic, ...] = (
    RECEIVED,
    SCANNED,
    DELIVERY,
    QUARANTINE,
    SUBMIT,
    TRAINING,
    OPS,
    CONTROL,
    REJECTED,
    REPUTATION,
    DEADLETTER,
)


def retry_tier(index: int) -> Topic:
    """The retry topic of tier ``index`` (0-based), e.g. ``mxgate.delivery.retry.t0.v1``.

    Each tier has one fixed delay, so items in a tier's partition become due in offset order:
    the deliverer can wait on the head of a partition instead of scanning.
    """
    return Topic(
        f"mxgate.delivery.retry.t{index}.v1",
        RETRY.events,
        f"Retry tier {index}: {RETRY.doc}",
        retention_ms=RETRY.retention_ms,
    )


def all_topics(retry_tiers: int) -> tuple[Topic, ...]:
    """Every topic for a deployment with ``retry_tiers`` retry delays."""
    return TOPICS + tuple(retry_tier(i) for i in range(retry_tiers))


def replay_topic(run: str) -> Topic:
    """The topic of one replay or retro-scan run, ``mxgate.replay.<run>``: its MessageScanned
    decisions (never read by the deliverer), created by the run itself."""
    return Topic(
        f"mxgate.replay.{run}",
        (schemas.MESSAGE_SCANNED,),
        f"Decisions of replay run {run} (what other engines or a policy would have done).",
        partitions=1,
        retention_ms=30 * DAY_MS,
    )


def name(topic: Topic, prefix: str = "") -> str:
    """The topic's name with the deployment's prefix (empty in production)."""
    return prefix + topic.name
