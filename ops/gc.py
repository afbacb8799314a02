"""`mxgate gc`: remove message bodies that no event references any more.

Bodies are written once and shared by content (two identical messages, one object), so a body
may only go when *no* retained event names its key: not on any catalog topic, nor on a replay
run's topic. A body held in quarantine (quarantined, and neither released nor deleted) is never
removed, whatever else holds: the quarantine topic is kept forever (catalog.QUARANTINE), and its
events protect a body only while the entry is held, so a released or deleted entry's body goes
once the other topics' events naming it are gone.

The store lists keys without times, and the receiver stores a body *before* it produces the
event naming it, so a body seen unreferenced once may just be arriving. gc therefore
remembers (rocksdict under ``MXGATE_OPS__STATE_PATH/gc``) when it first saw each body
unreferenced, with the body's ``BlobStamp``, and deletes it only on a later run at least
``MXGATE_OPS__GC_GRACE`` seconds after, if it is still unreferenced, and only with
``store.delete_if_unchanged(key, stamp)``: a body put again since (the same bytes of a new
message, whose event gc may not have read) is kept, even when that put races the delete
(mxgate.blobstore). The keys are listed *before* the topics are read, so a body whose event
lands while gc reads is seen referenced.

The reference set must be complete: gc takes every partition's end offset before it reads,
and if any partition was not read up to it (a broker error, an open transaction that did not
end, a record it cannot decode, which might name a body), it deletes nothing and says which
partitions were short (``GcResult.incomplete``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from rocksdict import Rdict

import schemas
from mxgate import catalog
from mxgate.blobstore import BlobStamp, BlobStore, open_store
from mxgate.kafka import base_config, position
from mxgate.settings import Settings

__all__ = ["GcResult", "collect", "references"]


@dataclass(slots=True)
class GcResult:
    """What one gc run found and did."""

    listed: int = 0
    referenced: int = 0
    quarantined: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # unreferenced, grace not over yet
    deleted: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)  # non-empty: nothing was deleted

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "listed": self.listed,
            "referenced": self.referenced,
            "quarantined": self.quarantined,
            "waiting": self.waiting,
            "deleted": self.deleted,
            "complete": not self.incomplete,
            "incomplete": self.incomplete,
        }


@dataclass(slots=True)
class References:
    """What one read of the topics found."""

    referenced: set[str] = field(default_factory=set)  # keys named by a retained event
    held: set[str] = field(default_factory=set)  # keys of bodies held in quarantine
    incomplete: list[str] = field(default_factory=list)  # why the read cannot be trusted


def _topics(settings: Settings) -> list[str]:
    p = settings.kafka.topic_prefix
    tiers = len(settings.deliverer.retry_schedule)
    names = [catalog.name(t, p) for t in catalog.all_topics(tiers)]
    # Replay runs' decisions name bodies too (an operator may still be looking at them).
    meta = AdminClient(base_config(settings.kafka)).list_topics(timeout=10)
    replay = catalog.name(catalog.replay_topic(""), p)
    names += sorted(t for t in meta.topics if t.startswith(replay))
    return names


READ_QUIET = 30.0
"""Seconds without progress after which gc stops reading and calls the read incomplete (an
open transaction holds a read_committed consumer back until it ends or times out)."""


def references(settings: Settings, quiet: float = READ_QUIET) -> References:
    """Every body key the retained events name, the held ones, and whether the read was whole.

    The topics are read from their start to each partition's end offset as taken before
    reading; a partition that does not get there within ``quiet`` seconds of no progress, an
    error, or a record that cannot be decoded makes the read incomplete.
    """
    out = References()
    held: dict[str, str] = {}  # message_id -> object_key, while in quarantine
    quarantine = catalog.name(catalog.QUARANTINE, settings.kafka.topic_prefix)
    consumer = Consumer(
        base_config(settings.kafka)
        | {
            "group.id": "ops.gc",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    # The ends come from a read_uncommitted client: the log's real end, past records of
    # transactions still open (a read_committed client would answer the last stable offset,
    # and gc would call complete a read that never saw them).
    probe = Consumer(
        base_config(settings.kafka) | {"group.id": "ops.gc", "isolation.level": "read_uncommitted"}
    )
    try:
        ends = _end_offsets(probe, _topics(settings), out.incomplete)
    finally:
        probe.close()
    try:
        if ends:
            consumer.assign([TopicPartition(t, p, lo) for (t, p), (lo, _) in ends.items()])
        pending = set(ends)
        last = time.monotonic()
        while pending and time.monotonic() - last < quiet:
            for m in consumer.consume(500, 1.0):
                err = m.error()
                if err is not None:
                    k = (m.topic() or "", m.partition() or 0)
                    if err.code() == KafkaError._PARTITION_EOF:
                        # The EOF offset is past any transaction markers: the real end.
                        if k in ends and (m.offset() or 0) >= ends[k][1]:
                            pending.discard(k)
                        continue
                    out.incomplete.append(f"{k[0]}[{k[1]}]: {err.str()}")
                    if not err.retriable():
                        pending.clear()  # an answer that will not change: stop here
                    continue
                last = time.monotonic()
                topic, partition, offset = position(m)
                k = (topic, partition)
                if offset >= ends[k][1] - 1:
                    pending.discard(k)
                if offset >= ends[k][1]:
                    continue
                try:
                    event = schemas.decode_event(m.value() or b"")
                except schemas.SchemaError as exc:
                    # It may name a body: unknown is not "unreferenced".
                    out.incomplete.append(f"{topic}[{partition}]@{offset}: undecodable: {exc}")
                    continue
                _note(event, topic == quarantine, out.referenced, held)
        out.incomplete += [
            f"{t}[{p}]: read stopped short of end offset {ends[(t, p)][1]}"
            for t, p in sorted(pending)
        ]
    finally:
        consumer.close()
    out.held = set(held.values())
    return out


def _note(
    event: schemas.Event, quarantine: bool, referenced: set[str], held: dict[str, str]
) -> None:
    """Fold one event into the reference set and the held-in-quarantine index."""
    if not quarantine:
        if isinstance(event, schemas.DeadLettered):
            # A record set aside still names its body: `mxgate deadletter retry` needs it.
            original = event.original()
            if original is not None:
                _note(original, False, referenced, held)
            return
        # Every event that names a body says so in its object_key field.
        key = getattr(event, "object_key", None)
        if isinstance(key, str) and key:
            referenced.add(key)
        return
    # The quarantine topic is kept forever: its events hold a body only while it is held.
    if isinstance(event, schemas.MessageQuarantined) and event.action == "quarantine":
        held[event.message_id] = event.object_key
    elif isinstance(event, schemas.QuarantineReleased | schemas.QuarantineDeleted):
        held.pop(event.message_id, None)


def _end_offsets(
    consumer: Consumer, topics: list[str], problems: list[str]
) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (low, high) watermarks of every non-empty partition, taken now."""
    meta = consumer.list_topics(timeout=10)
    ends: dict[tuple[str, int], tuple[int, int]] = {}
    for topic in topics:
        tm = meta.topics.get(topic)
        if tm is None:
            continue  # never created: no event to read
        if tm.error is not None:
            problems.append(f"{topic}: {tm.error.str()}")
            continue
        for p in tm.partitions:
            try:
                lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            except KafkaException as exc:
                problems.append(f"{topic}[{p}]: no end offset: {exc.args[0].str()}")
                continue
            if hi > lo:
                ends[(topic, p)] = (lo, hi)
    return ends


def collect(
    settings: Settings,
    dry_run: bool = False,
    now: float | None = None,
    *,
    quiet: float = READ_QUIET,
    store: BlobStore | None = None,
) -> GcResult:
    """One gc run; with ``dry_run`` nothing is deleted and nothing remembered.

    ``quiet``: see ``references``. ``store``: the store to collect (default: the settings').
    """
    target = open_store(settings.store) if store is None else store
    return asyncio.run(_collect(settings, target, dry_run, now, quiet))


async def _collect(
    settings: Settings, store: BlobStore, dry_run: bool, now: float | None, quiet: float
) -> GcResult:
    result = GcResult()
    path = settings.ops.state_path / "gc" / (settings.kafka.topic_prefix.strip(".") or "default")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = Rdict(str(path))
    try:
        listed_at = time.time()
        keys = [k async for k in store.iter_keys()]  # before reading topics: see module doc
        result.listed = len(keys)
        refs = await asyncio.to_thread(references, settings, quiet)
        if refs.incomplete:
            result.incomplete = refs.incomplete
            return result  # an incomplete reference set: keep everything, remember nothing
        referenced, held = refs.referenced, refs.held
        t = time.time() if now is None else now
        for key in keys:
            if key in held:
                result.quarantined.append(key)
            if key in referenced or key in held:
                result.referenced += 1
                if not dry_run and key in state:
                    del state[key]  # referenced again: its grace starts over next time
                continue
            remembered = state.get(key)
            # [first seen unreferenced, stamp token, stamp time]; a bare float is from before
            # stamps were kept: seen anew.
            if isinstance(remembered, list) and len(remembered) == 3:
                first_seen, seen = float(remembered[0]), BlobStamp(remembered[2], remembered[1])
            else:
                stamp = await store.stamp(key)
                if stamp is None:
                    continue  # gone already
                if stamp.modified_at >= listed_at - 1.0:
                    # Put around the listing: a new message's body, maybe, and a put in the
                    # same second could share its stamp (S3 times have 1 s resolution).
                    result.waiting.append(key)
                    continue
                first_seen, seen = t, stamp
                if not dry_run:
                    state[key] = [t, stamp.token, stamp.modified_at]
            if t - first_seen < settings.ops.gc_grace:
                result.waiting.append(key)
                continue
            if dry_run:
                current = await store.stamp(key)
                if current is not None and current.token == seen.token:
                    result.deleted.append(key)
                elif current is not None:
                    result.waiting.append(key)
                continue
            if await store.delete_if_unchanged(key, seen):
                result.deleted.append(key)
                del state[key]
                continue
            # Put again since gc first saw it unreferenced (or gone): its grace starts over.
            del state[key]
            if await store.exists(key):
                result.waiting.append(key)
    finally:
        state.close()
        await store.aclose()
    return result
