"""Kafka security without a broker: settings validation, client configs, the ACLs of each
role (and that infra/kafka/acls.txt is what the code generates), signed engine switches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

import schemas
from mxgate import catalog
from mxgate.enginecontrol import SIGNATURE_HEADER, ControlView, sign
from mxgate.kafka import base_config
from mxgate.settings import KafkaSettings
from mxgate.timeutil import utcnow

ROOT = Path(__file__).resolve().parents[2]


def test_plaintext_config_has_no_security_keys() -> None:
    cfg = base_config(KafkaSettings(bootstrap_servers="b:9092", instance_id="i"))
    assert cfg == {"bootstrap.servers": "b:9092", "client.id": "i"}


def test_sasl_ssl_config(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "c.pem", "k.pem"))
    for f in (ca, cert, key):
        f.write_text("x")
    s = KafkaSettings(
        bootstrap_servers="b:9093", instance_id="i", security_protocol="SASL_SSL",
        sasl_username="mxgate-receiver", sasl_password=SecretStr("pw"),
        ssl_ca_location=ca, ssl_certificate_location=cert, ssl_key_location=key,
    )  # fmt: skip
    cfg = base_config(s)
    assert cfg["security.protocol"] == "sasl_ssl"
    assert cfg["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (cfg["sasl.username"], cfg["sasl.password"]) == ("mxgate-receiver", "pw")
    assert cfg["ssl.ca.location"] == str(ca)
    assert (cfg["ssl.certificate.location"], cfg["ssl.key.location"]) == (str(cert), str(key))
    assert "pw" not in repr(s) and "pw" not in str(s.model_dump())


@pytest.mark.parametrize("missing", ["sasl_username", "sasl_password"])
def test_sasl_without_credentials_names_the_key(missing: str) -> None:
    given = {"sasl_username": "u", "sasl_password": "p"}
    del given[missing]
    with pytest.raises(ValidationError, match=missing):
        KafkaSettings(security_protocol="SASL_PLAINTEXT", **given)  # type: ignore[arg-type]


def test_tls_files_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="ssl_ca_location"):
        KafkaSettings(security_protocol="SSL", ssl_ca_location=tmp_path / "nope.pem")
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ValidationError, match="ssl_key_location"):
        KafkaSettings(security_protocol="SSL", ssl_certificate_location=cert)


def _ops(role: str) -> set[tuple[str, str, str]]:
    p = catalog.principal(role)
    return {(a.operation, a.resource, a.name) for a in catalog.acls() if a.principal == p}


def test_receiver_writes_received_only_not_control_or_submit() -> None:
    r = _ops("receiver")
    written = {n for op, res, n in r if op == "WRITE" and res == "TOPIC"}
    # The greylisting table is the receivers' own shared state.
    assert written == {catalog.RECEIVED.name, catalog.REJECTED.name, catalog.GREYLIST.name}
    assert not any(res == "TRANSACTIONAL_ID" for _op, res, _n in r)


def test_receiver_may_read_back_a_timed_out_write() -> None:
    # mxgate.kafka.record_on_partition: reads its own topic with its own (never joined) group.
    r = _ops("receiver")
    assert ("READ", "TOPIC", catalog.RECEIVED.name) in r
    assert ("READ", "GROUP", "mxgate.produce-check") in r


def test_only_ops_and_the_scanner_write_control_and_only_ops_writes_training() -> None:
    writers = {
        a.principal
        for a in catalog.acls()
        if a.operation == "WRITE" and a.name == catalog.CONTROL.name
    }
    assert writers == {catalog.principal("ops"), catalog.principal("scanner")}
    assert {
        a.principal
        for a in catalog.acls()
        if a.operation == "WRITE" and a.name == catalog.TRAINING.name
    } == {catalog.principal("ops")}


def test_data_reader_only_reads() -> None:
    assert {op for op, _r, _n in _ops("data-reader")} == {"READ"}
    assert ("READ", "TOPIC", catalog.RECEIVED.name) not in _ops("data-reader")


def test_topic_prefix_reaches_every_topic_acl() -> None:
    for a in catalog.acls(topic_prefix="t1."):
        if a.resource == "TOPIC":
            # faust names the scoreboard's changelog topics by its app id, which holds the
            # topic prefix after the group prefix.
            assert a.name.startswith("t1.mxgate.") or a.name == catalog.scoreboard_app("t1."), a


def test_acl_file_is_current() -> None:
    assert (ROOT / "infra/kafka/acls.txt").read_text() == catalog.acl_file(), (
        "regenerate: mxgate topics acl --write infra/kafka/acls.txt"
    )


def _switch(engine: str, enabled: bool = False) -> bytes:
    return schemas.encode_event(
        schemas.EngineControlled(engine=engine, enabled=enabled, reason="r", actor="a", at=utcnow())
    )


def test_signed_switch_counts_unsigned_and_forged_do_not() -> None:
    key, value = b"engine/clamav", _switch("clamav")
    view = ControlView(control_key="k1")
    view.apply(value, key)  # unsigned
    view.apply(value, key, [(SIGNATURE_HEADER, sign("other", key, value).encode())])  # forged
    view.apply(value, key, [(SIGNATURE_HEADER, sign("k1", b"engine/spamd", value).encode())])
    assert view.disabled_reason("clamav") is None and view.rejected == 3
    view.apply(value, key, [(SIGNATURE_HEADER, sign("k1", key, value).encode())])
    assert view.disabled_reason("clamav") == "r"


def test_without_key_switches_count_as_before() -> None:
    view = ControlView()
    view.apply(_switch("clamav"), b"engine/clamav")
    assert view.disabled_reason("clamav") == "r"


def test_a_switch_under_a_status_key_never_switches() -> None:
    view = ControlView()
    view.apply(_switch("clamav"), b"status/scanner-1/clamav")
    view.apply(_switch("clamav"), b"engine/spamd")
    assert view.disabled_reason("clamav") is None and view.rejected == 2


def test_mxgate_up_never_writes_a_password_into_runtime_json(tmp_path: Path) -> None:
    from devstack import runtime

    path = tmp_path / "runtime.json"
    env = {"MXGATE_KAFKA__SASL_PASSWORD": "s3cret", "MXGATE_KAFKA__SASL_USERNAME": "u"}
    runtime.write(path, env)
    assert json.loads(path.read_text())["env"] == {"MXGATE_KAFKA__SASL_USERNAME": "u"}


def test_an_ops_identity_is_the_sasl_principal() -> None:
    from ops.operators import identify

    assert identify("mxgate-ops") == identify("mxgate-ops")
    assert identify("mxgate-ops").name == "kafka:mxgate-ops" and identify("x").authenticated


def test_ops_may_put_a_dead_letter_back_on_any_consumed_topic() -> None:
    # `mxgate deadletter retry` writes the record back to its source topic: whatever a
    # transactional loop consumes (the scanner: received; the deliverer: scanned, submit and
    # the retry tiers). Found by the integration suite's secured broker.
    written = {n for op, res, n in _ops("ops") if op == "WRITE" and res == "TOPIC"}
    consumed = [catalog.RECEIVED, catalog.SCANNED, catalog.SUBMIT]
    consumed += [catalog.retry_tier(i) for i in range(4)]
    assert {t.name for t in consumed} <= written
