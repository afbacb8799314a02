"""The quarantine, end to end through `mxgate quarantine`: held messages are listed per
tenant with filters, shown, summarised in per-recipient digests sent through delivery,
released through delivery (who and why recorded, a ham training label written, exactly one
copy delivered, never twice), deleted; delivered mail can be reported as spam."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support import samples
from support.cli import MXGATE
from support.pipeline import REPO, MakePipeline, queued_id, wait_for
from support.sink import SinkThread, mxgate_id

import schemas
from mxgate import catalog
from ops.operators import identify
from ops.quarantine import read_topic

pytestmark = pytest.mark.integration


def test_quarantine_list_show_release_delete(
    sink: SinkThread, make_pipeline: MakePipeline, tmp_path: Path
) -> None:
    p = make_pipeline(sink.port)
    # The principal the CLI authenticates as on the bus (kafka:mxgate-ops on the secured
    # session broker; the local account, unix:user@host, on an open one).
    me = identify(p.env.get("MXGATE_KAFKA__SASL_USERNAME")).name
    roles = tmp_path / "operators.toml"
    env = p.env | {"MXGATE_OPS__OPERATORS_FILE": str(roles)}

    def role(line: str) -> None:
        roles.write_text(f'[operators."{me}"]\n{line}\n')

    role('role = "tenant-admin"\ntenants = ["example"]')

    def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [MXGATE, "quarantine", *args],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if ok:
            assert done.returncode == 0, done.stderr
        return done

    def listing(*filters: str) -> list[dict]:
        return json.loads(cli("list", "--tenant", "example", "--json", *filters).stdout)

    def send(body: bytes, rcpt: str) -> str:
        code, text = p.send(body, [rcpt])
        assert code == 250, text
        return queued_id(text)

    p.start_all()
    virus = send(samples.eicar_zip(recipient="bob@example.test"), "bob@example.test")
    spam = send(samples.gtube_message(recipient="carol@example.test"), "carol@example.test")
    elsewhere = send(samples.eicar_zip(recipient="x@other.test"), "x@other.test")
    clean = send(samples.clean_message(1), "dave@example.test")
    wait_for(lambda: len(listing()) == 2, 120, "two held messages for tenant example")
    wait_for(lambda: any(mxgate_id(m.data) == clean for m in sink.messages), 60, "clean")

    # Per tenant, with filters.
    assert {e["message_id"] for e in listing()} == {virus, spam}
    assert [e["message_id"] for e in listing("--reason", "virus")] == [virus]
    assert [e["message_id"] for e in listing("--recipient", "CAROL@")] == [spam]
    assert len(listing("--sender", "alice@sender.test", "--since", "1h")) == 2
    assert listing("--until", "2000-01-01T00:00:00") == []
    # A tenant-admin of example sees nothing of tenant other's quarantine.
    refused = cli("list", "--tenant", "other", "--json", ok=False)
    assert refused.returncode == 3 and "may not read on tenant other" in refused.stderr
    role('role = "read-only"')
    other = json.loads(cli("list", "--tenant", "other", "--json").stdout)
    assert [e["message_id"] for e in other] == [elsewhere]
    assert cli("show", elsewhere, "--tenant", "example", ok=False).returncode == 1
    role('role = "tenant-admin"\ntenants = ["example"]')

    shown = json.loads(cli("show", virus, "--tenant", "example", "--json").stdout)
    assert shown["headers"]["Subject"] == "quarterly report"
    assert shown["rcpt_to"] == ["bob@example.test"] and shown["state"] == "held"

    # The digest: one mail per recipient with what is held, through delivery.
    out = json.loads(
        cli("digest", "--tenant", "example", "--since", "1h", "--send", "--json").stdout
    )
    assert {r: v["held"] for r, v in out.items()} == {
        "bob@example.test": [virus],
        "carol@example.test": [spam],
    }

    def digests() -> dict[tuple[str, ...], bytes]:
        return {m.rcpt_to: m.data for m in sink.messages if b"Quarantine digest" in m.data}

    got = wait_for(lambda: d if len(d := digests()) == 2 else None, 120, "two digests")
    assert virus.encode() in got[("bob@example.test",)]
    assert spam.encode() in got[("carol@example.test",)]

    # Read-only may look but not release; a tenant-admin of another tenant may not either.
    role('role = "read-only"')
    refused = cli("release", virus, "--tenant", "example", "--reason", "x", ok=False)
    assert refused.returncode == 3 and "(read-only) may not release" in refused.stderr
    role('role = "tenant-admin"\ntenants = ["other"]')
    refused = cli("release", virus, "--reason", "x", ok=False)  # tenant found from the index
    assert refused.returncode == 3 and "may not release on tenant example" in refused.stderr
    role('role = "tenant-admin"\ntenants = ["example"]')

    # Release: delivered once, through the deliverer, recorded with who and why.
    cli("release", virus, "--tenant", "example", "--reason", "checked by hand")
    wait_for(lambda: any(mxgate_id(m.data) == virus for m in sink.messages), 120, "the release")
    again = cli("release", virus, "--tenant", "example", "--reason", "x", ok=False)
    assert again.returncode == 1 and "already released" in again.stderr
    released = [m for m in sink.messages if mxgate_id(m.data) == virus]
    assert len(released) == 1 and released[0].rcpt_to == ("bob@example.test",)
    assert b"action=release" in released[0].data

    # Delete: no longer held, cannot be released.
    cli("delete", spam, "--tenant", "example", "--reason", "real spam")
    assert listing() == []
    states = {e["message_id"]: e for e in listing("--state", "all")}
    assert states[virus]["state"] == "released" and states[spam]["state"] == "deleted"
    assert states[virus]["history"][0]["by"] == me
    assert states[virus]["history"][0]["reason"] == "checked by hand"
    assert cli("release", spam, "--tenant", "example", "--reason", "x", ok=False).returncode

    # Report-as-spam of delivered mail; both labels land on the training topic.
    cli("report-spam", clean, "--tenant", "example", "--reason", "phish")
    topic = catalog.name(catalog.TRAINING, p.settings.kafka.topic_prefix)
    labels = {
        e.message_id: (e.label, e.source, e.labelled_by)
        for e in read_topic(p.settings, topic)
        if isinstance(e, schemas.TrainingLabelled)
    }
    assert labels == {virus: ("ham", "release", me), clean: ("spam", "report", me)}
