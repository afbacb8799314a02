"""SHA-256 reputation: known-bad attachments by hash.

The list is a text file, one lowercase or uppercase hex SHA-256 a line, optionally followed by
whitespace and a name (``<sha256> Trojan.Foo``); ``#`` starts a comment. Every part and archive
member is hashed (not the raw message: a known-bad file is found whatever mail carries it); a
listed hash is ``infected`` with the symbol ``sha256:<name or hash>``. The file is re-read when
its modification time or size changes, at most every ``reload_interval`` seconds, so ops can
update it without a restart; a file that vanished keeps the last list in force.

The list can also come from the compacted topic ``mxgate.reputation.v1``
(:data:`mxgate.catalog.REPUTATION`): ``ReputationListed`` records keyed by the hash, the latest
per hash in force, ``listed=false`` (or a tombstone) withdrawing it. The engine reads the topic
from the beginning to its end before it scans anything (:class:`TopicList`), then follows it in
a background thread, so a hash listed by a feed, an analyst or the sandbox takes effect in every
scanner within a second, with no restart. File and topic may be used together: a hash listed
by either is known-bad.

Settings (:class:`ReputationSettings`): ``scanner.reputation_file``, ``scanner.reputation_kafka``
and ``scanner.reputation_topic``. ``detail``: each part path whose hash is listed -> the name it
is listed under.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import threading
import time
from pathlib import Path

from confluent_kafka import Producer
from pydantic import Field

import schemas
from mxgate import catalog
from mxgate.compacted import CompactedFollower
from mxgate.errors import ConfigError
from mxgate.kafka import KafkaUnavailable, producer_config
from mxgate.settings import KafkaSettings
from mxgate.timeutil import utcnow
from scanner.engines.common import EngineBase, EngineSettings, EngineSpec, Finding, ParsedMessage
from scanner.mime import RAW_PATH

__all__ = [
    "ENGINE",
    "ReputationEngine",
    "ReputationSettings",
    "TopicList",
    "load_list",
    "publish_listing",
]

_log = logging.getLogger(__name__)
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


def load_list(path: Path) -> dict[str, str]:
    """Parse a hash list: sha256 -> name (the hash itself when unnamed). Bad lines are skipped."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        digest, _, name = line.partition(" ")
        digest = digest.strip()
        if _HEX.match(digest):
            out[digest.lower()] = name.strip() or digest.lower()
    return out


class ReputationEngine(EngineBase):
    """The ``reputation`` antivirus engine. Safe to call concurrently."""

    name = "reputation"
    kind = "antivirus"
    cacheable = True

    def __init__(
        self,
        path: Path | str | None,
        *,
        reload_interval: float = 5.0,
        kafka: str | None = None,
        topic: str = catalog.REPUTATION.name,
        load_timeout: float = 30.0,
    ) -> None:
        """A list from the file ``path``, the topic ``topic`` on the brokers ``kafka``, or both.

        With a topic, the constructor returns once the topic is read to its end (at most
        ``load_timeout`` seconds, else :class:`KafkaUnavailable`): an engine that scanned with
        half a list would call known-bad files clean.
        """
        if path is None and not kafka:
            raise ConfigError(
                "MXGATE_SCANNER__REPUTATION_FILE",
                "scanner.reputation_file",
                "not set (nor scanner.reputation_kafka)",
            )
        self._path = Path(path) if path is not None else None
        self._interval = reload_interval
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._hashes: dict[str, str] = {}
        self._version = "empty"
        self._next = 0.0
        if self._path is not None:
            try:
                self._reload()
            except OSError as e:
                raise ConfigError(str(self._path), "-", f"cannot read: {e}") from None
        self.topic: TopicList | None = None
        if kafka:
            self.topic = TopicList(kafka, topic)
            self.topic.load(load_timeout)
            self.topic.start()

    def _reload(self) -> None:
        assert self._path is not None
        st = os.stat(self._path)
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        data = self._path.read_bytes()
        hashes = load_list(self._path)
        with self._lock:
            self._hashes, self._stamp = hashes, stamp
            self._version = f"list-{hashlib.sha256(data).hexdigest()[:16]}-{len(hashes)}"

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if self._path is None or now < self._next:
            return
        self._next = now + self._interval
        try:
            self._reload()
        except OSError as e:
            _log.warning("reputation list unreadable, keeping the last one: %s", e)

    @property
    def version(self) -> str:
        """This engine's implementation version."""
        return "1"

    @property
    def rules_version(self) -> str:
        """A digest of the list(s) in force and their sizes."""
        with self._lock:
            file_version = self._version
        if self.topic is None:
            return file_version
        if self._path is None:
            return self.topic.version
        return f"{file_version}+{self.topic.version}"

    async def check(self, message: ParsedMessage) -> Finding:
        """Hash every part; ``infected`` when one is listed."""
        self._maybe_reload()
        digests = await asyncio.to_thread(_digests, message)
        with self._lock:
            hashes = self._hashes
        hits: dict[str, str] = {}
        for path, digest in digests:
            name = hashes.get(digest)
            if name is None and self.topic is not None:
                name = self.topic.get(digest)
            if name is not None:
                hits.setdefault(path, name)
        return self.finding(
            "infected" if hits else "clean",
            symbols=tuple(dict.fromkeys(f"sha256:{n}" for n in hits.values())),
            detail=hits,
        )

    async def aclose(self) -> None:
        """Stop following the topic."""
        if self.topic is not None:
            await asyncio.to_thread(self.topic.stop)


def _digests(message: ParsedMessage) -> list[tuple[str, str]]:
    """(part path, SHA-256 hex) of every part and archive member (hashing: a thread)."""
    return [
        (part.path, hashlib.sha256(part.data).hexdigest())
        for part in message.parts
        if part.path != RAW_PATH and part.data
    ]


class TopicList:
    """The reputation topic folded into a hash -> name table, then followed in a thread
    (:class:`mxgate.compacted.CompactedFollower`: no group joined, nothing committed, every
    scanner holds the whole list).

    ``kafka``: the brokers' bootstrap string, or whole :class:`KafkaSettings` (TLS, SASL).
    """

    def __init__(self, kafka: str | KafkaSettings, topic: str) -> None:
        settings = (
            kafka if isinstance(kafka, KafkaSettings) else KafkaSettings(bootstrap_servers=kafka)
        )
        self.bootstrap_servers = settings.bootstrap_servers
        self.topic = topic
        self._hashes: dict[str, str] = {}
        # XOR of per-entry digests: a version that is the same for the same list on every
        # scanner (so verdict caches agree) and costs O(1) per update, not O(list).
        self._mix = 0
        self._lock = threading.Lock()
        self._follower = CompactedFollower(settings, topic, "mxgate.reputation-reader", self.apply)

    @property
    def records(self) -> int:
        """Records folded in so far."""
        return self._follower.records

    @property
    def version(self) -> str:
        """``topic-<entries>-<digest>`` of the list in force."""
        with self._lock:
            return f"topic-{len(self._hashes)}-{self._mix:016x}"

    def get(self, sha256: str) -> str | None:
        """The name a listed hash is known by, or None."""
        with self._lock:
            return self._hashes.get(sha256)

    def __len__(self) -> int:
        with self._lock:
            return len(self._hashes)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Fold one record in; undecodable records are skipped (logged), never fatal."""
        digest = (key or b"").decode("ascii", "replace").strip().lower()
        listed, name = False, ""
        if value is not None:
            try:
                event, rec = schemas.decode(value)
            except schemas.SchemaError as e:
                _log.warning("reputation record skipped: %s", e)
                return
            if event != schemas.REPUTATION_LISTED:
                return
            digest = str(rec["sha256"]).strip().lower()
            listed, name = bool(rec["listed"]), rec["reason"] or rec["source"] or digest
        if not _HEX.match(digest):
            return
        with self._lock:
            old = self._hashes.pop(digest, None)
            if old is not None:
                self._mix ^= _entry(digest, old)
            if listed:
                self._hashes[digest] = name
                self._mix ^= _entry(digest, name)

    def load(self, timeout: float) -> None:
        """Read every partition from the beginning to its current end."""
        self._follower.load(timeout)

    def start(self) -> None:
        """Follow the topic in a daemon thread (after :meth:`load`)."""
        self._follower.start()

    def stop(self) -> None:
        """Stop following and wait for the thread."""
        self._follower.stop()


def _entry(digest: str, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{digest}\0{name}".encode()).digest()[:8], "big")


def publish_listing(
    bootstrap_servers: str,
    sha256: str,
    listed: bool = True,
    *,
    topic: str = catalog.REPUTATION.name,
    source: str = "",
    reason: str = "",
    timeout: float = 20.0,
) -> dict[str, object]:
    """List (or with ``listed=False`` withdraw) a hash on the reputation topic; the record."""
    digest = sha256.strip().lower()
    if not _HEX.match(digest):
        raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
    rec: dict[str, object] = {
        "sha256": digest,
        "listed": listed,
        "source": source,
        "reason": reason,
        "listed_at": utcnow(),
    }
    p = Producer(
        producer_config(KafkaSettings(bootstrap_servers=bootstrap_servers), message_timeout=15.0)
    )
    errors: list[str] = []
    p.produce(
        topic,
        key=digest,
        value=schemas.encode(schemas.REPUTATION_LISTED, rec),
        on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
    )
    if p.flush(timeout) != 0 or errors:
        raise KafkaUnavailable(f"reputation record not written: {errors[:1] or 'timeout'}")
    return rec


class ReputationSettings(EngineSettings):
    """The ``reputation`` engine's settings (``scanner.reputation_*``)."""

    file: Path | None = Field(default=None, validation_alias="reputation_file")
    kafka: str = Field(default="", validation_alias="reputation_kafka")
    topic: str = Field(default=catalog.REPUTATION.name, validation_alias="reputation_topic")


def build(settings: ReputationSettings) -> ReputationEngine:
    """The engine over the file, the topic, or both (neither is a ConfigError)."""
    return ReputationEngine(settings.file, kafka=settings.kafka or None, topic=settings.topic)


ENGINE = EngineSpec(ReputationEngine, ReputationSettings, build)
"""The registry's entry for ``reputation``."""
