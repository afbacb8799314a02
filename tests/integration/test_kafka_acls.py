"""A real SASL_SSL broker with the StandardAuthorizer and the catalog's ACLs: each role can do
what it needs and no more, wrong credentials are refused, a forged switch is ignored."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from pydantic import SecretStr
from support.kafkaprobe import produce_error
from support.tlsca import TestCA

from devstack.kafka import BrokerSecurity, LocalKafka
from mxgate import catalog
from mxgate.enginecontrol import publish_control, read_control
from mxgate.kafka import (
    base_config,
    consumer_config,
    create_acls,
    create_topics,
    producer_config,
    record_on_partition,
)
from mxgate.settings import KafkaSettings

pytestmark = pytest.mark.integration

USERS = {"admin": "admin-pw", **{f"mxgate-{r}": f"{r}-pw" for r in catalog.ROLES}}


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    d = tmp_path_factory.mktemp("kafka-acls")
    ca = TestCA(d / "ca")
    cert, key = ca.issue("127.0.0.1")
    k = LocalKafka(d / "kafka", security=BrokerSecurity(ca.ca_file, cert, key, USERS))
    with k:
        yield k


def _settings(k: LocalKafka, role: str, password: str | None = None, **kw: str) -> KafkaSettings:
    sec = k.security
    assert sec is not None
    return KafkaSettings(
        bootstrap_servers=k.bootstrap_servers, instance_id=f"t-{role}",
        security_protocol="SASL_SSL", sasl_username=f"mxgate-{role}" if role != "admin" else role,
        sasl_password=SecretStr(password or USERS.get(f"mxgate-{role}", USERS["admin"])),
        ssl_ca_location=sec.ca_file, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.fixture(scope="module")
def admin(kafka: LocalKafka) -> KafkaSettings:
    s = _settings(kafka, "admin", control_key="k1")
    create_topics(s, catalog.all_topics(4))
    rules = catalog.acls()
    create_acls(s, rules)
    # The broker applies ACLs from the metadata log a moment after the controller commits.
    admin_client = AdminClient(base_config(s))
    any_acl = AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
        AclOperation.ANY, AclPermissionType.ANY,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while len(admin_client.describe_acls(any_acl).result()) < len(rules):
        assert time.monotonic() < deadline, "ACLs not visible on the broker"
        time.sleep(0.2)
    return s


def test_receiver_writes_received_not_control_or_submit(
    kafka: LocalKafka, admin: KafkaSettings
) -> None:
    r = _settings(kafka, "receiver")
    assert produce_error(r, catalog.RECEIVED.name) is None
    for refused in (catalog.CONTROL.name, catalog.SUBMIT.name):
        err = produce_error(r, refused)
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err


def test_receiver_reads_a_timed_out_write_back(kafka: LocalKafka, admin: KafkaSettings) -> None:
    r = _settings(kafka, "receiver")
    since = int(time.time() * 1000)
    where: list[int] = []
    p = Producer(producer_config(r, message_timeout=20.0) | {"log_level": 2})
    p.produce(catalog.RECEIVED.name, key=b"readback", value=b"v1",
              on_delivery=lambda e, m: where.append(-1 if e else m.partition() or 0))  # fmt: skip
    p.flush(30)
    assert where and where[0] >= 0
    assert record_on_partition(r, catalog.RECEIVED.name, where[0], "readback", b"v1", since, 30)


def test_wrong_password_fails_authentication(kafka: LocalKafka, admin: KafkaSettings) -> None:
    seen: list[KafkaError] = []
    cfg = producer_config(_settings(kafka, "receiver", password="wrong"), message_timeout=5.0)
    p = Producer(cfg | {"log_level": 0, "error_cb": seen.append})
    delivered: list[KafkaError | None] = []
    p.produce(catalog.RECEIVED.name, value=b"v", on_delivery=lambda e, _m: delivered.append(e))
    p.flush(30)
    assert delivered and delivered[0] is not None  # not written
    assert KafkaError._AUTHENTICATION in {e.code() for e in seen}, seen


def test_scanner_cannot_switch_an_engine_ops_can(kafka: LocalKafka, admin: KafkaSettings) -> None:
    scanner = _settings(kafka, "scanner", control_key="k1")
    # The scanner may write the control topic (its status) but its switch is unsigned.
    forged = scanner.model_copy(update={"control_key": SecretStr("")})
    publish_control(forged, "clamav", enabled=False, reason="forged")
    assert read_control(scanner).disabled_reason("clamav") is None
    publish_control(_settings(kafka, "ops", control_key="k1"), "clamav", False, reason="ops")
    assert read_control(scanner).disabled_reason("clamav") == "ops"


def test_scanner_acls_suffice_for_its_transaction(kafka: LocalKafka, admin: KafkaSettings) -> None:
    s = _settings(kafka, "scanner")
    assert produce_error(_settings(kafka, "receiver"), catalog.RECEIVED.name) is None
    c = Consumer(consumer_config(s, "scanner", static=False) | {"log_level": 2})
    c.subscribe([catalog.RECEIVED.name])
    p = Producer(producer_config(s, transactional_id=f"{s.group_prefix}.scanner.t1"))
    p.init_transactions(30)
    deadline = time.monotonic() + 60
    m = None
    while m is None or m.error() is not None:
        assert time.monotonic() < deadline, "nothing consumed"
        m = c.poll(1.0)
    p.begin_transaction()
    p.produce(catalog.SCANNED.name, key=m.key(), value=b"decided")
    p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 30)
    p.commit_transaction(30)
    c.close()
    # The receiver may not take a scanner's transactional id (it could fence the scanner).
    r = Producer(
        producer_config(_settings(kafka, "receiver"), transactional_id="mxgate.scanner.t1")
    )
    with pytest.raises(KafkaException) as e:
        r.init_transactions(30)
    assert e.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
