"""End to end on a real Kafka, with each store backend: SMTP in, scan, deliver or quarantine.

One scenario: 100 messages through the receiver, some carrying EICAR (plain, zipped,
zip-in-zip, base64 under an image name) or GTUBE. Every clean message reaches a real SMTP sink
exactly once with its trace headers, every infected or GTUBE message is quarantined, every
event decodes, and `mxgate trace` tells each story.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from support import samples
from support.cli import MXGATE
from support.pipeline import REPO, MakePipeline, Pipeline, queued_id, wait_for
from support.sink import SinkThread, mxgate_id

import schemas
from mxgate.kafka import read_events

pytestmark = pytest.mark.integration

BAD = {
    "eicar_plain": samples.eicar_plain,
    "eicar_zip": samples.eicar_zip,
    "eicar_zip_in_zip": samples.eicar_zip_in_zip,
    "eicar_base64_as_image": samples.eicar_base64_as_image,
    "gtube": samples.gtube_message,
}


@pytest.fixture(params=["fs", "s3"])
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    if request.param == "fs":
        return {"MXGATE_STORE__BACKEND": "fs", "MXGATE_STORE__PATH": str(tmp_path / "store")}
    s3 = request.getfixturevalue("s3")
    bucket = request.getfixturevalue("s3_bucket")
    return {
        "MXGATE_STORE__BACKEND": "s3",
        "MXGATE_STORE__S3_ENDPOINT": s3.endpoint_url,
        "MXGATE_STORE__S3_BUCKET": bucket,
        "MXGATE_STORE__S3_ACCESS_KEY_ID": s3.access_key,
        "MXGATE_STORE__S3_SECRET_ACCESS_KEY": s3.secret_key,
        "MXGATE_STORE__S3_REGION": s3.region,
    }


def trace_json(p: Pipeline, mid: str) -> dict:
    done = subprocess.run(
        [MXGATE, "trace", mid, "--json"],
        env=p.env,
        cwd=REPO,
        capture_output=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)


def test_hundred_messages_end_to_end(
    sink: SinkThread, make_pipeline: MakePipeline, store_env: dict[str, str]
) -> None:
    p = make_pipeline(sink.port, store_env=store_env)
    p.start_all()
    # A recipient outside every tenant's domains is refused at RCPT: no open relay.
    code, text = p.send(samples.clean_message(0), ["bob@elsewhere.test"])
    assert code == 550 and "5.7.1" in text

    jobs: list[tuple[str, bytes, list[str]]] = []
    bad_kinds = list(BAD) * 4  # 20 bad messages, four of each kind
    for i in range(100):
        rcpts = [f"user{i}@example.test"] + ([f"cc{i}@example.test"] if i % 7 == 0 else [])
        kind = bad_kinds.pop() if i % 10 in (3, 8) else "clean"
        body = BAD[kind]() if kind != "clean" else samples.clean_message(i)
        jobs.append((kind, body, rcpts))

    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda j: p.send(j[1], j[2]), jobs))
    for code, text in replies:
        assert code == 250, text
    ids = [queued_id(text) for _, text in replies]
    assert len(set(ids)) == 100
    kinds = dict(zip(ids, (j[0] for j in jobs), strict=True))
    rcpts = dict(zip(ids, (j[2] for j in jobs), strict=True))
    clean = [m for m in ids if kinds[m] == "clean"]
    bad = [m for m in ids if kinds[m] != "clean"]
    assert len(bad) == 20 and set(kinds.values()) == {"clean", *BAD}
    expected = {(m, r) for m in clean for r in rcpts[m]}

    wait_for(
        lambda: expected <= set(sink.copies_per_recipient()),
        180,
        "every clean recipient to receive its copy",
    )
    elapsed = time.monotonic() - t0

    # Everything accepted is decided and carried out: read the whole log back.
    def all_events() -> dict[type, list[Any]]:
        out: dict[type, list[Any]] = {}
        for event in read_events(p.settings):
            out.setdefault(type(event), []).append(event)
        return out

    events = wait_for(
        lambda: (
            ev
            if len((ev := all_events()).get(schemas.MessageQuarantined, [])) >= len(bad)
            else None
        ),
        120,
        "every bad message to be quarantined",
    )
    received = Counter(r.message_id for r in events[schemas.MessageReceived])
    scanned = Counter(r.message_id for r in events[schemas.MessageScanned])
    assert received == Counter(ids)
    assert scanned == Counter(ids), "exactly one decision per accepted message"
    actions = {r.message_id: r for r in events[schemas.MessageScanned]}
    for m in clean:
        assert actions[m].action == "deliver", actions[m]
    for m in bad:
        assert actions[m].action == "quarantine", (kinds[m], actions[m])
        assert actions[m].reasons, actions[m]
    quarantined = Counter(r.message_id for r in events[schemas.MessageQuarantined])
    assert quarantined == Counter(bad)

    # Exactly one copy per clean recipient, nothing for the bad ones, trace headers on top.
    copies = sink.copies_per_recipient()
    assert {k: v for k, v in copies.items() if v != 1} == {}
    assert set(copies) == expected
    originals = {queued_id(t): j[1] for (_, t), j in zip(replies, jobs, strict=True)}
    for msg in sink.messages:
        mid = mxgate_id(msg.data)
        head = msg.data.split(b"\r\n\r\n", 1)[0]
        assert b"Received: from client.sender.test" in head
        assert f"by mxgate.local (mxgate) with ESMTP id {mid}".encode() in head
        assert f"X-MXGate: action=deliver; id={mid}".encode() in head
        # The stored body is delivered unchanged beneath the added headers.
        assert msg.data.endswith(originals[mid]), mid

    delivered = [
        d for d in events[schemas.DeliveryAttempted]
        if all(r.status == "delivered" for r in d.recipients)
    ]  # fmt: skip
    assert {d.message_id for d in delivered} == set(clean)

    # mxgate trace tells the story of a clean and a bad message.
    h = trace_json(p, clean[0])
    assert h["outcome"] == "delivered"
    assert h["received"]["message_id"] == clean[0]
    assert {v["engine"] for v in h["scanned"]["verdicts"]} >= {"yara", "content"}
    assert all(s == "delivered" for s in h["recipients"].values())
    h = trace_json(p, bad[0])
    assert h["outcome"] == "quarantined"
    assert h["deliveries"] == []
    text = subprocess.run(
        [MXGATE, "trace", bad[0]],
        env=p.env, cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert "quarantine" in text and bad[0] in text

    rate = len(ids) / elapsed
    print(f"\nE2E[{store_env['MXGATE_STORE__BACKEND']}]: {len(ids)} messages in "
          f"{elapsed:.1f}s = {rate:.1f} msg/s (SMTP accept to last delivery)")  # fmt: skip
