"""Replay, shadow engines, retro-scan and the message index, on events a real pipeline wrote.

One scenario: the pipeline runs with only the content engine deciding and YARA in shadow mode.
EICAR therefore passes (YARA's shadow verdict sees it but does not count) and GTUBE is
quarantined. Then, with the roles stopped: a replay with the recorded engines and policy
changes nothing; a replay with YARA enabled would quarantine the EICAR message; a replay with
a lenient policy would deliver GTUBE and, asked to, redelivers it and records that; a
retro-scan with today's engines raises an alert for the delivered EICAR; and `mxgate trace`
finds the messages by sender, recipient, Message-ID header and time, and lists every event.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import samples
from support.cli import MXGATE
from support.pipeline import REPO, Pipeline, queued_id, wait_for
from support.sink import SinkThread

import schemas
from mxgate import catalog
from mxgate.kafka import read_events
from mxgate.settings import Settings
from ops.replay import load_policy, replay

pytestmark = pytest.mark.integration


def cli(p: Pipeline, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MXGATE, *args],
        env=env or p.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def events_on(settings: Settings, topic: catalog.Topic | str) -> list[Any]:
    name = topic if isinstance(topic, str) else catalog.name(topic, settings.kafka.topic_prefix)
    return list(read_events(settings, topics=[name]))


def test_replay_shadow_retroscan_and_search(kafka, tmp_path: Path) -> None:
    sink = SinkThread().start()
    p = Pipeline(
        tmp_path,
        kafka,
        sink.port,
        extra_env={
            "MXGATE_SCANNER__ENGINES": '["content"]',
            "MXGATE_SCANNER__SHADOW_ENGINES": '["yara"]',
            "MXGATE_OPS__STATE_PATH": str(tmp_path / "ops"),
        },
    )
    try:
        p.start("scanner")
        p.start("receiver")
        bodies = {
            "clean1": samples.clean_message(1),
            "clean2": samples.clean_message(2),
            "eicar": samples.eicar_plain(),
            "gtube": samples.gtube_message(),
        }
        ids: dict[str, str] = {}
        for kind, body in bodies.items():
            code, text = p.send(body, [f"{kind}@example.test"], sender="Alice@Sender.test")
            assert code == 250, text
            ids[kind] = queued_id(text)
        scanned = wait_for(
            lambda: ev if len(ev := events_on(p.settings, catalog.SCANNED)) == 4 else None,
            120,
            "four decisions",
        )
        # The deliverer starts last: it carries out the decisions (quarantine records).
        p.start("deliverer")
        wait_for(lambda: len(events_on(p.settings, catalog.QUARANTINE)) == 1, 120, "the quarantine")
    finally:
        p.stop_all()
    by_id = {r.message_id: r for r in scanned}
    # Shadow: YARA saw EICAR, recorded as a shadow verdict; the action ignored it.
    eicar = by_id[ids["eicar"]]
    assert eicar.action == "deliver"
    assert eicar.active_engines == ("content",)
    yara = [v for v in eicar.verdicts if v.engine == "yara"]
    assert len(yara) == 1 and yara[0].shadow is True and yara[0].outcome == "infected"
    assert [v.shadow for v in eicar.verdicts if v.engine == "content"] == [False]
    assert by_id[ids["gtube"]].action == "quarantine"

    s = p.settings
    start = min(r.received_at for r in scanned)
    end = max(r.received_at for r in scanned)

    # The recorded engines and policy reproduce every recorded decision.
    same = replay(s, start, end, run="same")
    assert sorted(same.replayed) == sorted(ids.values())
    assert same.changed == [] and same.missing == []
    replayed = events_on(s, same.topic)
    assert sorted(r.message_id for r in replayed) == sorted(ids.values())
    assert {r.scanner for r in replayed} == {"replay:same"}

    # Another engine set: YARA counting too would have quarantined the EICAR message.
    done = cli(p, "replay", "--from", start.isoformat(), "--to", "now", "--engines",
               "content,yara", "--name", "with-yara", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert sorted(out["replayed"]) == sorted(ids.values())
    assert [(c["message_id"], c["old_action"], c["new_action"]) for c in out["changed"]] == [
        (ids["eicar"], "deliver", "quarantine")
    ]
    assert any(r.startswith("virus:yara:") for r in out["changed"][0]["new_reasons"])
    # Nothing was delivered or recorded outside the replay topic without --redeliver.
    assert events_on(s, catalog.OPS) == [] and events_on(s, catalog.SUBMIT) == []

    # Tenant filter: the other tenant has no mail in the range.
    assert replay(s, start, end, run="none", tenant="other").replayed == []

    # A lenient policy would deliver GTUBE; --redeliver sends it and records who and why.
    pol = tmp_path / "lenient.toml"
    pol.write_text('version = "lenient-1"\nspam_tag = 5000.0\nspam_quarantine = 5000.0\n')
    lenient = replay(s, start, end, run="lenient", policy=load_policy(pol), redeliver=True)
    assert [(c.message_id, c.old_action, c.new_action) for c in lenient.changed] == [
        (ids["gtube"], "quarantine", "deliver")
    ]
    assert lenient.redelivered == [ids["gtube"]]
    ops = events_on(s, catalog.OPS)
    assert [(type(r), r.message_id, r.run) for r in ops] == [
        (schemas.ReplayRedelivered, ids["gtube"], "lenient")
    ]
    submit = events_on(s, catalog.SUBMIT)
    assert [(type(r), r.message_id, r.rcpt_to, r.kind) for r in submit] == [
        (schemas.DeliveryRetry, ids["gtube"], ("gtube@example.test",), schemas.WorkKind.DECISION)
    ]
    # The deliverer carries the redelivery out: the held GTUBE message reaches its recipient.
    before = len(sink.messages)
    try:
        p.start("deliverer", instance="deliverer-after-replay")
        got = wait_for(
            lambda: [m for m in sink.messages[before:] if ids["gtube"].encode() in m.data],
            120,
            "the redelivered message",
        )
    finally:
        p.stop_all()
        sink.stop()
    assert got[0].rcpt_to == ("gtube@example.test",)

    # Retro-scan with today's engines (YARA enabled): an alert for the delivered EICAR only.
    env = p.env | {"MXGATE_SCANNER__ENGINES": '["yara", "content"]'}
    done = cli(p, "retroscan", "--since", "1h", "--name", "retro", "--json", env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert sorted(out["replayed"]) == sorted([ids["clean1"], ids["clean2"], ids["eicar"]])
    assert out["alerts"] == [ids["eicar"]]
    alerts = [r for r in events_on(s, catalog.OPS) if isinstance(r, schemas.RetroscanAlert)]
    assert [(a.message_id, a.old_action, a.new_action) for a in alerts] == [
        (ids["eicar"], "deliver", "quarantine")
    ]

    # trace lists every event kind of a message, the ops events included.
    done = cli(p, "trace", ids["gtube"], "--json")
    assert done.returncode == 0, done.stderr
    h = json.loads(done.stdout)
    assert h["outcome"] == "quarantined"
    kinds = [e["event"] for e in h["events"]]
    assert kinds[:2] == ["MessageReceived", "MessageScanned"]
    assert {"MessageQuarantined", "ReplayRedelivered"} <= set(kinds)
    text = cli(p, "trace", ids["eicar"]).stdout
    assert "yara (shadow)" in text and "RetroscanAlert" in text

    # Search through the index: sender (case-insensitive), recipient, header, time range.
    def search(*args: str) -> list[str]:
        done = cli(p, "trace", *args, "--json")
        assert done.returncode in (0, 1), done.stderr
        return [m["message_id"] for m in json.loads(done.stdout)]

    assert sorted(search("--sender", "alice@sender.test")) == sorted(ids.values())
    assert search("--recipient", "EICAR@example.test") == [ids["eicar"]]
    assert search("--since", (end.isoformat()), "--sender", "alice@sender.test") == [
        m for m in ids.values() if by_id[m].received_at >= end
    ]
    assert search("--until", "2000-01-01T00:00:00") == []
    header = json.loads(cli(p, "trace", ids["clean2"], "--json").stdout)["received"][
        "header_message_id"
    ]
    assert header and search("--message-id-header", header) == [ids["clean2"]]
