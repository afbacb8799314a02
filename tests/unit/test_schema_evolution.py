"""Schema evolution as the data team sees it: consumers built on one version, events of another.

For every earlier version kept in schemas/avro/history/: a consumer built with the older schema
decodes events written with today's (it looks the writer schema up by fingerprint and resolves
it against its own), and today's consumer decodes events written with the older one (defaults
fill the new fields). Both are done with fastavro alone, as the README tells an outside
consumer to, and through mxgate's own decoder.
"""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, load_schema, to_parsing_canonical_form

import schemas

NOW = dt.datetime(2026, 3, 1, 8, 30, tzinfo=dt.UTC)
VERDICT = {"engine": "yara", "kind": "antivirus", "engine_version": "4.5", "rules_version": "r1",
           "outcome": "infected", "score": 0.0, "symbols": ["EICAR"], "duration_ms": 1.5,
           "error": None}  # fmt: skip
SCANNED = {
    "message_id": "01M8", "tenant": "t", "scanned_at": NOW, "scanner": "s", "action": "deliver",
    "reasons": [], "spam_score": 0.0, "policy_version": "1", "verdicts": [VERDICT],
    "active_engines": ["content"], "mail_from": "a@x", "rcpt_to": ["b@y"], "object_key": "k",
    "sha256": "h", "size": 1, "received_at": NOW, "client_ip": "", "helo": "", "defects": [],
}  # fmt: skip
OLD = schemas.history()
OLD_SCANNED = [s for s in OLD if s.name == schemas.MESSAGE_SCANNED]
OLD_RETRY = [s for s in OLD if s.name == schemas.DELIVERY_RETRY]
RETRY = {
    "message_id": "01M8", "tenant": "t", "action": "deliver", "reasons": [], "spam_score": 0.0,
    "mail_from": "a@x", "rcpt_to": ["b@y"], "object_key": "k", "received_at": NOW,
    "client_ip": "", "helo": "", "attempt": 2, "due_at": NOW, "first_attempt_at": NOW,
}  # fmt: skip


def _by_fp() -> dict[bytes, object]:
    """What an outside consumer builds from a copy of schemas/avro (and history/)."""
    out = {}
    paths = [*schemas.SCHEMA_DIR.glob("*.avsc"), *schemas.HISTORY_DIR.glob("*.avsc")]
    for path in paths:
        s = load_schema(str(path))
        out[bytes.fromhex(fingerprint(to_parsing_canonical_form(s), "CRC-64-AVRO"))] = s
    return out


def _old_wire(old: schemas.Schema, rec: dict) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, old.parsed, rec)
    return schemas.MAGIC + old.fingerprint + buf.getvalue()


def test_history_is_not_empty_and_differs_from_today() -> None:
    assert OLD, "the shadow field made MessageScanned v2: v1 must be kept"
    for old in OLD:
        assert old.name in schemas.EVENTS
        assert old.fingerprint != schemas.schema(old.name).fingerprint


@pytest.mark.parametrize("old", OLD_SCANNED, ids=lambda s: f"{s.name}.{s.fingerprint.hex()}")
def test_old_consumer_reads_new_events(old: schemas.Schema) -> None:
    wire = schemas.encode(schemas.MESSAGE_SCANNED, SCANNED | {
        "verdicts": [VERDICT | {"shadow": True}]})  # fmt: skip
    writer = _by_fp()[wire[2:10]]
    # The consumer's reader schema is the old one, exactly as it was published.
    reader = json.loads((schemas.HISTORY_DIR / f"{old.name}.{old.fingerprint.hex()}.avsc")
                        .read_text())  # fmt: skip
    rec = schemaless_reader(io.BytesIO(wire[10:]), writer, parse_schema(reader))
    assert rec["verdicts"] == [VERDICT]  # the new field is simply not there for it
    assert rec["action"] == "deliver" and rec["rcpt_to"] == ["b@y"]
    # mxgate's own decoder, given the old schema as reader, agrees.
    _, same = schemas.decode(wire, reader=old)
    assert same == rec


@pytest.mark.parametrize("old", OLD_SCANNED, ids=lambda s: f"{s.name}.{s.fingerprint.hex()}")
def test_new_consumer_reads_old_events(old: schemas.Schema) -> None:
    wire = _old_wire(old, SCANNED)
    name, rec = schemas.decode(wire)  # found by its old fingerprint, resolved into today's
    assert name == old.name
    assert rec["verdicts"] == [VERDICT | {"shadow": False}]
    # An outside consumer does the same with fastavro and a copy of the folder.
    writer = _by_fp()[wire[2:10]]
    today = load_schema(str(schemas.SCHEMA_DIR / f"{old.name}.avsc"))
    assert schemaless_reader(io.BytesIO(wire[10:]), writer, today) == rec


def test_every_new_field_since_an_old_version_has_a_default() -> None:
    # Rule 1 of the README, checked on the records that changed.
    new = json.loads((schemas.SCHEMA_DIR / "mxgate.events.EngineVerdict.avsc").read_text())
    first = OLD_SCANNED[0]
    old = json.loads(
        (schemas.HISTORY_DIR / f"{first.name}.{first.fingerprint.hex()}.avsc").read_text()
    )
    old_items = next(f for f in old["fields"] if f["name"] == "verdicts")["type"]["items"]
    old_names = {f["name"] for f in old_items["fields"]}
    added = [f for f in new["fields"] if f["name"] not in old_names]
    assert [f["name"] for f in added] == ["shadow"]
    assert all("default" in f for f in added)


@pytest.mark.parametrize("old", OLD, ids=lambda s: f"{s.name}.{s.fingerprint.hex()}")
def test_fields_added_to_a_record_since_an_old_version_have_defaults(old: schemas.Schema) -> None:
    new = json.loads((schemas.SCHEMA_DIR / f"{old.name}.avsc").read_text())
    was = json.loads((schemas.HISTORY_DIR / f"{old.name}.{old.fingerprint.hex()}.avsc").read_text())
    before = {f["name"] for f in was["fields"]}
    added = [f for f in new["fields"] if f["name"] not in before]
    assert all("default" in f for f in added), [f["name"] for f in added]


@pytest.mark.parametrize("old", OLD_RETRY, ids=lambda s: f"{s.name}.{s.fingerprint.hex()}")
def test_retry_items_written_before_auth_results_still_decode(old: schemas.Schema) -> None:
    # Retry items wait in their tier across an upgrade: the new deliverer reads the old ones.
    name, rec = schemas.decode(_old_wire(old, RETRY))
    assert name == schemas.DELIVERY_RETRY
    assert rec == RETRY | {"auth_results": ""}
    # And an old deliverer (or consumer) reads new items, ignoring the added field.
    wire = schemas.encode(schemas.DELIVERY_RETRY, RETRY | {"auth_results": "A-R: x"})
    _, back = schemas.decode(wire, reader=old)
    assert back == RETRY
