"""The Avro schemas of mxgate's events and their wire form (records as Avro dicts).

Every event is one Avro record whose schema lives in ``schemas/avro/<full name>.avsc``. On Kafka
each value is Avro *single-object encoding*: the two bytes ``C3 01``, the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form, then the Avro binary body.
Any consumer finds the writer schema by fingerprint (see schemas/README.md). mxgate's own code
uses the typed events of :mod:`schemas.events` on top of this.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, load_schema, to_parsing_canonical_form

__all__ = [
    "DEAD_LETTERED",
    "DEAD_LETTER_RETRIED",
    "DELIVERY_ATTEMPTED",
    "DELIVERY_RETRY",
    "ENGINE_CONTROLLED",
    "ENGINE_STATUS",
    "EVENTS",
    "GREYLIST_ENTRY",
    "HISTORY_DIR",
    "MAGIC",
    "MESSAGE_QUARANTINED",
    "MESSAGE_RECEIVED",
    "MESSAGE_REJECTED",
    "MESSAGE_SCANNED",
    "QUARANTINE_DELETED",
    "QUARANTINE_RELEASED",
    "REPLAY_REDELIVERED",
    "REPUTATION_LISTED",
    "RETROSCAN_ALERT",
    "SCHEMA_DIR",
    "TRAINING_LABELLED",
    "Schema",
    "SchemaError",
    "UnknownSchema",
    "decode",
    "encode",
    "history",
    "reload",
    "schema",
]

SCHEMA_DIR = Path(__file__).parent / "avro"
MAGIC = b"\xc3\x01"

MESSAGE_RECEIVED = "mxgate.events.MessageReceived"
MESSAGE_SCANNED = "mxgate.events.MessageScanned"
DELIVERY_ATTEMPTED = "mxgate.events.DeliveryAttempted"
MESSAGE_QUARANTINED = "mxgate.events.MessageQuarantined"
DELIVERY_RETRY = "mxgate.events.DeliveryRetry"
QUARANTINE_RELEASED = "mxgate.events.QuarantineReleased"
QUARANTINE_DELETED = "mxgate.events.QuarantineDeleted"
TRAINING_LABELLED = "mxgate.events.TrainingLabelled"
RETROSCAN_ALERT = "mxgate.events.RetroscanAlert"
REPLAY_REDELIVERED = "mxgate.events.ReplayRedelivered"
ENGINE_CONTROLLED = "mxgate.events.EngineControlled"
ENGINE_STATUS = "mxgate.events.EngineStatus"
MESSAGE_REJECTED = "mxgate.events.MessageRejected"
REPUTATION_LISTED = "mxgate.events.ReputationListed"
DEAD_LETTERED = "mxgate.events.DeadLettered"
DEAD_LETTER_RETRIED = "mxgate.events.DeadLetterRetried"
GREYLIST_ENTRY = "mxgate.events.GreylistEntry"

# Records that travel as top-level events (the others are nested types).
EVENTS = (
    MESSAGE_RECEIVED,
    MESSAGE_SCANNED,
    DELIVERY_ATTEMPTED,
    MESSAGE_QUARANTINED,
    DELIVERY_RETRY,
    QUARANTINE_RELEASED,
    QUARANTINE_DELETED,
    TRAINING_LABELLED,
    RETROSCAN_ALERT,
    REPLAY_REDELIVERED,
    ENGINE_CONTROLLED,
    ENGINE_STATUS,
    MESSAGE_REJECTED,
    REPUTATION_LISTED,
    DEAD_LETTERED,
    DEAD_LETTER_RETRIED,
    GREYLIST_ENTRY,
)

HISTORY_DIR = SCHEMA_DIR / "history"
"""Earlier versions of event schemas (``<full name>.<fingerprint hex>.avsc``, self-contained):
events written before a change stay decodable by fingerprint (see schemas/README.md)."""


class SchemaError(Exception):
    """A value is not a valid single-object encoded event of a known schema."""


class UnknownSchema(SchemaError):
    """A single-object encoded value whose writer schema this reader does not hold (yet): a
    newer writer in a rolling upgrade, not garbage. Wait for the schema (:func:`reload`)."""

    def __init__(self, fingerprint: bytes) -> None:
        super().__init__(f"unknown writer schema fingerprint {fingerprint.hex()}")
        self.fingerprint = fingerprint


@dataclass(frozen=True, slots=True)
class Schema:
    """One parsed writer schema with its fingerprint."""

    name: str
    parsed: Any
    canonical: str
    fingerprint: bytes  # 8 bytes, little-endian, as on the wire

    @property
    def header(self) -> bytes:
        """The single-object encoding prefix for this schema."""
        return MAGIC + self.fingerprint


@cache
def schema(name: str) -> Schema:
    """Load the schema named ``name`` (full name), resolving named types from SCHEMA_DIR."""
    path = SCHEMA_DIR / f"{name}.avsc"
    if not path.exists():
        raise SchemaError(f"no schema file {path.name}")
    parsed = load_schema(str(path))
    canonical = to_parsing_canonical_form(parsed)
    fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    return Schema(name, parsed, canonical, fp)


@cache
def history() -> tuple[Schema, ...]:
    """Every earlier version of every event schema kept in HISTORY_DIR."""
    out = []
    for path in sorted(HISTORY_DIR.glob("*.avsc")):
        parsed = load_schema(str(path))
        canonical = to_parsing_canonical_form(parsed)
        fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
        out.append(Schema(path.name.rsplit(".", 2)[0], parsed, canonical, fp))
    return tuple(out)


_extra_dirs: tuple[Path, ...] = ()


def _load(path: Path) -> Schema:
    parsed = load_schema(str(path))
    canonical = to_parsing_canonical_form(parsed)
    fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    name = parsed["name"] if isinstance(parsed, dict) else path.name.rsplit(".", 2)[0]
    if isinstance(parsed, dict) and "." not in name and parsed.get("namespace"):
        name = f"{parsed['namespace']}.{name}"
    return Schema(name, parsed, canonical, fp)


@cache
def _by_fingerprint() -> dict[bytes, Schema]:
    known: dict[bytes, Schema] = {}
    for folder in _extra_dirs:
        for path in sorted(folder.glob("*.avsc")):
            try:
                s = _load(path)
            except Exception:  # a half-written or foreign file must not stop decoding
                continue
            if s.name in EVENTS:
                known[s.fingerprint] = s
    known.update({s.fingerprint: s for s in history()})
    known.update({schema(n).fingerprint: schema(n) for n in EVENTS})
    return known


def reload(extra_dirs: tuple[Path, ...] = ()) -> None:
    """Forget the schemas read so far and read them again, plus the self-contained writer
    schemas in ``extra_dirs`` (newer versions of our events, e.g. from a newer release).

    A consumer waiting on an :class:`UnknownSchema` calls this now and then: a schema file
    deployed beside it (or into ``extra_dirs``) is learnt without a restart. Events are still
    resolved into this reader's own current schema, so fields it does not know are dropped.
    """
    global _extra_dirs
    _extra_dirs = tuple(extra_dirs)
    schema.cache_clear()
    history.cache_clear()
    _by_fingerprint.cache_clear()


def encode(name: str, record: dict[str, Any]) -> bytes:
    """Encode ``record`` as the event ``name`` in single-object encoding."""
    s = schema(name)
    buf = io.BytesIO()
    buf.write(s.header)
    schemaless_writer(buf, s.parsed, record, strict_allow_default=True)
    return buf.getvalue()


def decode(value: bytes, reader: Schema | None = None) -> tuple[str, dict[str, Any]]:
    """Decode a single-object encoded event; returns (full name, record).

    With ``reader``, the record is resolved into that (possibly older or newer) schema.
    """
    if len(value) < 10 or value[:2] != MAGIC:
        raise SchemaError("not Avro single-object encoding (missing C3 01 marker)")
    writer = _by_fingerprint().get(value[2:10])
    if writer is None:
        raise UnknownSchema(value[2:10])
    if reader is None and writer.fingerprint != schema(writer.name).fingerprint:
        reader = schema(writer.name)  # an earlier version: resolve into the current shape
    try:
        rec = schemaless_reader(
            io.BytesIO(value[10:]), writer.parsed, reader.parsed if reader else None
        )
    except Exception as e:  # fastavro raises several types on truncated/garbage bodies
        raise SchemaError(f"cannot decode {writer.name}: {e}") from e
    if not isinstance(rec, dict):
        raise SchemaError(f"{writer.name} did not decode to a record")
    return writer.name, rec
