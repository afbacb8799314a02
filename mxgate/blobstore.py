"""The object store for raw messages: written once, content-addressed, checked on every read.

A message body is stored under ``key_for(sha256(body))`` exactly as received and never
rewritten. ``put`` returns only once the body is durable (fsync'd file and directory, or an
acknowledged S3 PUT), which is what lets the receiver answer 250. ``get`` recomputes the
SHA-256 named by the key, so a damaged object is an error (``BlobCorrupt``), never mail.

A body can also be streamed: ``writer()`` gives a ``BlobWriter`` that takes chunks as they
arrive, hashes them incrementally and moves the result under its key at ``commit`` (the key is
known only then), with the same durability as ``put``. The receiver uses it so that no body is
ever held whole in memory.

Two backends share the ``BlobStore`` protocol: ``FsBlobStore`` (a directory, the embedded
default) and ``S3BlobStore`` (any S3-compatible store, via obstore). ``open_store`` picks
one from ``StoreSettings``.

Garbage collection (ops.gc) deletes a body only with ``delete_if_unchanged(key, seen)``: the
delete happens only if no put touched the body since gc took its ``BlobStamp``, and a put that
runs while gc deletes still leaves the body stored when it returns. How each backend closes
that race is told at its ``delete_if_unchanged``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import S3Store

from mxgate.settings import StoreSettings

__all__ = [
    "KEY_PREFIX",
    "BlobCorrupt",
    "BlobError",
    "BlobMissing",
    "BlobRef",
    "BlobStamp",
    "BlobStore",
    "BlobUnavailable",
    "BlobWriter",
    "FsBlobStore",
    "InvalidBlobKey",
    "S3BlobStore",
    "key_for",
    "open_store",
    "sha256_of_key",
]

KEY_PREFIX = "sha256"
"""First path segment of every key; names the hash so another could be added later."""

_KEY_RE = re.compile(r"^sha256/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})$")
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
# Above this size hashing moves off the event loop (hashlib releases the GIL for it).
_HASH_IN_THREAD = 256 * 1024


# -- keys and references --------------------------------------------------------------------


@dataclass(frozen=True)
class BlobRef:
    """Where a stored body is and what it is: key, SHA-256 (hex) and size in bytes."""

    key: str
    sha256: str
    size: int


@dataclass(frozen=True)
class BlobStamp:
    """What the last put of a body left behind, to tell later whether it was put again.

    ``token`` changes with every put (fs: inode and mtime in ns, which every put moves
    forward; S3: ETag and Last-Modified); ``modified_at`` is that put's time (epoch seconds).
    """

    modified_at: float
    token: str


class BlobError(Exception):
    """Base class of every object-store error."""


class BlobMissing(BlobError):
    """No object under that key."""


class BlobCorrupt(BlobError):
    """The object's bytes do not hash to the SHA-256 its key names."""


class BlobUnavailable(BlobError):
    """The store is down, unreachable or refusing writes; the message gives the reason."""


class InvalidBlobKey(BlobError, ValueError):
    """A string that is not a key this module makes (``sha256/ab/cd/<64 hex>``)."""


def key_for(sha256_hex: str) -> str:
    """The key of a body whose SHA-256 is ``sha256_hex``: ``sha256/ab/cd/abcd…``.

    Two levels of two hex digits fan out to 65,536 directories, so no directory (or S3
    listing page) grows too large.
    """
    digest = sha256_hex.lower()
    if not _HEX_RE.match(digest):
        raise InvalidBlobKey(f"not a SHA-256 hex digest: {sha256_hex!r}")
    return f"{KEY_PREFIX}/{digest[:2]}/{digest[2:4]}/{digest}"


def sha256_of_key(key: str) -> str:
    """The SHA-256 hex digest a key names; ``InvalidBlobKey`` if it is not one of ours."""
    match = _KEY_RE.match(key)
    # The fan-out directories must be the digest's own first bytes, or the key is forged.
    if match is None or match.group(3)[:4] != match.group(1) + match.group(2):
        raise InvalidBlobKey(f"not a blob key: {key!r}")
    return match.group(3)


def _digest(data: bytes) -> str:
    """SHA-256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


async def _digest_async(data: bytes) -> str:
    """SHA-256 of ``data``, in a worker thread when it is big enough to stall the loop."""
    if len(data) > _HASH_IN_THREAD:
        return await asyncio.to_thread(_digest, data)
    return _digest(data)


def _verify(key: str, data: bytes) -> None:
    """Raise ``BlobCorrupt`` unless ``data`` hashes to the digest named by ``key``."""
    expected = sha256_of_key(key)
    actual = _digest(data)
    if actual != expected:
        raise BlobCorrupt(f"{key}: content hashes to {actual} ({len(data)} bytes)")


# -- the protocol -------------------------------------------------------------------------


class BlobWriter(Protocol):
    """One body written as it arrives; its key (the SHA-256) is known only at ``commit``.

    Chunks go to a temporary place (a file in the store's directory, an upload under a
    temporary key) while the hash is computed incrementally; nothing is held whole in memory.
    """

    @property
    def size(self) -> int:
        """Bytes written so far."""
        ...

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk``."""
        ...

    async def commit(self) -> BlobRef:
        """Move the body under its content key; durable when this returns (as ``put``)."""
        ...

    async def abort(self) -> None:
        """Drop what was written (no-op after ``commit``; safe to call twice)."""
        ...


@runtime_checkable
class BlobStore(Protocol):
    """Write-once, content-addressed storage of raw message bodies."""

    async def put(self, data: bytes) -> BlobRef:
        """Store ``data``; durable when this returns. Same bytes, same key, no rewrite."""
        ...

    def writer(self) -> BlobWriter:
        """A new streaming put: write the body in chunks, then ``commit`` (or ``abort``)."""
        ...

    async def get(self, key: str) -> bytes:
        """The bytes under ``key``, verified against it; ``BlobMissing`` / ``BlobCorrupt``."""
        ...

    async def exists(self, key: str) -> bool:
        """True when an object is stored under ``key`` (its content is not checked)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object under ``key``; deleting a missing key is not an error."""
        ...

    def iter_keys(self) -> AsyncIterator[str]:
        """Every key in the store, in no promised order (for garbage collection)."""
        ...

    async def modified_at(self, key: str) -> float | None:
        """When the object under ``key`` was last put (epoch seconds), or None if absent.

        A put of bytes already stored refreshes it, so garbage collection can tell a body
        that became referenced again while it was deciding (see ops.gc).
        """
        ...

    async def stamp(self, key: str) -> BlobStamp | None:
        """The ``BlobStamp`` of the object under ``key``, or None when there is none."""
        ...

    async def delete_if_unchanged(self, key: str, seen: BlobStamp) -> bool:
        """Delete the object under ``key`` only if it still carries the stamp ``seen``.

        True when this call deleted it; False when it is gone already or was put since
        ``seen`` (kept). A put running at the same time still leaves the body stored when
        it returns, whatever the interleaving.
        """
        ...

    async def aclose(self) -> None:
        """Release the store's resources."""
        ...


# -- filesystem backend ---------------------------------------------------------------------


def _os_reason(exc: OSError) -> str:
    """``ENOSPC (No space left on device): /path`` — the errno name matters to ops."""
    name = errno.errorcode.get(exc.errno or 0, "E?")
    where = f": {exc.filename}" if exc.filename else ""
    return f"{name} ({exc.strerror or exc}){where}"


def _fsync_dir(path: Path) -> None:
    """fsync a directory, so a new or renamed entry in it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_LOCK_NAME = ".lock"  # per leaf directory; never a key (iter_keys skips it)


def _fs_token(st: os.stat_result) -> str:
    """A file's stamp token: inode (a rewrite makes a new one) and mtime in ns (moved on by
    every put of the same bytes)."""
    return f"{st.st_ino}:{st.st_mtime_ns}"


@contextlib.contextmanager
def _dir_lock(directory: Path, *, exclusive: bool) -> Iterator[None]:
    """An flock on ``directory``'s lock file: shared for puts, exclusive for gc's delete.

    Puts never wait for each other; gc's check-and-unlink waits for puts in flight and they
    for it. The kernel drops the lock when its holder dies, so a crashed gc blocks nothing.
    """
    fd = os.open(directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def _intact(path: Path, ref: BlobRef) -> bool:
    """True when ``path`` holds exactly the body ``ref`` names (size, then SHA-256).

    The size alone is not trusted: a file damaged in place (bit rot, a bad disk, a manual
    edit) keeps its size, and trusting it would make every later put of that body a 250
    for bytes nobody can read back. A corrupt file is then replaced by the caller.
    """
    try:
        if path.stat().st_size != ref.size:
            return False
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(_READ_CHUNK):
                h.update(chunk)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return h.hexdigest() == ref.sha256


_READ_CHUNK = 1024 * 1024


def _touch_forward(path: Path) -> None:
    """Move ``path``'s mtime strictly forward (at least 1 ns past the old one, even within one
    clock tick), so gc's stamp always sees that the body is wanted again."""
    old = path.stat().st_mtime_ns
    now = max(time.time_ns(), old + 1)
    os.utime(path, ns=(now, now))


_INCOMING = ".incoming"
# A temp file older than this is from a crashed put (no DATA lasts a day): swept once per store.
_STALE_TEMP = 24 * 3600.0


class _FsWriter:
    """A :class:`BlobWriter` for :class:`FsBlobStore`: temp file, fsync, rename into place."""

    def __init__(self, store: FsBlobStore) -> None:
        self._store = store
        self._hash = hashlib.sha256()
        self._fh: Any = None
        self._tmp: Path | None = None
        self._size = 0
        self._done = False

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk`` to the temp file (in a worker thread) and to the hash."""
        if chunk:
            await asyncio.to_thread(self._write_sync, chunk)

    def _open_sync(self) -> None:
        incoming = self._store.root / _INCOMING
        try:
            self._store._makedirs(incoming)
            self._store._sweep_incoming(incoming)
            self._tmp = incoming / f".{secrets.token_hex(12)}.tmp"  # dot: never taken for a body
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            self._fh = open(fd, "wb")  # closed by commit or abort
        except OSError as exc:
            raise BlobUnavailable(f"cannot store a body: {_os_reason(exc)}") from exc

    def _write_sync(self, chunk: bytes) -> None:
        if self._done:
            raise BlobUnavailable("write after commit or abort")
        if self._fh is None:
            self._open_sync()
        try:
            self._fh.write(chunk)
        except OSError as exc:
            raise BlobUnavailable(f"cannot store a body: {_os_reason(exc)}") from exc
        self._hash.update(chunk)
        self._size += len(chunk)

    async def commit(self) -> BlobRef:
        """fsync the temp file, rename it to its key, fsync the directory."""
        return await asyncio.to_thread(self._commit_sync)

    def _commit_sync(self) -> BlobRef:
        if self._done:
            raise BlobUnavailable("commit after commit or abort")
        if self._fh is None:
            self._open_sync()  # an empty body is a valid object
        digest = self._hash.hexdigest()
        ref = BlobRef(key=key_for(digest), sha256=digest, size=self._size)
        path = self._store.root / ref.key
        assert self._tmp is not None
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
            self._store._makedirs(path.parent)
            # Shared with other puts; gc's check-and-delete of this directory waits for it.
            with _dir_lock(path.parent, exclusive=False):
                if _intact(path, ref):
                    # Write once: keep the stored file, move its mtime on for gc.
                    _touch_forward(path)
                    self._tmp.unlink()
                else:
                    os.replace(self._tmp, path)  # also replaces a corrupt copy
                    _fsync_dir(path.parent)
        except OSError as exc:
            self._abort_sync()
            raise BlobUnavailable(f"cannot store {ref.key}: {_os_reason(exc)}") from exc
        self._done = True
        return ref

    async def abort(self) -> None:
        """Close and remove the temp file."""
        if not self._done:
            await asyncio.to_thread(self._abort_sync)

    def _abort_sync(self) -> None:
        self._done = True
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.unlink()


class FsBlobStore:
    """Bodies as files under ``root``: ``root/sha256/ab/cd/<digest>``.

    A put writes a temp file in the target directory, fsyncs it, renames it into place and
    fsyncs the directory; a streamed put (``writer``) spools to ``root/.incoming`` and does the
    same at commit. An existing file is trusted only once its hash is checked (a damaged one
    is replaced). All file IO runs in worker threads; the event loop never blocks. Puts and
    gc's deletes take an flock on the leaf directory's ``.lock`` file (see
    ``delete_if_unchanged``), so every process using the store must see the same locks: one
    host's local filesystem (or one whose flock is shared, as NFSv4's is).
    """

    def __init__(self, root: Path) -> None:
        """Use ``root`` (created on first put) as the store's directory."""
        self.root = Path(root)
        self._swept = False

    def _sweep_incoming(self, incoming: Path) -> None:
        """Once per store object: remove temp files a crashed process left behind."""
        if self._swept:
            return
        self._swept = True
        cutoff = time.time() - _STALE_TEMP
        with contextlib.suppress(OSError):
            for entry in os.scandir(incoming):
                with contextlib.suppress(OSError):
                    if entry.is_file() and entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)

    def _path(self, key: str) -> Path:
        """The file of ``key`` (validated, so no key escapes ``root``)."""
        sha256_of_key(key)
        return self.root / key

    def writer(self) -> BlobWriter:
        """A streaming put through a temp file under ``root/.incoming`` (same filesystem, so
        the final rename is atomic)."""
        return _FsWriter(self)

    async def put(self, data: bytes) -> BlobRef:
        """Write ``data`` durably unless an intact copy is already there; return its ref."""
        # One thread hop does hash + write: a future group commit would batch here.
        return await asyncio.to_thread(self._put_sync, bytes(data))

    def _put_sync(self, data: bytes) -> BlobRef:
        """Blocking part of ``put``."""
        digest = _digest(data)
        ref = BlobRef(key=key_for(digest), sha256=digest, size=len(data))
        path = self.root / ref.key
        try:
            self._makedirs(path.parent)
            # Shared with other puts; gc's check-and-delete of this directory waits for it.
            with _dir_lock(path.parent, exclusive=False):
                if _intact(path, ref):
                    # Write once: the file is this content already; move its mtime on for gc.
                    _touch_forward(path)
                    return ref
                self._write_new(path, digest, data)
        except OSError as exc:
            raise BlobUnavailable(f"cannot store {ref.key}: {_os_reason(exc)}") from exc
        return ref

    def _write_new(self, path: Path, digest: str, data: bytes) -> None:
        """Write ``data`` to a temp file, fsync, rename onto ``path``, fsync the directory."""
        tmp = path.parent / f".{digest}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            with open(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(path.parent)

    def _makedirs(self, directory: Path) -> None:
        """Create ``directory`` and missing parents, fsyncing each parent that changed."""
        if directory.is_dir():
            return
        self._makedirs(directory.parent)
        try:
            directory.mkdir()
        except FileExistsError:
            if not directory.is_dir():
                raise
            return
        _fsync_dir(directory.parent)

    async def get(self, key: str) -> bytes:
        """Read and verify the body under ``key``."""
        path = self._path(key)
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise BlobMissing(key) from exc
        except OSError as exc:
            raise BlobUnavailable(f"cannot read {key}: {_os_reason(exc)}") from exc
        await asyncio.to_thread(_verify, key, data)
        return data

    async def modified_at(self, key: str) -> float | None:
        """The file's mtime (refreshed by every put of the same bytes), or None."""
        path = self._path(key)
        try:
            st = await asyncio.to_thread(path.stat)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise BlobUnavailable(f"cannot stat {key}: {_os_reason(exc)}") from exc
        return st.st_mtime

    async def stamp(self, key: str) -> BlobStamp | None:
        """The file's inode and mtime, or None when there is none."""
        path = self._path(key)
        try:
            st = await asyncio.to_thread(path.stat)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise BlobUnavailable(f"cannot stat {key}: {_os_reason(exc)}") from exc
        return BlobStamp(st.st_mtime, _fs_token(st))

    async def delete_if_unchanged(self, key: str, seen: BlobStamp) -> bool:
        """Unlink the file only if its inode and mtime are still ``seen``'s.

        The check and the unlink hold the directory's lock exclusively, and every put holds
        it shared while it checks for, refreshes or writes the file: a put either finished
        before (and moved the mtime on, so the file is kept) or starts after the unlink (and
        writes the file anew). There is no window between check and delete.
        """
        path = self._path(key)

        def _delete() -> bool:
            try:
                with _dir_lock(path.parent, exclusive=True):
                    try:
                        st = path.stat()
                    except FileNotFoundError:
                        return False
                    if _fs_token(st) != seen.token:
                        return False
                    path.unlink()
                    _fsync_dir(path.parent)
                    return True
            except (FileNotFoundError, NotADirectoryError):
                return False  # no directory: nothing stored there

        try:
            return await asyncio.to_thread(_delete)
        except OSError as exc:
            raise BlobUnavailable(f"cannot delete {key}: {_os_reason(exc)}") from exc

    async def exists(self, key: str) -> bool:
        """True when a file is stored under ``key``."""
        path = self._path(key)
        try:
            await asyncio.to_thread(path.stat)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise BlobUnavailable(f"cannot stat {key}: {_os_reason(exc)}") from exc
        return True

    async def delete(self, key: str) -> None:
        """Remove the file under ``key`` durably; a missing key is fine."""
        path = self._path(key)

        def _delete() -> None:
            try:
                path.unlink()
            except (FileNotFoundError, NotADirectoryError):
                return
            _fsync_dir(path.parent)

        try:
            await asyncio.to_thread(_delete)
        except OSError as exc:
            raise BlobUnavailable(f"cannot delete {key}: {_os_reason(exc)}") from exc

    async def iter_keys(self) -> AsyncIterator[str]:
        """Every stored key; lists one fan-out directory per thread hop."""
        top = self.root / KEY_PREFIX

        def _listdir(d: Path) -> list[str]:
            try:
                return sorted(os.listdir(d))
            except (FileNotFoundError, NotADirectoryError):
                return []

        try:
            for a in await asyncio.to_thread(_listdir, top):
                for b in await asyncio.to_thread(_listdir, top / a):
                    for name in await asyncio.to_thread(_listdir, top / a / b):
                        key = f"{KEY_PREFIX}/{a}/{b}/{name}"
                        # Temp files of puts in progress (and anything foreign) are skipped.
                        if _KEY_RE.match(key) and name[:2] == a and name[2:4] == b:
                            yield key
        except OSError as exc:
            raise BlobUnavailable(f"cannot list {top}: {_os_reason(exc)}") from exc

    async def aclose(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""


# -- S3 backend -----------------------------------------------------------------------------


class S3BlobStore:
    """Bodies as objects in an S3 bucket (AWS, SeaweedFS, Ceph, S3Proxy …) via obstore.

    A put is durable when the PUT is acknowledged. Requests are SigV4-signed over the
    payload hash, so the server rejects a body damaged in transit. Retries are few and
    short: an unreachable store must turn into ``BlobUnavailable`` (SMTP 451) well within
    the receiver's accept timeout, not after minutes of backoff.

    gc's deletes are guarded by an intent object (``gc-intent/<key>``) and every put checks
    for it afterwards; see ``delete_if_unchanged`` for why and ``gc_lease`` for the bound.
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint: str = "",
        region: str = "us-east-1",
        access_key_id: str = "",
        secret_access_key: str = "",
        prefix: str = "",
        connect_timeout: float = 5.0,
        request_timeout: float = 120.0,
        max_retries: int = 2,
        retry_timeout: float = 10.0,
        gc_lease: float = 30.0,
    ) -> None:
        """Connect lazily to ``bucket``; an empty ``endpoint`` means AWS itself.

        ``gc_lease``: seconds a gc delete may hold its intent before puts treat it as the
        leftover of a crashed gc (gc gives up a delete it could not start within half that).
        """
        self.gc_lease = gc_lease
        config: dict[str, Any] = {"region": region}
        client: dict[str, Any] = {
            "connect_timeout": timedelta(seconds=connect_timeout),
            "timeout": timedelta(seconds=request_timeout),
        }
        if endpoint:
            config["endpoint"] = endpoint
            # Plain HTTP only when the operator configured an http:// endpoint, which in
            # practice is a loopback test server or a compose-internal network.
            if urlsplit(endpoint).scheme == "http":
                client["allow_http"] = True
        if access_key_id:
            config["access_key_id"] = access_key_id
            config["secret_access_key"] = secret_access_key
        self.bucket = bucket
        self.endpoint = endpoint
        self.prefix = prefix.strip("/")
        self.store = S3Store(
            bucket,
            prefix=self.prefix or None,
            config=config,  # type: ignore[arg-type]
            client_options=client,  # type: ignore[arg-type]
            retry_config={
                "max_retries": max_retries,
                "retry_timeout": timedelta(seconds=retry_timeout),
                "backoff": {
                    "init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=2),
                    "base": 2,
                },
            },
        )

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> S3BlobStore:
        """An S3BlobStore configured from ``StoreSettings``."""
        return cls(
            settings.s3_bucket,
            endpoint=settings.s3_endpoint,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            prefix=settings.s3_prefix,
        )

    def _where(self, key: str) -> str:
        """``s3://bucket/prefix/key`` for error messages."""
        prefix = f"{self.prefix}/" if self.prefix else ""
        return f"s3://{self.bucket}/{prefix}{key}"

    def _unavailable(self, what: str, key: str, exc: Exception) -> BlobUnavailable:
        """A ``BlobUnavailable`` naming the operation, the object and obstore's reason."""
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return BlobUnavailable(f"cannot {what} {self._where(key)}: {reason}")

    async def _size(self, key: str) -> int | None:
        """The stored object's size, or None when there is none (HEAD)."""
        try:
            meta = await obstore.head_async(self.store, key)
        except (NotFoundError, FileNotFoundError):
            return None
        except Exception as exc:
            raise self._unavailable("head", key, exc) from exc
        return int(meta["size"])

    def writer(self) -> BlobWriter:
        """A streaming put: small bodies are one PUT under their key; a body past
        ``_S3_SPOOL`` bytes becomes a multipart upload under ``incoming/…``, copied to its key
        at commit (see :class:`_S3Writer` for the cost)."""
        return _S3Writer(self)

    async def put(self, data: bytes) -> BlobRef:
        """PUT ``data``. The key is the content's hash, so a second PUT of the same key writes
        the same bytes; it is done anyway because it refreshes Last-Modified, which garbage
        collection relies on to spare a body that became referenced again (ops.gc).

        Then, if a gc is deleting this key right now, wait until it is done and make sure the
        body is still there (PUT again if not): see ``delete_if_unchanged``."""
        data = bytes(data)
        digest = await _digest_async(data)
        ref = BlobRef(key=key_for(digest), sha256=digest, size=len(data))
        await self._put_object(ref.key, data)
        await self._settle(ref.key, len(data), lambda: self._put_object(ref.key, data))
        return ref

    async def _put_object(self, key: str, data: bytes) -> None:
        """One PUT of ``data`` under ``key``."""
        try:
            await obstore.put_async(self.store, key, data)
        except Exception as exc:
            raise self._unavailable("put", key, exc) from exc

    async def _head(self, key: str) -> dict[str, Any] | None:
        """The object's metadata (HEAD), or None when there is none."""
        try:
            return dict(await obstore.head_async(self.store, key))
        except (NotFoundError, FileNotFoundError):
            return None
        except Exception as exc:
            raise self._unavailable("head", key, exc) from exc

    async def _settle(self, key: str, size: int, reput: Callable[[], Awaitable[None]]) -> None:
        """Return once ``key`` holds its ``size`` bytes and no live gc delete of it is in
        flight (``reput`` stores the body under ``key`` again).

        The intent is looked at *before* the body: when no intent is seen, any gc delete of
        this key has removed its intent, so its DELETE is over and the body check after it
        sees what that DELETE left (a missing body is PUT again). An intent older than
        ``gc_lease`` on the server's clock, against our own PUT's Last-Modified, is a crashed
        gc's leftover. If a live intent outstays the lease, the put fails (451: the sender
        retries) rather than answer 250 for a body that may be deleted.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.gc_lease + 5.0
        while True:
            intent = await self._head(_intent_key(key))
            body = await self._head(key)
            if body is None or int(body["size"]) != size:
                await reput()  # a gc deleted it after our PUT
                continue
            if intent is None:
                return
            age = (body["last_modified"] - intent["last_modified"]).total_seconds()
            if age > self.gc_lease:
                return  # a crashed gc's leftover: no delete is coming
            if loop.time() > deadline:
                raise BlobUnavailable(f"cannot put {self._where(key)}: a gc delete holds it")
            await asyncio.sleep(0.05)

    async def get(self, key: str) -> bytes:
        """GET and verify the body under ``key``."""
        sha256_of_key(key)
        try:
            resp = await obstore.get_async(self.store, key)
            data = bytes(await resp.bytes_async())
        except (NotFoundError, FileNotFoundError) as exc:
            raise BlobMissing(key) from exc
        except Exception as exc:
            raise self._unavailable("get", key, exc) from exc
        if len(data) > _HASH_IN_THREAD:
            await asyncio.to_thread(_verify, key, data)
        else:
            _verify(key, data)
        return data

    async def modified_at(self, key: str) -> float | None:
        """Last-Modified of the object (HEAD), or None when there is none."""
        sha256_of_key(key)
        try:
            meta = await obstore.head_async(self.store, key)
        except (NotFoundError, FileNotFoundError):
            return None
        except Exception as exc:
            raise self._unavailable("head", key, exc) from exc
        return float(meta["last_modified"].timestamp())

    async def stamp(self, key: str) -> BlobStamp | None:
        """ETag and Last-Modified of the object (HEAD), or None when there is none.

        Last-Modified has one-second resolution and a PUT of the same bytes keeps the ETag,
        so two puts within one second share a stamp: gc only remembers a stamp older than
        the listing it took it from by more than a second (ops.gc).
        """
        sha256_of_key(key)
        meta = await self._head(key)
        if meta is None:
            return None
        modified = meta["last_modified"]
        return BlobStamp(float(modified.timestamp()), f"{meta.get('e_tag')}@{modified.isoformat()}")

    async def delete_if_unchanged(self, key: str, seen: BlobStamp) -> bool:
        """DELETE the object only if its stamp is still ``seen``, under a gc intent.

        S3 has no conditional DELETE that S3-compatible servers honour (S3Proxy ignores
        If-Match on DELETE, obstore cannot send one), so the window between the HEAD that
        checks and the DELETE is closed by a protocol with ``put``: gc first PUTs the intent
        ``gc-intent/<key>``, then checks the stamp, DELETEs, and removes the intent. A put
        that lands before the check changes the stamp (kept). One that lands after the check
        finds the intent (or, once the intent is gone, the missing body) in its ``_settle`` and
        PUTs again before it returns. gc does not start a DELETE later than half the lease
        after its intent, so no put takes the intent for a crashed gc's while the DELETE can
        still come; a DELETE request that the server applies more than half a lease late
        is the remaining (documented) gap.
        """
        sha256_of_key(key)
        started = time.monotonic()
        intent = _intent_key(key)
        await self._put_object(intent, b"")
        try:
            now = await self.stamp(key)
            if now is None or now.token != seen.token:
                return False
            if time.monotonic() - started > self.gc_lease / 2:
                return False  # too slow to be sure no put gave up on us: next run
            try:
                await obstore.delete_async(self.store, key)
            except (NotFoundError, FileNotFoundError):
                return False
            except Exception as exc:
                raise self._unavailable("delete", key, exc) from exc
            return True
        finally:
            # A failed removal only makes puts of this key wait until the lease runs out.
            with contextlib.suppress(Exception):
                await obstore.delete_async(self.store, intent)

    async def exists(self, key: str) -> bool:
        """True when HEAD finds an object under ``key``."""
        sha256_of_key(key)
        return await self._size(key) is not None

    async def delete(self, key: str) -> None:
        """DELETE the object under ``key`` (S3 deletes of missing keys succeed)."""
        sha256_of_key(key)
        try:
            await obstore.delete_async(self.store, key)
        except (NotFoundError, FileNotFoundError):
            return
        except Exception as exc:
            raise self._unavailable("delete", key, exc) from exc

    async def iter_keys(self) -> AsyncIterator[str]:
        """Every key under the store's prefix, page by page (LIST)."""
        try:
            async for page in obstore.list(self.store, prefix=KEY_PREFIX, chunk_size=1000):
                for meta in page:
                    if _KEY_RE.match(meta["path"]):
                        yield meta["path"]
        except Exception as exc:
            raise self._unavailable("list", KEY_PREFIX, exc) from exc

    async def aclose(self) -> None:
        """obstore pools connections internally and has nothing to close."""


# Up to this many bytes a streamed body stays in memory and is PUT once under its final key;
# past it, a multipart upload (parts of this size, S3's minimum is 5 MiB) to a temp key.
_S3_SPOOL = 5 * 1024 * 1024
_S3_INCOMING = "incoming"


class _S3Writer:
    """A :class:`BlobWriter` for :class:`S3BlobStore`.

    The key (the SHA-256) is known only at the end, and S3 cannot rename. So a large body is
    uploaded as a multipart upload under ``incoming/<random>`` while it arrives, then copied
    server-side to its key (CopyObject) and the temp object deleted. Cost against one PUT: the
    multipart requests (create, one per 5 MiB part, complete), a CopyObject (the server reads
    and writes the body once more, no bytes through the receiver) and a DELETE. Bodies of up
    to ``_S3_SPOOL`` bytes skip all that: one PUT under the final key, as ``put`` does. An
    upload interrupted by a crash leaves an object under ``incoming/`` (iter_keys never lists
    it): a bucket lifecycle rule on that prefix removes them.
    """

    def __init__(self, store: S3BlobStore) -> None:
        self._store = store
        self._hash = hashlib.sha256()
        self._buf = bytearray()
        self._file: Any = None
        self._tmp = ""
        self._size = 0
        self._done = False

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    async def write(self, chunk: bytes) -> None:
        """Hash ``chunk`` and buffer it, or send it on into the multipart upload."""
        if self._done:
            raise BlobUnavailable("write after commit or abort")
        self._hash.update(chunk)
        self._size += len(chunk)
        try:
            if self._file is None:
                self._buf += chunk
                if len(self._buf) <= _S3_SPOOL:
                    return
                self._tmp = f"{_S3_INCOMING}/{secrets.token_hex(16)}"
                # Two parts in flight at most: memory per body stays ~3 parts.
                self._file = obstore.open_writer_async(
                    self._store.store, self._tmp, buffer_size=_S3_SPOOL, max_concurrency=2
                )
                chunk, self._buf = bytes(self._buf), bytearray()
            await self._file.write(chunk)
        except BlobError:
            raise
        except Exception as exc:
            await self.abort()
            raise self._store._unavailable("upload", self._tmp or "a body", exc) from exc

    async def commit(self) -> BlobRef:
        """One PUT, or complete the upload, copy it to its key and delete the temp object."""
        if self._done:
            raise BlobUnavailable("commit after commit or abort")
        digest = self._hash.hexdigest()
        ref = BlobRef(key=key_for(digest), sha256=digest, size=self._size)
        store = self._store
        try:
            if self._file is None:
                body = bytes(self._buf)
                await store._put_object(ref.key, body)
                await store._settle(ref.key, ref.size, lambda: store._put_object(ref.key, body))
                self._buf = bytearray()
            else:
                await self._file.close()
                self._file = None
                tmp = self._tmp

                async def copy() -> None:
                    # Copy (not a HEAD-and-skip): it refreshes Last-Modified for gc, and
                    # replaces a damaged object under the key.
                    await obstore.copy_async(store.store, tmp, ref.key)

                await copy()
                # The temp object stays until no gc delete can take the copy: settle may copy
                # again.
                await store._settle(ref.key, ref.size, copy)
                with contextlib.suppress(Exception):
                    await obstore.delete_async(store.store, tmp)
        except BlobError:
            await self.abort()
            raise
        except Exception as exc:
            await self.abort()
            raise self._store._unavailable("put", ref.key, exc) from exc
        self._done = True
        return ref

    async def abort(self) -> None:
        """Drop the buffer; finish and delete a started upload (obstore has no abort)."""
        if self._done:
            return
        self._done = True
        self._buf = bytearray()
        if self._file is not None:
            with contextlib.suppress(Exception):
                await self._file.close()
            self._file = None
        if self._tmp:
            with contextlib.suppress(Exception):
                await obstore.delete_async(self._store.store, self._tmp)


def _intent_key(key: str) -> str:
    """Where gc's intent to delete ``key`` is kept (outside ``KEY_PREFIX``: never listed)."""
    return f"gc-intent/{sha256_of_key(key)}"


def open_store(settings: StoreSettings) -> BlobStore:
    """The store ``settings`` describe: ``FsBlobStore`` or ``S3BlobStore``."""
    if settings.backend == "s3":
        return S3BlobStore.from_settings(settings)
    return FsBlobStore(settings.path)
