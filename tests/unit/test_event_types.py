"""The typed events: every dataclass matches its .avsc, round-trips through the wire form, and
events written with older schema versions decode into today's dataclasses."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import io
import json
import types
from typing import Any, get_type_hints

import pytest
from fastavro import schemaless_writer

import schemas
from schemas import WorkKind

NOW = dt.datetime(2026, 3, 1, 8, 30, 0, 123456, tzinfo=dt.UTC)
FILES = sorted(schemas.SCHEMA_DIR.glob("*.avsc"))
PRIMITIVE = {
    "string": str,
    "bytes": bytes,
    "int": int,
    "long": int,
    "double": float,
    "boolean": bool,
}


def _doc(name: str) -> dict[str, Any]:
    return json.loads((schemas.SCHEMA_DIR / f"{name}.avsc").read_text())


def _expected(t: Any) -> Any:
    """The Python annotation a field of Avro type ``t`` must have."""
    if isinstance(t, str):
        return PRIMITIVE.get(t) or schemas.RECORD_TYPES[t]
    if isinstance(t, list):
        null, inner = t
        assert null == "null", "only [null, T] unions are used"
        return _expected(inner) | None
    if t.get("logicalType") == "timestamp-micros":
        assert t["type"] == "long"
        return dt.datetime
    if t["type"] == "array":
        return tuple[_expected(t["items"]), ...]
    if t["type"] == "map":
        return dict[str, _expected(t["values"])]
    raise AssertionError(f"unmapped Avro type {t}")


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _avro_default(d: Any) -> Any:
    return tuple(d) if isinstance(d, list) else d


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_dataclass_matches_its_avsc(path: Any) -> None:
    doc = json.loads(path.read_text())
    cls = schemas.RECORD_TYPES[path.stem]
    assert cls.SCHEMA == path.stem
    assert dataclasses.is_dataclass(cls)
    fields = dataclasses.fields(cls)
    hints = get_type_hints(cls)
    assert [f.name for f in fields] == [f["name"] for f in doc["fields"]], "names or order"
    for f, a in zip(fields, doc["fields"], strict=True):
        want = _expected(a["type"])
        got = hints[f.name]
        if want is str and isinstance(got, type) and issubclass(got, enum.StrEnum):
            # A string field may be a StrEnum (DeliveryRetry.kind); its default must be a member.
            assert _avro_default(a["default"]) in {m.value for m in got}
        else:
            assert got == want, f"{cls.__name__}.{f.name}: {got} is not {want}"
        if "default" in a:
            assert _default(f) == _avro_default(a["default"]), f"{cls.__name__}.{f.name} default"
        else:
            assert _default(f) is dataclasses.MISSING, f"{cls.__name__}.{f.name} has a default"


def test_every_record_has_a_dataclass_and_every_event_a_type() -> None:
    assert set(schemas.RECORD_TYPES) == {p.stem for p in FILES}
    assert set(schemas.EVENT_TYPES) == set(schemas.EVENTS)
    assert set(get_type_hints_union(schemas.Event)) == set(schemas.EVENT_TYPES.values())


def get_type_hints_union(u: Any) -> tuple[type, ...]:
    assert isinstance(u, types.UnionType)
    return u.__args__


def _sample(t: Any) -> Any:
    """A value of the Python type ``t`` that is not its field's default."""
    if t is str:
        return "x\u00e9"
    if t is bytes:
        return b"\xc3\x01\xff\x00"
    if t is int:
        return 7
    if t is float:
        return 1.5
    if t is bool:
        return True
    if t is dt.datetime:
        return NOW
    if isinstance(t, types.UnionType):
        return _sample(next(a for a in t.__args__ if a is not type(None)))
    origin = getattr(t, "__origin__", None)
    if origin is tuple:
        return (_sample(t.__args__[0]), _sample(t.__args__[0]))
    if origin is dict:
        return {"result": "pass", "header.d": "sender.test"}
    if isinstance(t, type) and issubclass(t, WorkKind):
        return WorkKind.DIGEST
    hints = get_type_hints(t)
    return t(**{f.name: _sample(hints[f.name]) for f in dataclasses.fields(t)})


@pytest.mark.parametrize("name", schemas.EVENTS, ids=lambda n: n.rsplit(".", 1)[1])
def test_round_trip_per_event_type(name: str) -> None:
    cls = schemas.EVENT_TYPES[name]
    event = _sample(cls)
    wire = schemas.encode_event(event)
    assert wire[:10] == schemas.MAGIC + schemas.schema(name).fingerprint
    back = schemas.decode_event(wire)
    assert back == event and type(back) is cls
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(back, dataclasses.fields(back)[0].name, None)
    # The same bytes as the dict API writes: the wire format is the schema's, not ours.
    assert schemas.decode(wire) == (name, event.to_avro())


@pytest.mark.parametrize("old", schemas.history(), ids=lambda s: f"{s.name}.{s.fingerprint.hex()}")
def test_old_versions_decode_into_todays_dataclasses(old: schemas.Schema) -> None:
    cls = schemas.EVENT_TYPES[old.name]
    today = _sample(cls).to_avro()
    doc = json.loads((schemas.HISTORY_DIR / f"{old.name}.{old.fingerprint.hex()}.avsc").read_text())
    # What an old writer wrote: today's values for the fields it knew (nested ones too).
    written = _restrict(today, doc)
    buf = io.BytesIO()
    schemaless_writer(buf, old.parsed, written)
    event = schemas.decode_event(schemas.MAGIC + old.fingerprint + buf.getvalue())
    assert type(event) is cls
    assert event == cls.from_avro(schemas.decode(schemas.encode(old.name, written))[1])
    if isinstance(event, schemas.MessageScanned | schemas.RetroscanAlert):
        assert all(v.detail == {} for v in event.verdicts)  # the default fills the new field


def _restrict(value: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for f in record["fields"]:
        v = value[f["name"]]
        t = f["type"]
        if isinstance(t, dict) and t.get("type") == "array" and isinstance(t["items"], dict):
            v = [_restrict(x, t["items"]) for x in v]
        out[f["name"]] = v
    return out


@pytest.mark.parametrize("kind", ["dsn", "digest", "release"])
def test_retry_items_from_before_kind_get_their_kind_from_action(kind: str) -> None:
    # Items written before DeliveryRetry.kind said the kind in ``action``.
    (v2,) = [s for s in schemas.history() if s.fingerprint.hex() == "8fb497d315ade426"]
    rec = {"message_id": "m", "tenant": "t", "action": kind, "reasons": [], "spam_score": 0.0,
           "mail_from": "", "rcpt_to": ["a@b"], "object_key": "k", "received_at": NOW,
           "client_ip": "", "helo": "", "attempt": 1, "due_at": NOW, "first_attempt_at": NOW,
           "auth_results": ""}  # fmt: skip
    buf = io.BytesIO()
    schemaless_writer(buf, v2.parsed, rec)
    item = schemas.decode_event(schemas.MAGIC + v2.fingerprint + buf.getvalue())
    assert isinstance(item, schemas.DeliveryRetry)
    assert item.kind is WorkKind(kind) and item.action == kind
    old_decision = schemas.decode_event(
        schemas.MAGIC + v2.fingerprint + _wire(v2, rec | {"action": "tag"})
    )
    assert isinstance(old_decision, schemas.DeliveryRetry)
    assert old_decision.kind is WorkKind.DECISION and old_decision.action == "tag"


def _wire(s: schemas.Schema, rec: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, s.parsed, rec)
    return buf.getvalue()


def _scanned(action: str = "tag") -> schemas.MessageScanned:
    return dataclasses.replace(_sample(schemas.MessageScanned), action=action)


def test_one_constructor_for_new_work_items() -> None:
    dsn = schemas.DeliveryRetry.first(
        WorkKind.DSN, message_id="d", tenant="t", reasons=["dsn-for:m"], mail_from="",
        rcpt_to=["a@b"], object_key="k", received_at=NOW, now=NOW, helo="mx",
    )  # fmt: skip
    # Deliverers older than ``kind`` read the kind in action.
    assert (dsn.kind, dsn.action, dsn.attempt, dsn.due_at, dsn.first_attempt_at) == (
        WorkKind.DSN, "dsn", 1, NOW, NOW,
    )  # fmt: skip
    with pytest.raises(ValueError, match="action"):
        schemas.DeliveryRetry.first(
            WorkKind.DECISION, message_id="m", tenant="t", reasons=[], mail_from="",
            rcpt_to=[], object_key="k", received_at=NOW, now=NOW,
        )  # fmt: skip
    s = _scanned()
    item = schemas.DeliveryRetry.for_decision(s, NOW, extra_reasons=["replay:r"], auth_results="A")
    assert item.kind is WorkKind.DECISION and item.action == "tag"
    assert item.reasons == (*s.reasons, "replay:r") and item.auth_results == "A"
    assert (item.rcpt_to, item.object_key, item.helo) == (s.rcpt_to, s.object_key, s.helo)
    later = NOW + dt.timedelta(minutes=5)
    again = item.next_attempt(["only@this"], later)
    assert (again.attempt, again.rcpt_to, again.due_at) == (2, ("only@this",), later)
    assert again.first_attempt_at == NOW and again.kind is WorkKind.DECISION


def test_decode_event_rejects_what_is_not_an_event() -> None:
    with pytest.raises(schemas.SchemaError):
        schemas.decode_event(b"\xc3\x01" + b"\x00" * 8)
    with pytest.raises(schemas.SchemaError, match="marker"):
        schemas.decode_event(b"{}")


def test_the_scanner_copies_each_findings_detail_into_its_verdict() -> None:
    from scanner.engines.common import Finding
    from scanner.service import verdict_record

    f = Finding("dkim", "1", "r", "clean", symbols=("DKIM_PASS",), kind="auth",
                detail={"result": "pass", "header.d": "sender.test", "header.s": "k"})  # fmt: skip
    v = verdict_record(f, shadow=True)
    assert (v.engine, v.kind, v.outcome, v.symbols, v.shadow) == (
        "dkim", "auth", "clean", ("DKIM_PASS",), True,
    )  # fmt: skip
    assert v.detail == {"result": "pass", "header.d": "sender.test", "header.s": "k"}
    assert verdict_record(Finding("yara", "1", "r", "clean")).detail == {}
