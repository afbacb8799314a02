"""The filesystem BlobStore: the shared contract, plus on-disk and failure specifics."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.blobstore_contract import BlobStoreContract

from mxgate.blobstore import (
    BlobCorrupt,
    BlobStore,
    BlobUnavailable,
    FsBlobStore,
    InvalidBlobKey,
    S3BlobStore,
    key_for,
    open_store,
    sha256_of_key,
)
from mxgate.settings import StoreSettings


def _files(root: Path) -> list[Path]:
    """Every regular file under ``root`` (temp files included; gc's directory locks not)."""
    return [p for p in root.rglob("*") if p.is_file() and p.name != ".lock"]


class TestFsContract(BlobStoreContract):
    """FsBlobStore against the shared contract."""

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[FsBlobStore]:
        """A store in a fresh directory."""
        store = FsBlobStore(tmp_path / "store")
        yield store
        await store.aclose()

    async def corrupt(self, store: BlobStore, key: str, data: bytes) -> None:
        """Overwrite the file directly."""
        assert isinstance(store, FsBlobStore)
        (store.root / key).write_bytes(data)


def test_key_layout() -> None:
    """Keys fan out on the digest's first two bytes and map back to the digest."""
    digest = hashlib.sha256(b"abc").hexdigest()
    key = key_for(digest)
    assert key == f"sha256/{digest[:2]}/{digest[2:4]}/{digest}"
    assert sha256_of_key(key) == digest
    assert key_for(digest.upper()) == key
    with pytest.raises(InvalidBlobKey):
        key_for("abc")


async def test_file_layout_and_no_temp_files_left(tmp_path: Path) -> None:
    """The body is one file at root/key with exactly the bytes received (beside its
    directory's lock file, which puts and gc share)."""
    store = FsBlobStore(tmp_path)
    ref = await store.put(b"exact bytes\r\n")
    assert (tmp_path / ref.key).read_bytes() == b"exact bytes\r\n"
    body = tmp_path / ref.key
    assert _files(tmp_path) == [body]
    assert (body.parent / ".lock").is_file()


async def test_existing_object_is_not_rewritten(tmp_path: Path) -> None:
    """Write once: a second put of the same bytes keeps the stored file (same inode, same
    bytes); only its mtime moves, which tells gc the body is wanted again."""
    store = FsBlobStore(tmp_path)
    ref = await store.put(b"written once")
    path = tmp_path / ref.key
    os.utime(path, (1_000_000, 1_000_000))
    before = path.stat()
    await store.put(b"written once")
    after = path.stat()
    assert after.st_ino == before.st_ino
    assert path.read_bytes() == b"written once"
    assert after.st_mtime > before.st_mtime


async def test_corrupt_file_of_the_right_size_is_replaced(tmp_path: Path) -> None:
    """A file damaged in place keeps its size; put and a streamed put check its hash and
    replace it, instead of trusting it and answering 250 for unreadable bytes."""
    store = FsBlobStore(tmp_path)
    body = b"Subject: x\r\n\r\noriginal body\r\n"
    ref = await store.put(body)
    path = tmp_path / ref.key
    path.write_bytes(body.replace(b"original", b"0riginal"))  # same size, other bytes
    with pytest.raises(BlobCorrupt):
        await store.get(ref.key)
    assert await store.put(body) == ref
    assert await store.get(ref.key) == body
    path.write_bytes(body.replace(b"body", b"bodY"))
    writer = store.writer()
    await writer.write(body)
    assert await writer.commit() == ref
    assert await store.get(ref.key) == body
    assert [p for p in _files(tmp_path) if p != path] == []  # no temp files left


async def test_streamed_put_keeps_an_intact_file(tmp_path: Path) -> None:
    """Write once holds for streamed puts too: an intact file is kept (same inode)."""
    store = FsBlobStore(tmp_path)
    ref = await store.put(b"kept")
    before = (tmp_path / ref.key).stat().st_ino
    writer = store.writer()
    await writer.write(b"kept")
    assert await writer.commit() == ref
    assert (tmp_path / ref.key).stat().st_ino == before
    assert _files(tmp_path) == [tmp_path / ref.key]


async def test_stale_temp_files_are_swept(tmp_path: Path) -> None:
    """A temp file a crashed receiver left (older than a day) goes on the next stream."""
    incoming = tmp_path / ".incoming"
    incoming.mkdir()
    stale, fresh = incoming / "old.tmp", incoming / "new.tmp"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(stale, (1_000_000, 1_000_000))
    writer = FsBlobStore(tmp_path).writer()
    await writer.write(b"body")
    await writer.commit()
    assert sorted(incoming.iterdir()) == [fresh]


async def test_unwritable_store_is_unavailable(tmp_path: Path) -> None:
    """A store that cannot write (its parent is a regular file) is BlobUnavailable."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    store = FsBlobStore(blocker / "store")
    with pytest.raises(BlobUnavailable, match="cannot store sha256/"):
        await store.put(b"message")


async def test_unreadable_store_is_unavailable(tmp_path: Path) -> None:
    """A key whose path is a directory (an OS error, not absence) is BlobUnavailable."""
    store = FsBlobStore(tmp_path)
    key = key_for(hashlib.sha256(b"x").hexdigest())
    (tmp_path / key).mkdir(parents=True)
    with pytest.raises(BlobUnavailable, match="EISDIR"):
        await store.get(key)


async def test_concurrent_puts_of_same_body(tmp_path: Path) -> None:
    """Racing puts of one body all succeed and leave one intact file."""
    store = FsBlobStore(tmp_path)
    refs = await asyncio.gather(*(store.put(b"raced") for _ in range(8)))
    assert len(set(refs)) == 1
    assert await store.get(refs[0].key) == b"raced"
    assert [k async for k in store.iter_keys()] == [refs[0].key]


def test_open_store_picks_backend(tmp_path: Path) -> None:
    """open_store returns the backend the settings name."""
    fs = open_store(StoreSettings(backend="fs", path=tmp_path))
    assert isinstance(fs, FsBlobStore) and fs.root == tmp_path
    s3 = open_store(StoreSettings(backend="s3", s3_endpoint="http://127.0.0.1:1"))
    assert isinstance(s3, S3BlobStore)
    assert isinstance(fs, BlobStore) and isinstance(s3, BlobStore)


@pytest.fixture(scope="module")
def prop_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for all property-test examples (module scope: hypothesis-safe)."""
    return tmp_path_factory.mktemp("prop")


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=4096), other=st.binary(max_size=4096))
def test_any_bytes_round_trip_and_key_is_content(
    prop_root: Path, data: bytes, other: bytes
) -> None:
    """Arbitrary bytes round-trip exactly; the key depends on the content alone."""

    async def scenario() -> None:
        store = FsBlobStore(prop_root)
        ref = await store.put(data)
        assert ref.key == key_for(hashlib.sha256(data).hexdigest())
        assert ref.size == len(data)
        assert await store.get(ref.key) == data
        assert await store.put(data) == ref
        other_ref = await store.put(other)
        assert (other_ref.key == ref.key) == (other == data)

    asyncio.run(scenario())


async def test_gc_delete_keeps_a_body_put_since_its_stamp(tmp_path: Path) -> None:
    """delete_if_unchanged deletes only the body as gc saw it: a put since (even within one
    clock tick: puts move the mtime strictly forward) keeps it."""
    store = FsBlobStore(tmp_path)
    ref = await store.put(b"orphan?")
    seen = await store.stamp(ref.key)
    assert seen is not None
    await store.put(b"orphan?")  # a new message with the same bytes
    assert not await store.delete_if_unchanged(ref.key, seen)
    assert await store.get(ref.key) == b"orphan?"
    now = await store.stamp(ref.key)
    assert now is not None and now != seen
    assert await store.delete_if_unchanged(ref.key, now)
    assert not await store.exists(ref.key)
    assert not await store.delete_if_unchanged(ref.key, now)  # gone: nothing to delete
    assert await store.stamp(ref.key) is None


async def test_put_while_gc_deletes_leaves_the_body(tmp_path: Path) -> None:
    """A put that arrives while gc is between its check and its unlink waits for the unlink
    and then writes the body anew: when the put returns, the body is there."""
    from mxgate.blobstore import _dir_lock

    store = FsBlobStore(tmp_path)
    ref = await store.put(b"racing body")
    path = tmp_path / ref.key
    with _dir_lock(path.parent, exclusive=True):  # gc: checked the stamp, about to unlink
        put = asyncio.create_task(store.put(b"racing body"))
        await asyncio.sleep(0.3)
        assert not put.done(), "a put must wait for gc's check-and-delete"
        path.unlink()  # gc's delete
    assert await put == ref
    assert await store.get(ref.key) == b"racing body"


async def test_put_replaces_a_damaged_file_of_the_right_size(tmp_path: Path) -> None:
    """An existing file is trusted only when its hash matches, not for its size alone."""
    store = FsBlobStore(tmp_path)
    ref = await store.put(b"original")
    (tmp_path / ref.key).write_bytes(b"0riginal")
    assert await store.put(b"original") == ref
    assert await store.get(ref.key) == b"original"
