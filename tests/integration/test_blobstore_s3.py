"""The S3 BlobStore against a real S3-compatible server (S3Proxy on loopback)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import obstore
import pytest
from support.blobstore_contract import BlobStoreContract

from devstack.s3server import S3Server
from mxgate.blobstore import (
    BlobStore,
    BlobUnavailable,
    S3BlobStore,
    open_store,
)
from mxgate.settings import StoreSettings

pytestmark = pytest.mark.integration


def _store_for(server: S3Server, bucket: str, prefix: str = "") -> S3BlobStore:
    """An S3BlobStore on ``bucket`` of ``server``, built the way the roles build it."""
    store = open_store(
        StoreSettings(
            backend="s3",
            s3_bucket=bucket,
            s3_endpoint=server.endpoint_url,
            s3_region=server.region,
            s3_access_key_id=server.access_key,
            s3_secret_access_key=server.secret_key,
            s3_prefix=prefix,
        )
    )
    assert isinstance(store, S3BlobStore)
    return store


class TestS3Contract(BlobStoreContract):
    """S3BlobStore against the shared contract, each test in its own bucket."""

    @pytest.fixture
    async def store(self, s3: S3Server, s3_bucket: str) -> AsyncIterator[S3BlobStore]:
        """A store on a fresh bucket of the session's S3 server."""
        store = _store_for(s3, s3_bucket)
        yield store
        await store.aclose()

    async def corrupt(self, store: BlobStore, key: str, data: bytes) -> None:
        """Overwrite the object with a raw PUT that bypasses the store."""
        assert isinstance(store, S3BlobStore)
        await obstore.put_async(store.store, key, data)


async def test_prefix_keeps_stores_apart(s3: S3Server, s3_bucket: str) -> None:
    """Two prefixes in one bucket are two independent stores."""
    a = _store_for(s3, s3_bucket, prefix="tenant-a")
    b = _store_for(s3, s3_bucket, prefix="tenant-b")
    ref = await a.put(b"only in a")
    assert await a.exists(ref.key)
    assert not await b.exists(ref.key)
    assert [k async for k in b.iter_keys()] == []


@pytest.fixture
def own_s3(tmp_path: Path) -> Iterator[S3Server]:
    """A private S3 server that a test may stop or make read-only."""
    server = S3Server(tmp_path / "s3")
    server.start()
    server.create_bucket(server.bucket)
    try:
        yield server
    finally:
        server.stop()


async def test_stopped_server_is_unavailable(own_s3: S3Server) -> None:
    """With the server down, every operation is BlobUnavailable (so SMTP answers 451)."""
    store = _store_for(own_s3, own_s3.bucket)
    ref = await store.put(b"stored before the outage")
    own_s3.stop()
    with pytest.raises(BlobUnavailable, match="cannot put"):
        await store.put(b"a new message during the outage")
    with pytest.raises(BlobUnavailable):
        await store.get(ref.key)
    with pytest.raises(BlobUnavailable):
        await store.exists(ref.key)
    own_s3.start()
    assert await store.get(ref.key) == b"stored before the outage"


async def test_server_refusing_writes_is_unavailable(own_s3: S3Server) -> None:
    """A store that answers but refuses PUTs is BlobUnavailable; reads still work."""
    store = _store_for(own_s3, own_s3.bucket)
    ref = await store.put(b"stored while writable")
    own_s3.refuse_writes()
    with pytest.raises(BlobUnavailable, match="cannot put"):
        await store.put(b"refused")
    assert await store.get(ref.key) == b"stored while writable"
    # Already stored bytes are PUT again too (refreshing Last-Modified for gc), so a store
    # that refuses writes refuses them as well: the receiver answers 451, never a false 250.
    with pytest.raises(BlobUnavailable, match="cannot put"):
        await store.put(b"stored while writable")
    own_s3.accept_writes()
    await store.put(b"accepted again")


async def _all_objects(store: S3BlobStore) -> list[str]:
    """Every object under the store's prefix, temp uploads included (raw LIST)."""
    return [m["path"] async for page in obstore.list(store.store) for m in page]


async def test_streamed_put_uploads_multipart_then_copies_to_its_key(
    s3: S3Server, s3_bucket: str
) -> None:
    """A body past the spool size goes up as a multipart upload under incoming/, is copied
    to its content key at commit, and no temp object is left (nor after an abort)."""
    store = _store_for(s3, s3_bucket)
    part = b"p" * (3 * 1024 * 1024)
    writer = store.writer()
    for _ in range(4):  # 12 MiB: past the 5 MiB spool, two 5 MiB parts and a tail
        await writer.write(part)
    ref = await writer.commit()
    assert await store.get(ref.key) == part * 4
    aborted = store.writer()
    for _ in range(3):
        await aborted.write(b"q" * (3 * 1024 * 1024))
    await aborted.abort()
    assert await _all_objects(store) == [ref.key]
