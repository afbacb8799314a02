"""The reputation engine on a real Kafka: the compacted topic is read whole at start, followed
afterwards without a restart, and used together with the file list.

On a PLAINTEXT broker of this module's own, not the session's secured one: the engine is given
bootstrap servers only (``scanner.reputation_kafka``), no SASL or TLS settings, so it cannot
log in to a secured cluster yet.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from confluent_kafka import Producer

from devstack.kafka import LocalKafka
from mxgate import catalog
from mxgate.kafka import create_topics, producer_config
from mxgate.settings import KafkaSettings, ScannerSettings
from scanner.engines.registry import build_engines
from scanner.engines.reputation import ReputationEngine, publish_listing
from scanner.mime import parse

A, B, C, D, F = (f"sample {n} \x00\x01".encode() for n in "ABCDF")


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """An open broker (no users, no ACLs): what the reputation engine can reach today."""
    with LocalKafka(tmp_path_factory.mktemp("kafka-open")) as k:
        yield k


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _msg(data: bytes):  # type: ignore[no-untyped-def]
    m = EmailMessage()
    m.set_content("x")
    m.add_attachment(data, maintype="application", subtype="octet-stream", filename="f.bin")
    return parse(m.as_bytes(), message_id="m", tenant="t")


async def _until(cond, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_topic_loaded_at_start_then_followed(kafka, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bootstrap = kafka.bootstrap_servers
    ks = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:10]}.")
    create_topics(ks, [catalog.REPUTATION])
    topic = catalog.name(catalog.REPUTATION, ks.topic_prefix)

    # History before the scanner starts: the latest record per hash must win.
    publish_listing(bootstrap, _sha(A), topic=topic, source="feed", reason="Trojan.A")
    publish_listing(bootstrap, _sha(B), topic=topic, source="feed", reason="Trojan.B")
    publish_listing(bootstrap, _sha(B), False, topic=topic, source="analyst")  # withdrawn
    publish_listing(bootstrap, _sha(C).upper(), topic=topic, source="sandbox")  # no reason
    p = Producer(producer_config(ks))
    p.produce(topic, key=_sha(C), value=None)  # and a tombstone removes C again
    assert p.flush(20) == 0

    listfile = tmp_path / "bad.txt"
    listfile.write_text(f"{_sha(F)} File.Listed\n")
    engine = ReputationEngine(listfile, kafka=bootstrap, topic=topic, reload_interval=0)
    try:
        assert engine.topic is not None and len(engine.topic) == 1
        a = await engine.check(_msg(A))
        assert (a.outcome, a.symbols) == ("infected", ("sha256:Trojan.A",))
        assert (await engine.check(_msg(B))).outcome == "clean"
        assert (await engine.check(_msg(C))).outcome == "clean"
        f = await engine.check(_msg(F))  # the file source still counts
        assert (f.outcome, f.symbols) == ("infected", ("sha256:File.Listed",))
        before = engine.rules_version

        # After start: a new listing and a withdrawal reach the running engine.
        publish_listing(bootstrap, _sha(D), topic=topic, source="sandbox", reason="Dropper.D")
        publish_listing(bootstrap, _sha(A), False, topic=topic, source="analyst")

        async def followed() -> bool:
            return (await engine.check(_msg(D))).outcome == "infected" and (
                await engine.check(_msg(A))
            ).outcome == "clean"

        await _until(followed, "the engine to follow the topic")
        assert engine.rules_version != before
        d = await engine.check(_msg(D))
        assert d.symbols == ("sha256:Dropper.D",) and d.rules_version == engine.rules_version
    finally:
        await engine.aclose()


async def test_a_second_engine_sees_the_same_list_and_version(kafka) -> None:  # type: ignore[no-untyped-def]
    bootstrap = kafka.bootstrap_servers
    ks = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:10]}.")
    create_topics(ks, [catalog.REPUTATION])
    topic = catalog.name(catalog.REPUTATION, ks.topic_prefix)
    for data in (A, B, D):
        publish_listing(bootstrap, _sha(data), topic=topic, reason="Bad")
    publish_listing(bootstrap, _sha(B), False, topic=topic)

    # Built as the scanner builds it: from settings, topic only (no file).
    sc = ScannerSettings(
        engines=("reputation",), reputation_kafka=bootstrap, reputation_topic=topic
    )
    (one,) = build_engines(sc)
    two = ReputationEngine(None, kafka=bootstrap, topic=topic)
    try:
        assert isinstance(one, ReputationEngine)
        # Same list on every scanner -> same version -> their verdict caches agree.
        assert one.rules_version == two.rules_version
        assert one.rules_version.startswith("topic-2-")
        assert (await one.check(_msg(D))).outcome == "infected"
        assert (await two.check(_msg(B))).outcome == "clean"
    finally:
        await one.aclose()
        await two.aclose()
