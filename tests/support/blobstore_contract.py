"""The BlobStore contract: one suite that every backend's test class inherits.

A backend's test module subclasses ``BlobStoreContract`` as ``Test…``, provides a ``store``
fixture and implements ``corrupt`` (write raw bytes under a key, bypassing the store's
own checks), so both backends are held to the same promises.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from mxgate.blobstore import (
    BlobCorrupt,
    BlobMissing,
    BlobRef,
    BlobStore,
    InvalidBlobKey,
    key_for,
)


class BlobStoreContract:
    """Tests every BlobStore must pass. Subclasses supply ``store`` and ``corrupt``."""

    async def corrupt(self, store: BlobStore, key: str, data: bytes) -> None:
        """Put ``data`` under ``key`` behind the store's back (simulated bit rot)."""
        raise NotImplementedError

    async def test_round_trip(self, store: BlobStore) -> None:
        """What goes in comes out byte for byte, under the key its SHA-256 names."""
        body = b"Received: from a\r\nSubject: hi\r\n\r\nbody\x00\xff\r\n.\r\n"
        ref = await store.put(body)
        digest = hashlib.sha256(body).hexdigest()
        assert ref == BlobRef(key=key_for(digest), sha256=digest, size=len(body))
        assert await store.exists(ref.key)
        assert await store.get(ref.key) == body

    async def test_put_is_idempotent(self, store: BlobStore) -> None:
        """The same bytes twice give the same ref and one object."""
        first = await store.put(b"same message")
        second = await store.put(b"same message")
        assert first == second
        assert [k async for k in store.iter_keys()].count(first.key) == 1

    async def test_put_again_refreshes_modified_at(self, store: BlobStore) -> None:
        # Garbage collection spares a body put again after it listed the store (ops.gc).
        ref = await store.put(b"wanted again")
        first = await store.modified_at(ref.key)
        assert first is not None
        await asyncio.sleep(1.1)  # S3's Last-Modified has one-second resolution
        await store.put(b"wanted again")
        again = await store.modified_at(ref.key)
        assert again is not None and again > first
        assert await store.modified_at(key_for("0" * 64)) is None

    async def test_empty_body(self, store: BlobStore) -> None:
        """A zero-byte body is a valid object."""
        ref = await store.put(b"")
        assert ref.size == 0
        assert await store.get(ref.key) == b""

    async def test_missing_key(self, store: BlobStore) -> None:
        """A key never written is BlobMissing on get and False on exists."""
        key = key_for(hashlib.sha256(b"never stored").hexdigest())
        assert not await store.exists(key)
        with pytest.raises(BlobMissing):
            await store.get(key)

    async def test_corrupt_object_is_detected(self, store: BlobStore) -> None:
        """Bytes that no longer match the key's hash are BlobCorrupt, never returned."""
        ref = await store.put(b"original message body")
        await self.corrupt(store, ref.key, b"original message bodY")
        with pytest.raises(BlobCorrupt):
            await store.get(ref.key)

    async def test_delete(self, store: BlobStore) -> None:
        """Delete removes the object; deleting again is not an error."""
        ref = await store.put(b"to be deleted")
        await store.delete(ref.key)
        assert not await store.exists(ref.key)
        await store.delete(ref.key)
        with pytest.raises(BlobMissing):
            await store.get(ref.key)

    async def test_iter_keys_lists_every_object(self, store: BlobStore) -> None:
        """iter_keys yields exactly the stored keys."""
        refs = [await store.put(f"message {i}".encode()) for i in range(5)]
        assert sorted([k async for k in store.iter_keys()]) == sorted(r.key for r in refs)

    async def test_invalid_keys_are_rejected(self, store: BlobStore) -> None:
        """Keys the store did not make (path tricks, forged fan-out) are refused."""
        digest = hashlib.sha256(b"x").hexdigest()
        for bad in ["../etc/passwd", f"sha256/00/00/{digest}", digest, "sha256/ab/cd/xyz"]:
            with pytest.raises(InvalidBlobKey):
                await store.get(bad)

    async def test_streamed_body_gets_the_same_ref_as_put(self, store: BlobStore) -> None:
        """A body written in chunks ends under the key its SHA-256 names, like ``put``."""
        chunks = [b"Subject: streamed\r\n\r\n", b"a" * 70_000, b"", b"tail\r\n"]
        body = b"".join(chunks)
        writer = store.writer()
        for chunk in chunks:
            await writer.write(chunk)
        assert writer.size == len(body)
        ref = await writer.commit()
        digest = hashlib.sha256(body).hexdigest()
        assert ref == BlobRef(key=key_for(digest), sha256=digest, size=len(body))
        assert await store.get(ref.key) == body
        await writer.abort()  # a no-op after commit
        assert await store.get(ref.key) == body
        assert await store.put(body) == ref

    async def test_large_streamed_body(self, store: BlobStore) -> None:
        """Past the backend's spool size (S3: multipart upload, then copy to the key)."""
        block = bytes(range(256)) * 4096  # 1 MiB
        writer = store.writer()
        for i in range(7):
            await writer.write(block[i:] + block[:i])
        ref = await writer.commit()
        body = b"".join(block[i:] + block[:i] for i in range(7))
        assert ref.sha256 == hashlib.sha256(body).hexdigest() and ref.size == len(body)
        assert await store.get(ref.key) == body
        assert [k async for k in store.iter_keys()] == [ref.key]

    async def test_aborted_stream_leaves_nothing(self, store: BlobStore) -> None:
        """An aborted body (refused, client gone) is not stored and lists no key."""
        for size in (10, 6 * 1024 * 1024):
            writer = store.writer()
            await writer.write(b"z" * size)
            await writer.abort()
            await writer.abort()
        assert [k async for k in store.iter_keys()] == []

    async def test_empty_streamed_body(self, store: BlobStore) -> None:
        """A stream with no chunks is the empty body."""
        ref = await store.writer().commit()
        assert ref.size == 0 and await store.get(ref.key) == b""
