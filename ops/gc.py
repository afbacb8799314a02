"""`mxgate gc`: remove message bodies that no event references any more.

Bodies are written once and shared by content (two identical messages, one object), so a body
may only go when *no* retained event names its key: not on any catalog topic, nor on a replay
run's topic. A body held in quarantine (quarantined and not deleted from quarantine) is never
removed, whatever else holds.

The store lists keys without times, and the receiver stores a body *before* it produces the
event naming it, so a body seen unreferenced once may just be arriving. gc therefore
remembers (rocksdict under ``MXGATE_OPS__STATE_PATH/gc``) when it first saw each body
unreferenced and deletes it only on a later run at least ``MXGATE_OPS__GC_GRACE`` seconds
after, if it is still unreferenced. The keys are listed *before* the topics are read, so a body
whose event lands while gc reads is seen referenced.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from confluent_kafka.admin import AdminClient
from rocksdict import Rdict

import schemas
from mxgate import catalog
from mxgate.blobstore import BlobStore, open_store
from mxgate.kafka import base_config, read_events
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

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "listed": self.listed,
            "referenced": self.referenced,
            "quarantined": self.quarantined,
            "waiting": self.waiting,
            "deleted": self.deleted,
        }


def _topics(settings: Settings) -> list[str]:
    p = settings.kafka.topic_prefix
    tiers = len(settings.deliverer.retry_schedule)
    names = [catalog.name(t, p) for t in catalog.all_topics(tiers)]
    # Replay runs' decisions name bodies too (an operator may still be looking at them).
    meta = AdminClient(base_config(settings.kafka)).list_topics(timeout=10)
    replay = catalog.name(catalog.replay_topic(""), p)
    names += sorted(t for t in meta.topics if t.startswith(replay))
    return names


def references(settings: Settings) -> tuple[set[str], set[str]]:
    """(keys any retained event names, keys of bodies held in quarantine)."""
    referenced: set[str] = set()
    held: dict[str, str] = {}  # message_id -> object_key, while in quarantine
    for event in read_events(settings, topics=_topics(settings)):
        # Every event that names a body says so in its object_key field.
        key = getattr(event, "object_key", None)
        if isinstance(key, str) and key:
            referenced.add(key)
        if isinstance(event, schemas.MessageQuarantined) and event.action == "quarantine":
            held[event.message_id] = event.object_key
        elif isinstance(event, schemas.QuarantineDeleted):
            held.pop(event.message_id, None)
    return referenced, set(held.values())


def collect(settings: Settings, dry_run: bool = False, now: float | None = None) -> GcResult:
    """One gc run; with ``dry_run`` nothing is deleted and nothing remembered."""
    return asyncio.run(_collect(settings, open_store(settings.store), dry_run, now))


async def _collect(
    settings: Settings, store: BlobStore, dry_run: bool, now: float | None
) -> GcResult:
    result = GcResult()
    path = settings.ops.state_path / "gc" / (settings.kafka.topic_prefix.strip(".") or "default")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = Rdict(str(path))
    try:
        listed_at = time.time()
        keys = [k async for k in store.iter_keys()]  # before reading topics: see module doc
        result.listed = len(keys)
        referenced, held = await asyncio.to_thread(references, settings)
        t = time.time() if now is None else now
        for key in keys:
            if key in held:
                result.quarantined.append(key)
            if key in referenced or key in held:
                result.referenced += 1
                if not dry_run and key in state:
                    del state[key]  # referenced again: its grace starts over next time
                continue
            first_seen = state.get(key)
            if first_seen is None:
                if not dry_run:
                    state[key] = t
                first_seen = t
            if t - float(first_seen) >= settings.ops.gc_grace:
                # Put again since we listed (same bytes of a new message, whose event we may
                # not have read): wanted after all. Puts refresh the modification time.
                modified = await store.modified_at(key)
                if modified is None:
                    continue  # gone already
                if modified >= listed_at - 1.0:
                    result.waiting.append(key)
                    continue
                if not dry_run:
                    await store.delete(key)
                    del state[key]
                result.deleted.append(key)
            else:
                result.waiting.append(key)
    finally:
        state.close()
        await store.aclose()
    return result
