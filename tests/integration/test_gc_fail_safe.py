"""`mxgate gc` fails safe: a put racing the delete keeps its body (fs store and a real S3
server), an incomplete read of the topics deletes nothing, and a body held in quarantine stays
after every other topic has forgotten it, until it is released or deleted."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import obstore
import pytest
from confluent_kafka import Producer
from support.bus import Bus

import schemas
from devstack.s3server import S3Server
from mxgate import catalog
from mxgate.blobstore import BlobStamp, FsBlobStore, S3BlobStore
from mxgate.kafka import create_topics, producer_config
from mxgate.settings import Settings
from ops.gc import collect

pytestmark = pytest.mark.integration

BODY = b"Subject: wanted again\r\n\r\nthe same bytes, a new message\r\n"
NOW = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)


def _gc_settings(make_settings: Callable[..., Settings], kafka: Bus, tmp: Path) -> Settings:
    """This test's settings (the super user), with gc's state under ``tmp`` and no grace
    period; the roles are granted their ACLs on its topics."""
    s = make_settings(kafka)
    ops = s.ops.model_copy(update={"state_path": tmp / "ops", "gc_grace": 0.0})
    kafka.grant(s.kafka.topic_prefix, s.kafka.group_prefix, len(s.deliverer.retry_schedule))
    return s.model_copy(update={"ops": ops})


def _as_ops(kafka: Bus, s: Settings) -> Settings:
    """``s`` as gc runs: with the ops principal."""
    return s.model_copy(update={"kafka": kafka.as_role(s.kafka, "ops")})


def _aged(store: FsBlobStore, key: str) -> str:
    """Age a body's file by a minute: put in the past, not around gc's listing."""
    path = store.root / key
    t = path.stat().st_mtime - 60
    os.utime(path, (t, t))
    return key


class PutBeforeDeleteFs(FsBlobStore):
    """An fs store where the receiver puts each body again just before gc deletes it."""

    async def delete_if_unchanged(self, key: str, seen: BlobStamp) -> bool:
        """A new message with the same bytes arrives after gc's listing and check."""
        await self.put(BODY)
        return await super().delete_if_unchanged(key, seen)


class PutBeforeDeleteS3(S3BlobStore):
    """The same on S3."""

    async def delete_if_unchanged(self, key: str, seen: BlobStamp) -> bool:
        """A new message with the same bytes arrives after gc's listing and check."""
        await self.put(BODY)
        return await super().delete_if_unchanged(key, seen)


def _s3(server: S3Server, bucket: str, cls: type[S3BlobStore] = S3BlobStore) -> S3BlobStore:
    return cls(
        bucket,
        endpoint=server.endpoint_url,
        region=server.region,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
    )


def test_put_between_listing_and_delete_keeps_the_body_fs(
    kafka: Bus, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    s = _gc_settings(make_settings, kafka, tmp_path)
    store = PutBeforeDeleteFs(tmp_path / "store")
    key = _aged(store, asyncio.run(store.put(BODY)).key)
    raced = collect(_as_ops(kafka, s), store=store)
    assert not raced.incomplete
    assert raced.deleted == [] and raced.waiting == [key]
    assert asyncio.run(store.get(key)) == BODY
    # The control: with no put racing it, the same orphan goes.
    plain = FsBlobStore(tmp_path / "store")
    _aged(plain, key)
    assert collect(_as_ops(kafka, s), store=plain).deleted == [key]
    assert not asyncio.run(plain.exists(key))


def test_put_between_listing_and_delete_keeps_the_body_s3(
    kafka: Bus,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    s3: S3Server,
    s3_bucket: str,
) -> None:
    s = _gc_settings(make_settings, kafka, tmp_path)
    store = _s3(s3, s3_bucket, PutBeforeDeleteS3)
    key = asyncio.run(store.put(BODY)).key
    asyncio.run(asyncio.sleep(1.1))  # S3 times have 1 s resolution: let the listing be later
    raced = collect(_as_ops(kafka, s), store=store)
    assert not raced.incomplete
    assert raced.deleted == [] and raced.waiting == [key]
    assert asyncio.run(_s3(s3, s3_bucket).get(key)) == BODY
    asyncio.run(asyncio.sleep(1.1))
    assert collect(_as_ops(kafka, s), store=_s3(s3, s3_bucket)).deleted == [key]
    assert not asyncio.run(_s3(s3, s3_bucket).exists(key))


class RacingCheckS3(S3BlobStore):
    """gc's check returns what it saw before a put that lands right after it, so gc goes on
    to DELETE a body that a put has just stored: the worst interleaving."""

    receiver: S3BlobStore
    put_task: asyncio.Task[Any] | None = None

    async def stamp(self, key: str) -> BlobStamp | None:
        """gc's check (inside delete_if_unchanged), then the receiver's put, then the answer."""
        seen = await super().stamp(key)
        if self.put_task is None and seen is not None:
            self.put_task = asyncio.create_task(self.receiver.put(BODY))
            for _ in range(400):  # until the racing PUT has landed
                if (await super().stamp(key)) != seen:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the racing put never landed")
            assert not self.put_task.done(), "the put must wait while gc's intent stands"
        return seen


async def test_put_after_gc_check_is_put_again_after_the_delete_s3(
    s3: S3Server, s3_bucket: str
) -> None:
    store = _s3(s3, s3_bucket, RacingCheckS3)
    assert isinstance(store, RacingCheckS3)
    store.receiver = _s3(s3, s3_bucket)  # another client on the bucket: the receiver's
    key = (await _s3(s3, s3_bucket).put(BODY)).key
    seen = await _s3(s3, s3_bucket).stamp(key)
    assert seen is not None
    await asyncio.sleep(1.1)  # so that the racing put changes Last-Modified
    assert await store.delete_if_unchanged(key, seen), "gc deleted the body it checked"
    assert store.put_task is not None
    await store.put_task
    # The put returned after gc's DELETE: it found the body gone and stored it again.
    assert await _s3(s3, s3_bucket).get(key) == BODY
    listed = [m["path"] async for page in obstore.list(store.store) for m in page]
    assert listed == [key], "gc's intent is removed"


def _produce(s: Settings, records: list[tuple[catalog.Topic, schemas.Event]]) -> None:
    p = Producer(producer_config(s.kafka))
    for topic, event in records:
        key = str(getattr(event, "message_id", "k")).encode()
        p.produce(catalog.name(topic, s.kafka.topic_prefix), key=key, value=_enc(event))
    assert p.flush(30) == 0


def _enc(event: schemas.Event) -> bytes:
    return schemas.encode_event(event)


def _quarantined(mid: str, key: str) -> schemas.MessageQuarantined:
    return schemas.MessageQuarantined(
        message_id=mid, tenant="t1", quarantined_at=NOW, action="quarantine",
        reasons=("av:eicar",), mail_from="a@sender.test", rcpt_to=("b@example.test",),
        object_key=key, size=1,
    )  # fmt: skip


def _until_leaders_settle(ops: Settings, store: FsBlobStore) -> None:
    """Fresh topics may answer "not leader" for a moment (which gc, run with ``ops``, rightly
    reads as an incomplete read); wait for a complete dry run so only this test's open
    transaction counts."""
    deadline = time.monotonic() + 60
    while (probe := collect(ops, dry_run=True, quiet=3.0, store=store)).incomplete:
        assert time.monotonic() < deadline, probe.incomplete
        time.sleep(1)


def test_incomplete_read_deletes_nothing(
    kafka: Bus, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    s = _gc_settings(make_settings, kafka, tmp_path)
    create_topics(s.kafka, catalog.all_topics(len(s.deliverer.retry_schedule)))
    store = FsBlobStore(tmp_path / "store")
    _until_leaders_settle(_as_ops(kafka, s), store)
    orphan = _aged(store, asyncio.run(store.put(b"nobody names me\r\n")).key)
    # A transaction left open on the scanned topic: a read_committed reader cannot get past
    # it, so gc cannot know what the rest of that partition names.
    p = Producer(producer_config(s.kafka, transactional_id=f"{s.kafka.topic_prefix}open"))
    p.init_transactions(30)
    p.begin_transaction()
    event = schemas.QuarantineDeleted(
        message_id="m-open", tenant="t1", deleted_at=NOW, deleted_by="x", reason=""
    )
    p.produce(catalog.name(catalog.SCANNED, s.kafka.topic_prefix), key=b"m-open", value=_enc(event))
    assert p.flush(30) == 0
    short = collect(_as_ops(kafka, s), quiet=3.0, store=store)
    assert short.deleted == [] and short.waiting == []
    assert short.incomplete and all(catalog.SCANNED.name in why for why in short.incomplete)
    assert short.as_dict()["complete"] is False
    assert asyncio.run(store.exists(orphan))
    # Once the transaction ends the read is whole again, and the orphan goes.
    p.commit_transaction(30)
    done = collect(_as_ops(kafka, s), quiet=30.0, store=store)
    assert done.incomplete == [] and done.deleted == [orphan]


def test_quarantined_body_stays_until_released_or_deleted(
    kafka: Bus, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # The quarantine topic is kept forever (the rest of the catalog expires).
    assert catalog.QUARANTINE.topic_config()["retention.ms"] == "-1"
    assert catalog.QUARANTINE.topic_config()["cleanup.policy"] == "delete"
    s = _gc_settings(make_settings, kafka, tmp_path)
    create_topics(s.kafka, catalog.all_topics(len(s.deliverer.retry_schedule)))
    store = FsBlobStore(tmp_path / "store")
    released = _aged(store, asyncio.run(store.put(b"held, then released\r\n")).key)
    deleted = _aged(store, asyncio.run(store.put(b"held, then deleted\r\n")).key)
    orphan = _aged(store, asyncio.run(store.put(b"never held\r\n")).key)
    # Only the quarantine topic still names the two held bodies: what is left once every other
    # topic's retention has passed.
    _produce(s, [(catalog.QUARANTINE, _quarantined("m1", released)),
                 (catalog.QUARANTINE, _quarantined("m2", deleted))])  # fmt: skip
    first = collect(_as_ops(kafka, s), store=store)
    assert first.deleted == [orphan], first.as_dict()
    assert sorted(first.quarantined) == sorted([released, deleted]) and first.referenced == 2
    assert collect(_as_ops(kafka, s), store=store).deleted == []  # held: kept run after run
    _produce(
        s,
        [
            (catalog.QUARANTINE, schemas.QuarantineReleased(
                message_id="m1", tenant="t1", released_at=NOW, released_by="admin",
                reason="expected", rcpt_to=("b@example.test",))),
            (catalog.QUARANTINE, schemas.QuarantineDeleted(
                message_id="m2", tenant="t1", deleted_at=NOW, deleted_by="admin", reason="")),
        ],
    )  # fmt: skip
    # Released or deleted, and named by no other retained event: the bodies go.
    closed = collect(_as_ops(kafka, s), store=store)
    assert closed.quarantined == [] and sorted(closed.deleted) == sorted([released, deleted])
    assert not asyncio.run(store.exists(released)) and not asyncio.run(store.exists(deleted))
