"""The local KRaft Kafka: a real broker produces and consumes; three survive a broker crash."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from devstack.kafka import LocalKafka

pytestmark = pytest.mark.integration


def _create_topic(bootstrap: str, replication: int, partitions: int = 3) -> str:
    """Create a fresh topic (test isolation) and return its name."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    config = {"min.insync.replicas": str(max(1, replication - 1))}
    futures = admin.create_topics([NewTopic(name, partitions, replication, config=config)])
    futures[name].result(timeout=60)
    return name


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """Produce with acks=all and idempotence; fail if any delivery is not acknowledged."""
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for value in values:
        producer.produce(topic, value=value, key=value, on_delivery=on_delivery)
    # flush returns how many messages are still undelivered; the bound only stops a hang.
    assert producer.flush(120) == 0
    assert errors == []


def _consume(bootstrap: str, topic: str, count: int) -> list[bytes]:
    """Read ``count`` messages from the start of ``topic`` with a fresh consumer group."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{uuid.uuid4().hex[:12]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    got: list[bytes] = []
    try:
        consumer.subscribe([topic])
        # Bounded so a broken cluster fails the test instead of hanging it.
        end = time.monotonic() + 120
        while len(got) < count and time.monotonic() < end:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error() is not None:
                raise KafkaException(msg.error())
            value = msg.value()
            assert value is not None
            got.append(value)
    finally:
        consumer.close()
    return got


def test_single_broker_round_trip_and_restart(tmp_path: Path) -> None:
    """Produce/consume on one broker; a restart on the same workdir keeps ports and data."""
    kafka = LocalKafka(tmp_path / "kafka")
    with kafka:
        bootstrap = kafka.bootstrap_servers
        topic = _create_topic(bootstrap, replication=1)
        values = [f"m{i}".encode() for i in range(20)]
        _produce(bootstrap, topic, values)
        assert sorted(_consume(bootstrap, topic, len(values))) == sorted(values)

    assert not kafka.broker_running(0)
    kafka.stop()  # idempotent

    with LocalKafka(tmp_path / "kafka") as again:
        assert again.bootstrap_servers == bootstrap
        assert again.cluster_id == kafka.cluster_id
        assert sorted(_consume(bootstrap, topic, len(values))) == sorted(values)


def test_three_brokers_survive_a_killed_broker(kafka_cluster3: LocalKafka) -> None:
    """RF=3, min ISR 2: with one broker killed, acks=all still succeeds; it rejoins after."""
    bootstrap = kafka_cluster3.bootstrap_servers
    topic = _create_topic(bootstrap, replication=3)
    before = [f"before-{i}".encode() for i in range(10)]
    _produce(bootstrap, topic, before)

    kafka_cluster3.kill_broker(0)
    assert not kafka_cluster3.broker_running(0)
    after = [f"after-{i}".encode() for i in range(10)]
    _produce(bootstrap, topic, after)
    assert sorted(_consume(bootstrap, topic, 20)) == sorted(before + after)

    kafka_cluster3.start_broker(0)
    assert kafka_cluster3.broker_running(0)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    assert len(admin.list_topics(timeout=30).brokers) == 3
