"""Two operators releasing one quarantined message at once record one release, not two.

Each release claims the message's own transactional id before it reads the entry again, so
the one that claimed first and is overtaken is fenced by the broker and writes nothing, and a
later one finds the entry released. Real broker (the session's secured one, the CLI as ops).
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
import typer
from confluent_kafka import Producer
from support.bus import Bus
from support.factories import tenants_toml, write_tenants
from typer.testing import CliRunner

import schemas
from cli import quarantine
from cli.main import app
from mxgate import catalog
from mxgate.kafka import create_topics, producer_config, read_events
from mxgate.settings import Settings

pytestmark = pytest.mark.integration

MID = "01JRELEASETWICE00000000000"
NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


def test_concurrent_releases_record_one_release_and_one_delivery(
    kafka: Bus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    admin = kafka.settings(topic_prefix=prefix)
    create_topics(admin, catalog.all_topics(4))
    kafka.grant(prefix, admin.group_prefix, retry_tiers=4)
    held = schemas.MessageQuarantined(
        message_id=MID, tenant="example", quarantined_at=NOW, action="quarantine",
        reasons=("av:eicar",), mail_from="a@sender.test", rcpt_to=("bob@example.test",),
        object_key="k/held", size=1,
    )  # fmt: skip
    # Written as the deliverer writes it.
    p = Producer(producer_config(kafka.as_role(admin, "deliverer")))
    p.produce(catalog.name(catalog.QUARANTINE, prefix), key=MID.encode(),
              value=schemas.encode_event(held))  # fmt: skip
    assert p.flush(30) == 0
    env = kafka.env("ops") | {
        "MXGATE_KAFKA__TOPIC_PREFIX": prefix,
        "MXGATE_TENANTS_FILE": str(write_tenants(tmp_path, tenants_toml(1))),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    ops = Settings()
    cli = CliRunner()

    # Operator A has claimed the entry and found it held; operator B releases it meanwhile.
    producer_a, entry = quarantine._claim(ops, None, MID)
    assert entry.state == "held"
    b = cli.invoke(app, ["quarantine", "release", MID, "--reason", "B", "--json"])
    assert b.exit_code == 0, b.output
    # A goes on to record its release: fenced by B's claim, it writes nothing.
    released_a = schemas.QuarantineReleased(
        message_id=MID, tenant="example", released_at=NOW, released_by="A", reason="A",
        rcpt_to=("bob@example.test",),
    )  # fmt: skip
    with pytest.raises(typer.Exit) as exited:
        quarantine._commit_claimed(
            producer_a, MID, [(catalog.name(catalog.QUARANTINE, prefix), MID, released_a)]
        )
    assert exited.value.exit_code == 1
    # A third, later one finds it released.
    c = cli.invoke(app, ["quarantine", "release", MID, "--reason", "C"])
    assert c.exit_code == 1 and "already released" in c.output, c.output

    topics = [catalog.name(t, prefix) for t in (catalog.QUARANTINE, catalog.SUBMIT)]
    events = list(read_events(Settings().model_copy(update={"kafka": admin}), topics=topics))
    releases = [e for e in events if isinstance(e, schemas.QuarantineReleased)]
    assert [r.reason for r in releases] == ["B"]
    assert len([e for e in events if isinstance(e, schemas.DeliveryRetry)]) == 1
