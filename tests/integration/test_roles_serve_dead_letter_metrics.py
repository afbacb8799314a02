"""An operator sees a dead letter: `mxgate run scanner|deliverer` on a real broker serve
/metrics, and a record that is no event on a role's input topic shows up there.

* Each role, run as the console script with its ``metrics_port`` set, answers on
  ``http://127.0.0.1:PORT/metrics`` before its first record.
* Bytes that are no event on the received topic (the scanner's input) and on the scanned
  topic (the deliverer's) are dead-lettered, and each role's
  ``mxgate_kafka_dead_lettered_total{group,topic,cause="undecodable"}`` goes from absent to 1;
  each process counts only its own.
* SIGTERM drains the role and its metrics port closes with it.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from functools import partial
from typing import Any

import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families
from support.pipeline import MakePipeline, free_port, wait_for

import schemas
from mxgate import catalog
from mxgate.kafka import base_config, read_events

pytestmark = pytest.mark.integration

DEAD = "mxgate_kafka_dead_lettered_total"


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        return str(r.read().decode())


def _served(port: int) -> bool:
    try:
        _scrape(port)
    except OSError:
        return False
    return True


def _sample(port: int, name: str, labels: dict[str, str]) -> float | None:
    """The value of one series as the role serves it, or None when it has no such series."""
    for family in text_string_to_metric_families(_scrape(port)):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


def _counted(port: int, labels: dict[str, str]) -> bool:
    return _sample(port, DEAD, labels) == 1.0


def test_a_dead_letter_shows_on_the_metrics_of_the_role_that_set_it_aside(
    make_pipeline: MakePipeline, sink: Any
) -> None:
    ports = {"scanner": free_port(), "deliverer": free_port()}
    p = make_pipeline(
        sink.port,
        extra_env={f"MXGATE_{r.upper()}__METRICS_PORT": str(port) for r, port in ports.items()},
    )
    sources = {
        "scanner": catalog.name(catalog.RECEIVED, p.prefix),
        "deliverer": catalog.name(catalog.SCANNED, p.prefix),
    }
    group = p.settings.kafka.group_prefix
    labels = {
        r: {"group": f"{group}.{r}", "topic": sources[r], "cause": "undecodable"} for r in ports
    }
    for role, port in ports.items():
        p.start(role)
        wait_for(partial(_served, port), 60, f"the {role}'s /metrics")
        assert _sample(port, DEAD, labels[role]) is None, "dead-lettered before any record"

    producer = Producer(base_config(p.settings.kafka) | {"acks": "all"})
    for role, topic in sources.items():
        producer.produce(topic, key=f"garbage-{role}".encode(), value=b"not an event")
    assert producer.flush(30) == 0

    for role, port in ports.items():
        wait_for(partial(_counted, port, labels[role]), 90, f"the {role}'s dead letter, served")
    # The counters are the dead letters that are on the topic, one per role.
    dead_topic = catalog.name(catalog.DEADLETTER, p.prefix)
    letters = [
        e for e in read_events(p.settings, topics=[dead_topic])
        if isinstance(e, schemas.DeadLettered)
    ]  # fmt: skip
    assert sorted((d.key, d.topic, d.cause) for d in letters) == [
        ("garbage-deliverer", sources["deliverer"], "undecodable"),
        ("garbage-scanner", sources["scanner"], "undecodable"),
    ]
    # Each process serves only what it counted itself.
    assert _sample(ports["scanner"], DEAD, labels["deliverer"]) is None
    assert _sample(ports["deliverer"], DEAD, labels["scanner"]) is None

    for role, port in ports.items():
        assert p.stop(role) == 0, p.log_tail(role)
        with pytest.raises(urllib.error.URLError):
            _scrape(port)
