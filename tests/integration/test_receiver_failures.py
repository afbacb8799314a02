"""250 means safe: with the broker stopped or the store refusing writes, the receiver answers
451 and leaves nothing a later stage would act on; a non-tenant recipient gets 550."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException
from support import samples
from support.pipeline import Pipeline, queued_id

from devstack.kafka import LocalKafka
from mxgate.kafka import read_events

pytestmark = pytest.mark.integration


def received_ids(p: Pipeline) -> list[str]:
    """Every MessageReceived ID. Right after topic creation a partition may still lack a
    leader (NOT_LEADER on the watermark query): that is the fresh topic, so ask again."""
    for _ in range(30):
        try:
            return [e.message_id for e in read_events(p.settings)]
        except KafkaException as e:
            if e.args[0].code() != KafkaError.NOT_LEADER_FOR_PARTITION:
                raise
            time.sleep(1)
    raise AssertionError("the received topic never got a leader")


def test_store_refusing_writes_answers_451(kafka, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file where the store's parent directory should be")
    p = Pipeline(
        tmp_path,
        kafka.bootstrap_servers,
        sink_port=1,
        store_env={"MXGATE_STORE__PATH": str(blocker / "store")},
    )
    try:
        p.start("receiver")
        code, text = p.send(samples.clean_message(1), ["u@example.test"])
        assert code == 451 and "4.3.0" in text, text
        code, text = p.send(samples.clean_message(2), ["u@nowhere.test"])
        assert code == 550 and "5.7.1" in text, text
        assert received_ids(p) == []
    finally:
        p.stop_all()


def test_broker_down_answers_451(tmp_path: Path) -> None:
    broker = LocalKafka(tmp_path / "kafka", brokers=1)
    bootstrap = broker.start()
    p = Pipeline(
        tmp_path, bootstrap, sink_port=1, extra_env={"MXGATE_RECEIVER__ACCEPT_TIMEOUT": "5"}
    )
    try:
        p.start("receiver")
        code, text = p.send(samples.clean_message(1), ["u@example.test"])
        assert code == 250, text
        first = queued_id(text)
        broker.stop()
        code, text = p.send(samples.clean_message(2), ["u@example.test"])
        assert code == 451 and "4.3.0" in text, text
        assert p.stop("receiver") == 0
        # The broker comes back: only the message answered 250 is on the topic.
        broker.start()
        assert received_ids(p) == [first]
    finally:
        p.stop_all()
        broker.stop()


def test_size_is_advertised_and_enforced(kafka, tmp_path: Path) -> None:
    import smtplib

    p = Pipeline(
        tmp_path,
        kafka.bootstrap_servers,
        sink_port=1,
        extra_env={"MXGATE_RECEIVER__MAX_MESSAGE_SIZE": "20000"},
    )
    try:
        p.start("receiver")
        with smtplib.SMTP("127.0.0.1", p.receiver_port, timeout=30) as c:
            c.ehlo("client.test")
            assert c.has_extn("size") and c.esmtp_features["size"] == "20000"
            # Declared too large: refused at MAIL FROM.
            code, _ = c.mail("a@sender.test", ["SIZE=30000"])
            assert code == 552
            c.rset()
            # Undeclared but too large: refused after DATA, and nothing is accepted.
            c.mail("a@sender.test")
            c.rcpt("u@example.test")
            code, _ = c.data(samples.clean_message(1) + (b"x" * 98 + b"\r\n") * 300)
            assert code == 552
        assert received_ids(p) == []
    finally:
        p.stop_all()
