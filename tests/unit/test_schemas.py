"""Avro schemas and the single-object encoding: round trips, fingerprints, bad input."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas

# Avro timestamp-micros carries microseconds in UTC.
times = st.datetimes(
    min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(dt.UTC)
)
text = st.text(max_size=40)
addrs = st.lists(st.emails(), max_size=5)

verdicts = st.fixed_dictionaries(
    {
        "engine": text,
        "kind": st.sampled_from(["antivirus", "antispam", "auth", "policy"]),
        "engine_version": text,
        "rules_version": text,
        "outcome": st.sampled_from(["clean", "infected", "spam", "error", "timeout"]),
        "score": st.floats(allow_nan=False, allow_infinity=False),
        "symbols": st.lists(text, max_size=4),
        "duration_ms": st.floats(min_value=0, max_value=1e6),
        "error": st.none() | text,
        "shadow": st.booleans(),
        "detail": st.dictionaries(text, text, max_size=3),
    }
)

received = st.fixed_dictionaries(
    {
        "message_id": text,
        "tenant": text,
        "received_at": times,
        "accepted_at": times,
        "receiver": text,
        "client_ip": text,
        "client_port": st.integers(0, 65535),
        "helo": text,
        "tls": st.none() | st.fixed_dictionaries({"version": text, "cipher": text}),
        "mail_from": text,
        "rcpt_to": addrs,
        "size": st.integers(0, 2**40),
        "sha256": text,
        "object_key": text,
        "header_message_id": st.none() | text,
    }
)

scanned = st.fixed_dictionaries(
    {
        "message_id": text,
        "tenant": text,
        "scanned_at": times,
        "scanner": text,
        "action": st.sampled_from(["deliver", "tag", "quarantine", "discard"]),
        "reasons": st.lists(text, max_size=3),
        "spam_score": st.floats(allow_nan=False, allow_infinity=False),
        "policy_version": text,
        "verdicts": st.lists(verdicts, max_size=4),
        "active_engines": st.lists(text, max_size=4),
        "mail_from": text,
        "rcpt_to": addrs,
        "object_key": text,
        "sha256": text,
        "size": st.integers(0, 2**40),
        "received_at": times,
        "client_ip": text,
        "helo": text,
        "defects": st.lists(text, max_size=3),
    }
)

attempted = st.fixed_dictionaries(
    {
        "message_id": text,
        "tenant": text,
        "attempted_at": times,
        "attempt": st.integers(1, 100),
        "remote_host": text,
        "action": st.sampled_from(["deliver", "tag"]),
        "recipients": st.lists(
            st.fixed_dictionaries(
                {
                    "recipient": text,
                    "status": st.sampled_from(["delivered", "deferred", "bounced", "expired"]),
                    "reply_code": st.integers(0, 599),
                    "reply": text,
                }
            ),
            max_size=4,
        ),
        "next_attempt_at": st.none() | times,
    }
)


@settings(max_examples=60)
@given(
    st.one_of(
        st.tuples(st.just(schemas.MESSAGE_RECEIVED), received),
        st.tuples(st.just(schemas.MESSAGE_SCANNED), scanned),
        st.tuples(st.just(schemas.DELIVERY_ATTEMPTED), attempted),
    )
)
def test_round_trip(named: tuple[str, dict]) -> None:
    name, rec = named
    wire = schemas.encode(name, rec)
    assert wire[:2] == b"\xc3\x01"
    assert wire[2:10] == schemas.schema(name).fingerprint
    got_name, got = schemas.decode(wire)
    assert got_name == name
    assert got == rec


def test_fingerprint_is_crc64_avro_of_canonical_form() -> None:
    # Spec test vector: the fingerprint of "int" is 0x7275d51a3f395c8f, little-endian on wire.
    assert fingerprint('"int"', "CRC-64-AVRO") == "8f5c393f1ad57572"
    for name in schemas.EVENTS:
        s = schemas.schema(name)
        assert s.canonical == to_parsing_canonical_form(s.parsed)
        assert len(s.fingerprint) == 8
    fps = [schemas.schema(n).fingerprint for n in schemas.EVENTS]
    assert len(set(fps)) == len(fps)


def test_every_schema_file_is_named_for_its_record() -> None:
    files = sorted(schemas.SCHEMA_DIR.glob("*.avsc"))
    assert files
    for f in files:
        doc = json.loads(f.read_text())
        assert f.stem == f"{doc['namespace']}.{doc['name']}"
        assert doc.get("doc"), f"{f.name} needs a doc for the data team"


@given(st.binary(max_size=200))
def test_decode_rejects_garbage_cleanly(data: bytes) -> None:
    try:
        schemas.decode(data)
    except schemas.SchemaError:
        pass


def test_decode_rejects_unknown_fingerprint_and_truncation() -> None:
    with pytest.raises(schemas.SchemaError, match="marker"):
        schemas.decode(b"{}")
    with pytest.raises(schemas.SchemaError, match="fingerprint"):
        schemas.decode(b"\xc3\x01" + b"\x00" * 8 + b"x")
    now = dt.datetime.now(dt.UTC)
    wire = schemas.encode(
        schemas.DELIVERY_ATTEMPTED,
        {"message_id": "m", "tenant": "t", "attempted_at": now, "attempt": 1,
         "remote_host": "h", "action": "deliver", "recipients": []},
    )  # fmt: skip
    with pytest.raises(schemas.SchemaError):
        schemas.decode(wire[:12])


def test_old_reader_reads_new_writer() -> None:
    # A consumer holding an older MessageScanned (without fields added since) still decodes.
    new = schemas.schema(schemas.MESSAGE_SCANNED)
    doc = json.loads((schemas.SCHEMA_DIR / f"{schemas.MESSAGE_SCANNED}.avsc").read_text())
    doc["fields"] = [f for f in doc["fields"] if f["name"] not in ("active_engines", "defects")]
    named: dict = {}
    for dep in ("EngineVerdict",):
        parse_schema(
            json.loads((schemas.SCHEMA_DIR / f"mxgate.events.{dep}.avsc").read_text()),
            named_schemas=named,
        )
    old = schemas.Schema("old", parse_schema(doc, named_schemas=named), "", b"")
    now = dt.datetime.now(dt.UTC)
    rec = {
        "message_id": "m", "tenant": "t", "scanned_at": now, "scanner": "s",
        "action": "deliver", "reasons": [], "spam_score": 0.0, "policy_version": "1",
        "verdicts": [], "active_engines": ["yara"], "mail_from": "", "rcpt_to": ["a@b"],
        "object_key": "k", "sha256": "h", "size": 1, "received_at": now,
        "client_ip": "", "helo": "", "defects": [],
    }  # fmt: skip
    assert new.name == schemas.MESSAGE_SCANNED
    _, got = schemas.decode(schemas.encode(schemas.MESSAGE_SCANNED, rec), reader=old)
    assert "active_engines" not in got and got["rcpt_to"] == ["a@b"]
