"""What a principal may do on a secured bus, asked of the broker itself."""

from __future__ import annotations

from confluent_kafka import KafkaError, Message, Producer

from mxgate.kafka import producer_config
from mxgate.settings import KafkaSettings

__all__ = ["produce_error"]


def produce_error(s: KafkaSettings, topic: str) -> KafkaError | None:
    """Produce one record to ``topic`` as ``s``'s principal: the broker's error (e.g.
    TOPIC_AUTHORIZATION_FAILED), or None when it was written."""
    errors: list[KafkaError | None] = []

    def done(err: KafkaError | None, _m: Message) -> None:
        errors.append(err)

    p = Producer(producer_config(s, message_timeout=20.0) | {"log_level": 2})
    p.produce(topic, key=b"k", value=b"v", on_delivery=done)
    p.flush(30)
    assert errors, "no delivery report"
    return errors[0]
