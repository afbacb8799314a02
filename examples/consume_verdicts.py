"""Consume mxgate's verdict stream without mxgate's code: confluent-kafka and fastavro only.

    python examples/consume_verdicts.py --bootstrap HOST:PORT [--topic-prefix P]
        [--schemas DIR] [--from-beginning] [--max N] [--group G]
    python examples/consume_verdicts.py --list-schemas [--schemas DIR]

Reads ``mxgate.scanned.v1`` (one ``MessageScanned`` per received message) and prints one JSON
line per decision: message ID, tenant, action, reasons, every engine's verdict (shadow engines
flagged), the writer schema's fingerprint and where the event sits (partition, offset).
``examples/go-verdicts`` prints the same keys.

Each Kafka value is Avro single-object encoding: ``C3 01``, the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form, then the Avro binary
body. This program fingerprints every ``.avsc`` in ``--schemas`` (default: this repository's
``schemas/avro``) and its ``history/``, picks the writer schema by the fingerprint on the wire and
resolves it against the ``MessageScanned`` it was built for, so events written with an older
schema still decode (new fields get their defaults). A fingerprint it does not know means a newer
schema was published: it stops and says so rather than skip decisions; update your copy of the
folder.

Without ``--group`` nothing is committed: every run starts at the end of the topic, or at its
oldest retained event with ``--from-beginning``. With ``--group`` the group's committed offsets
are resumed (``--from-beginning`` then applies only to a group with none), and only decisions
actually printed are committed, so ``--max`` never skips one on the next run.
"""

from __future__ import annotations

import argparse
import io
import json
import signal
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition
from fastavro import schemaless_reader
from fastavro.schema import fingerprint, load_schema, to_parsing_canonical_form

TOPIC = "mxgate.scanned.v1"
"""The verdict stream's name in mxgate's topic catalog; a deployment may prefix it."""
READER = "mxgate.events.MessageScanned"
"""The record this consumer is built to read."""
MAGIC = b"\xc3\x01"
DEFAULT_SCHEMAS = Path(__file__).resolve().parents[1] / "schemas" / "avro"


class DecodeError(Exception):
    """A value this consumer cannot decode (not single-object encoded, or an unknown schema)."""


@dataclass(frozen=True)
class Writer:
    """One schema file held, under the fingerprint that names it on the wire."""

    name: str
    path: Path
    schema: Any  # fastavro's parsed schema


def _fingerprint(parsed: Any) -> bytes:
    """CRC-64-AVRO of the Parsing Canonical Form, little-endian as on the wire."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


def load_writers(folder: Path) -> dict[bytes, Writer]:
    """Every schema in ``folder`` and ``folder/history`` by fingerprint.

    ``load_schema`` resolves the named types a file references from the other files of its
    folder. Each history file is self-contained and named ``<full name>.<fingerprint>.avsc``;
    a name that disagrees with the computed fingerprint is an error, not a silent mismatch.
    """
    out: dict[bytes, Writer] = {}
    for path in sorted(folder.glob("history/*.avsc")):
        parsed = load_schema(str(path))
        fp = _fingerprint(parsed)
        name, _, claimed = path.stem.rpartition(".")
        if claimed != fp.hex():
            raise DecodeError(f"{path}: computed fingerprint {fp.hex()}, file name says {claimed}")
        out[fp] = Writer(name, path, parsed)
    current = sorted(folder.glob("*.avsc"))
    if not current:
        raise DecodeError(f"no .avsc files in {folder}")
    for path in current:  # the current files win should a history file repeat one
        parsed = load_schema(str(path))
        out[_fingerprint(parsed)] = Writer(path.stem, path, parsed)
    return out


class Decoder:
    """Single-object encoded values to ``MessageScanned`` records, in our reader's shape."""

    def __init__(self, folder: Path) -> None:
        self.writers = load_writers(folder)
        readers = [w for w in self.writers.values() if w.name == READER and w.path.parent == folder]
        if not readers:
            raise DecodeError(f"no {READER}.avsc in {folder}")
        self.reader = readers[0]

    def decode(self, value: bytes) -> tuple[dict[str, Any], bytes]:
        """The record and its writer's fingerprint."""
        if len(value) < 10 or value[:2] != MAGIC:
            raise DecodeError("not Avro single-object encoding (no C3 01 marker)")
        fp = value[2:10]
        writer = self.writers.get(fp)
        if writer is None:
            raise DecodeError(
                f"unknown writer schema {fp.hex()}: a newer schema was published; "
                "update your copy of schemas/avro"
            )
        if writer.name != READER:
            raise DecodeError(f"writer schema {fp.hex()} is {writer.name}, not {READER}")
        # Resolution fills the fields an older writer lacked with our defaults (no
        # EngineVerdict.shadow before v2) and drops fields our reader does not know.
        reader = None if writer is self.reader else self.reader.schema
        try:
            record = schemaless_reader(io.BytesIO(value[10:]), writer.schema, reader)
        except Exception as e:  # fastavro raises several types on a truncated or garbled body
            raise DecodeError(f"cannot decode {writer.name}: {e}") from e
        if not isinstance(record, dict):
            raise DecodeError(f"{writer.name} did not decode to a record")
        return record, fp


def decision_line(record: dict[str, Any], fp: bytes, partition: int, offset: int) -> str:
    """One output line; the keys match examples/go-verdicts."""
    scanned_at: datetime = record["scanned_at"]  # fastavro: timestamp-micros -> aware UTC
    return json.dumps(
        {
            "message_id": record["message_id"],
            "tenant": record["tenant"],
            "scanned_at": scanned_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "action": record["action"],
            "reasons": record["reasons"],
            "spam_score": record["spam_score"],
            "policy_version": record["policy_version"],
            "verdicts": [
                {k: v[k] for k in ("engine", "kind", "outcome", "score", "shadow")}
                for v in record["verdicts"]
            ],
            "writer_schema": fp.hex(),
            "partition": partition,
            "offset": offset,
        }
    )


def _consumer(args: argparse.Namespace, topic: str) -> Consumer:
    """A read_committed consumer on ``topic``: a group member with ``--group``, else assigned
    every partition directly (no group, no commits)."""
    config: dict[str, Any] = {
        "bootstrap.servers": args.bootstrap,
        # The scanner writes in transactions: read only committed decisions, so each received
        # message shows exactly one.
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest" if args.from_beginning else "latest",
    }
    if args.group:
        # Commit only offsets stored after printing (the default stores on poll, which would
        # commit a decision --max stopped before printing).
        config |= {"group.id": args.group, "enable.auto.offset.store": False}
        consumer = Consumer(config)
        consumer.subscribe([topic])
        return consumer
    # librdkafka wants a group.id even for assign(); without commits it is never used.
    consumer = Consumer(config | {"group.id": "mxgate-example-unused", "enable.auto.commit": False})
    meta = consumer.list_topics(topic, timeout=30).topics[topic]
    if meta.error is not None or not meta.partitions:
        consumer.close()
        raise SystemExit(f"consume_verdicts: topic {topic}: {meta.error or 'no partitions'}")
    start = OFFSET_BEGINNING if args.from_beginning else OFFSET_END
    consumer.assign([TopicPartition(topic, p, start) for p in sorted(meta.partitions)])
    return consumer


def _stop(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends the run like Ctrl-C: the consumer closes (and commits) cleanly."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, then print decisions until ``--max`` or an interrupt."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", help="Kafka bootstrap servers, host:port[,host:port]")
    ap.add_argument(
        "--topic-prefix",
        default="",
        help="the deployment's topic prefix (MXGATE_KAFKA__TOPIC_PREFIX); production uses none",
    )
    ap.add_argument(
        "--schemas",
        type=Path,
        default=DEFAULT_SCHEMAS,
        help="folder of .avsc files, with history/ (default: %(default)s)",
    )
    ap.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the oldest retained decision instead of new ones only",
    )
    ap.add_argument(
        "--max",
        type=int,
        default=0,
        metavar="N",
        help="exit after printing N decisions (default 0: until interrupted)",
    )
    ap.add_argument(
        "--group",
        default="",
        help="consumer group: resume from and commit its offsets "
        "(default: none, nothing is committed)",
    )
    ap.add_argument(
        "--list-schemas",
        action="store_true",
        help="print the fingerprint, name and file of every schema held, then exit",
    )
    args = ap.parse_args(argv)
    if args.max < 0:
        ap.error("--max must be 0 or more")

    try:
        decoder = Decoder(args.schemas.resolve())
    except DecodeError as e:
        print(f"consume_verdicts: {e}", file=sys.stderr)
        return 1
    if args.list_schemas:
        for fp, w in sorted(decoder.writers.items()):
            print(fp.hex(), w.name, w.path.name)
        return 0
    if not args.bootstrap:
        ap.error("--bootstrap is required")

    signal.signal(signal.SIGTERM, _stop)
    consumer = _consumer(args, args.topic_prefix + TOPIC)
    printed = 0
    try:
        while args.max == 0 or printed < args.max:
            m = consumer.poll(1.0)
            if m is None:
                continue
            if err := m.error():
                if err.fatal():
                    raise KafkaException(err)
                print(f"consume_verdicts: {err}", file=sys.stderr)  # librdkafka retries these
                continue
            try:
                record, fp = decoder.decode(m.value() or b"")
            except DecodeError as e:
                print(
                    f"consume_verdicts: {m.topic()}[{m.partition()}]@{m.offset()}: {e}",
                    file=sys.stderr,
                )
                return 1
            print(decision_line(record, fp, m.partition(), m.offset()), flush=True)
            printed += 1
            if args.group:
                consumer.store_offsets(message=m)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()  # with --group, commits the stored offsets
    return 0


if __name__ == "__main__":
    sys.exit(main())
