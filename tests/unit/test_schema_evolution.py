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
    "message_id": "01M8", "tenant": "t", "action": "dsn", "reasons": [], "spam_score": 0.0,
    "mail_from": "", "rcpt_to": ["b@y"], "object_key": "k", "received_at": NOW,
    "client_ip": "", "helo": "", "attempt": 2, "due_at": NOW, "first_attempt_at": NOW,
    "auth_results": "A-R: x", "kind": "dsn", "sender_auth": "spf", "size": 12345,
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
    # EngineVerdict.detail made MessageScanned v3 and RetroscanAlert v2; DeliveryRetry.kind v3,
    # DeliveryRetry.sender_auth v4, DeliveryRetry.size v5.
    assert sorted(s.name for s in OLD) == sorted(
        [schemas.DELIVERY_RETRY] * 4 + [schemas.MESSAGE_SCANNED] * 2 + [schemas.RETROSCAN_ALERT]
    )
    for old in OLD:
        assert old.name in schemas.EVENTS
        assert old.fingerprint != schemas.schema(old.name).fingerprint


def _doc(old: schemas.Schema) -> dict:
    """The JSON of an old version, exactly as published in history/."""
    return json.loads(
        (schemas.HISTORY_DIR / f"{old.name}.{old.fingerprint.hex()}.avsc").read_text()
    )


def _fields(record: dict) -> dict[str, dict]:
    return {f["name"]: f for f in record["fields"]}


def _verdict_fields(old: schemas.Schema) -> set[str]:
    """The EngineVerdict fields a consumer built on ``old`` knows."""
    return set(_fields(_fields(_doc(old))["verdicts"]["type"]["items"]))


def _defaults_since(old_fields: set[str], record: dict) -> dict:
    """What today's reader fills in for the fields of ``record`` an old writer did not have."""
    return {n: f["default"] for n, f in _fields(record).items() if n not in old_fields}


TODAY_VERDICT = json.loads((schemas.SCHEMA_DIR / "mxgate.events.EngineVerdict.avsc").read_text())
NEW_VERDICT = VERDICT | {"shadow": True, "detail": {"result": "match", "rule": "EICAR"}}


@pytest.mark.parametrize("old", OLD_SCANNED, ids=lambda s: f"{s.name}.{s.fingerprint.hex()}")
def test_old_consumer_reads_new_events(old: schemas.Schema) -> None:
    wire = schemas.encode(schemas.MESSAGE_SCANNED, SCANNED | {"verdicts": [NEW_VERDICT]})
    writer = _by_fp()[wire[2:10]]
    # The consumer's reader schema is the old one, exactly as it was published.
    rec = schemaless_reader(io.BytesIO(wire[10:]), writer, parse_schema(_doc(old)))
    known = _verdict_fields(old)
    # The fields added since are simply not there for it.
    assert rec["verdicts"] == [{k: v for k, v in NEW_VERDICT.items() if k in known}]
    assert rec["action"] == "deliver" and rec["rcpt_to"] == ["b@y"]
    # mxgate's own decoder, given the old schema as reader, agrees.
    _, same = schemas.decode(wire, reader=old)
    assert same == rec


@pytest.mark.parametrize("old", OLD_SCANNED, ids=lambda s: f"{s.name}.{s.fingerprint.hex()}")
def test_new_consumer_reads_old_events(old: schemas.Schema) -> None:
    known = _verdict_fields(old)
    written = {k: v for k, v in NEW_VERDICT.items() if k in known}
    wire = _old_wire(old, SCANNED | {"verdicts": [written]})
    name, rec = schemas.decode(wire)  # found by its old fingerprint, resolved into today's
    assert name == old.name
    assert rec["verdicts"] == [written | _defaults_since(known, TODAY_VERDICT)]
    # An outside consumer does the same with fastavro and a copy of the folder.
    writer = _by_fp()[wire[2:10]]
    today = load_schema(str(schemas.SCHEMA_DIR / f"{old.name}.avsc"))
    assert schemaless_reader(io.BytesIO(wire[10:]), writer, today) == rec


def test_every_new_field_since_an_old_version_has_a_default() -> None:
    # Rule 1 of the README, checked on the nested record that changed: shadow came with
    # MessageScanned v2, detail with v3 (and RetroscanAlert v2, which nests it too).
    added = {
        old.fingerprint.hex(): [f for f in TODAY_VERDICT["fields"] if f["name"] not in
                                _verdict_fields(old)]
        for old in OLD_SCANNED
    }  # fmt: skip
    assert {k: [f["name"] for f in v] for k, v in added.items()} == {
        "ab113f14b6d5b760": ["shadow", "detail"],
        "a2ea4f001bd8a4c4": ["detail"],
    }
    assert all("default" in f for v in added.values() for f in v)
    (retro,) = [s for s in OLD if s.name == schemas.RETROSCAN_ALERT]
    assert [f["name"] for f in TODAY_VERDICT["fields"] if f["name"] not in
            _verdict_fields(retro)] == ["detail"]  # fmt: skip


@pytest.mark.parametrize("old", OLD, ids=lambda s: f"{s.name}.{s.fingerprint.hex()}")
def test_fields_added_to_a_record_since_an_old_version_have_defaults(old: schemas.Schema) -> None:
    new = json.loads((schemas.SCHEMA_DIR / f"{old.name}.avsc").read_text())
    before = set(_fields(_doc(old)))
    added = [f for f in new["fields"] if f["name"] not in before]
    assert all("default" in f for f in added), [f["name"] for f in added]


@pytest.mark.parametrize("old", OLD_RETRY, ids=lambda s: f"{s.name}.{s.fingerprint.hex()}")
def test_retry_items_of_older_versions_still_decode(old: schemas.Schema) -> None:
    # Retry items wait in their tier across an upgrade: the new deliverer reads the old ones.
    known = set(_fields(_doc(old)))
    today = json.loads((schemas.SCHEMA_DIR / f"{schemas.DELIVERY_RETRY}.avsc").read_text())
    written = {k: v for k, v in RETRY.items() if k in known}
    name, rec = schemas.decode(_old_wire(old, written))
    assert name == schemas.DELIVERY_RETRY
    assert rec == written | _defaults_since(known, today)
    # And an old deliverer (or consumer) reads new items, ignoring the added fields.
    wire = schemas.encode(schemas.DELIVERY_RETRY, RETRY)
    _, back = schemas.decode(wire, reader=old)
    assert back == written
