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

GREYLIST = Topic(
    "mxgate.greylist.v1",
    (schemas.GREYLIST_ENTRY,),
    "Greylisting state every receiver shares (GreylistEntry, key: the entry's key): triplets "
    "first refused or passed, and auto-allowed client networks; compacted, the latest record "
    "per key counts. Every receiver reads it whole at start and follows it.",
    partitions=1,  # a table every receiver reads whole: one ordered log is enough
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
    GREYLIST,
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


def scoreboard_app(topic_prefix: str = "", group_prefix: str = "mxgate") -> str:
    """The faust app id of `mxgate scoreboard run` (:mod:`ops.scoreboard`): its consumer
    group, and the prefix of its transactional ids and of the changelog topics it creates."""
    return f"{group_prefix}.{topic_prefix}scoreboard"


# --- who may do what on the bus -------------------------------------------------------------

ROLES = ("receiver", "scanner", "deliverer", "ops", "data-reader")
"""The roles that get a Kafka principal, ``User:mxgate-<role>``."""


@dataclass(frozen=True, slots=True, order=True)
class Acl:
    """One ALLOW rule: ``principal`` may do ``operation`` on a resource (Kafka's terms:
    resource TOPIC | GROUP | TRANSACTIONAL_ID | CLUSTER, pattern LITERAL | PREFIXED)."""

    principal: str
    resource: str
    pattern: str
    name: str
    operation: str

    def line(self) -> str:
        """The rule as one line of ``infra/kafka/acls.txt``."""
        return f"{self.principal} ALLOW {self.operation} {self.resource} {self.pattern} {self.name}"


def principal(role: str) -> str:
    """The Kafka principal of a role (its SASL user is ``mxgate-<role>``)."""
    return f"User:mxgate-{role}"


def acls(topic_prefix: str = "", group_prefix: str = "mxgate", retry_tiers: int = 4) -> list[Acl]:
    """The least-privilege ACLs of every role, from what each role reads and writes.

    Kafka authorises per topic, not per record key: the scanner must write its EngineStatus
    to the control topic, so it holds WRITE there; that it cannot *switch* an engine is the
    HMAC's job (:mod:`mxgate.enginecontrol`). Likewise the deliverer writes its own DSNs to
    the submit topic. READ and WRITE imply DESCRIBE.
    """
    out: list[Acl] = []

    def t(n: Topic) -> str:
        return name(n, topic_prefix)

    tiers = [name(retry_tier(i), topic_prefix) for i in range(retry_tiers)]

    def grant(role: str, op: str, resource: str, n: str, pattern: str = "LITERAL") -> None:
        out.append(Acl(principal(role), resource, pattern, n, op))

    def reads(role: str, *topics: str) -> None:
        for n in topics:
            grant(role, "READ", "TOPIC", n)

    def writes(role: str, *topics: str) -> None:
        for n in topics:
            grant(role, "WRITE", "TOPIC", n)
        grant(role, "IDEMPOTENT_WRITE", "CLUSTER", "kafka-cluster")  # brokers before 3.0

    def groups(role: str, *prefixes: str) -> None:
        for p in prefixes:
            grant(role, "READ", "GROUP", p, "PREFIXED")

    def transactions(role: str, prefix: str) -> None:
        grant(role, "WRITE", "TRANSACTIONAL_ID", prefix, "PREFIXED")

    # receiver: writes what it accepted and refused; reads decisions back for in-session 550s,
    # and a timed-out write back from its partition (mxgate.kafka.record_on_partition) before
    # writing it again: without that read every timeout would be a possible duplicate.
    # The greylisting table is the receivers' own: every receiver writes and follows it.
    writes("receiver", t(RECEIVED), t(REJECTED), t(GREYLIST))
    reads("receiver", t(SCANNED), t(RECEIVED), t(GREYLIST))
    groups("receiver", f"{group_prefix}.receiver-decisions", "mxgate.produce-check",
           f"{group_prefix}.greylist-reader")  # fmt: skip
    # scanner: received -> scanned in one transaction; follows control and reputation.
    reads("scanner", t(RECEIVED), t(CONTROL), t(REPUTATION))
    writes("scanner", t(SCANNED), t(DEADLETTER), t(CONTROL))
    groups("scanner", f"{group_prefix}.scanner", f"{group_prefix}.control-reader",
           "mxgate.reputation-reader")  # fmt: skip
    transactions("scanner", f"{group_prefix}.scanner.")
    # deliverer: scanned, submit and retry tiers in; attempts, quarantine, retries, DSNs out.
    reads("deliverer", t(SCANNED), t(SUBMIT), t(DELIVERY), *tiers)  # delivery: dedupe rebuild
    writes("deliverer", t(DELIVERY), t(QUARANTINE), t(SUBMIT), t(DEADLETTER), *tiers)
    groups("deliverer", f"{group_prefix}.deliverer")
    transactions("deliverer", f"{group_prefix}.deliverer.")
    # ops: reads everything; the only writer of engine switches, releases, labels, replays.
    # `mxgate deadletter retry` puts a record back on the topic it was read from: every
    # topic a transactional loop consumes (received, scanned, submit, the retry tiers).
    grant("ops", "READ", "TOPIC", f"{topic_prefix}mxgate.", "PREFIXED")
    writes("ops", t(CONTROL), t(SUBMIT), t(QUARANTINE), t(TRAINING), t(OPS), t(DEADLETTER),
           t(REPUTATION), t(RECEIVED), t(SCANNED), *tiers)  # fmt: skip
    grant("ops", "WRITE", "TOPIC", f"{topic_prefix}mxgate.replay.", "PREFIXED")
    grant("ops", "CREATE", "CLUSTER", "kafka-cluster")
    grant("ops", "DESCRIBE_CONFIGS", "CLUSTER", "kafka-cluster")
    groups("ops", "ops.", f"{group_prefix}.")
    # `mxgate scoreboard run` (faust, exactly once): its changelog topics and transactions.
    board = scoreboard_app(topic_prefix, group_prefix)
    grant("ops", "READ", "TOPIC", board, "PREFIXED")
    grant("ops", "WRITE", "TOPIC", board, "PREFIXED")
    transactions("ops", board)
    transactions("ops", "mxgate.quarantine-cli.")
    transactions("ops", "mxgate.deadletter-cli.")
    # data teams: the verdict streams only.
    reads("data-reader", t(SCANNED), t(DELIVERY), t(QUARANTINE), t(REJECTED))
    groups("data-reader", "data.")
    return sorted(set(out))


def acl_file(topic_prefix: str = "", group_prefix: str = "mxgate", retry_tiers: int = 4) -> str:
    """The text of ``infra/kafka/acls.txt``: one rule a line, grouped by principal."""
    head = [
        "# Kafka ACLs of mxgate's roles, generated by `mxgate topics acl` (mxgate.catalog.acls).",
        "# principal ALLOW operation resource-type pattern-type name",
        "# The brokers run StandardAuthorizer with allow.everyone.if.no.acl.found=false.",
    ]
    return (
        "\n".join(head + [a.line() for a in acls(topic_prefix, group_prefix, retry_tiers)]) + "\n"
    )
