"""The data team's example consumers (examples/), run as a data team would run them.

Scenario: the real pipeline decides a clean message and an EICAR one; then the Python example
(fastavro) and the Go example (hamba/avro, franz-go, built here with ``go build``) read the
verdict stream from the real broker with the pipeline's topic prefix, and each prints exactly
those two decisions. A second scenario writes events by hand: an older ``MessageScanned``
version from schemas/avro/history/, a current one with a shadow verdict, and a value with a
fingerprint nobody published; both examples decode the first two and stop at the third.
Neither example may use mxgate's code: only the .avsc files are shared.

On a PLAINTEXT broker of this module's own, not the session's secured one: the examples take
``--bootstrap`` only (no SASL or TLS options), so they cannot log in as the data-reader yet.
"""

from __future__ import annotations

import ast
import io
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from fastavro import schemaless_writer
from support import samples
from support.bus import Bus
from support.pipeline import REPO, Pipeline, queued_id
from support.sink import SinkThread

import schemas
from devstack.kafka import LocalKafka
from mxgate import catalog
from mxgate.kafka import create_topics
from mxgate.settings import KafkaSettings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    """An open broker (no users, no ACLs): what the examples can reach today."""
    with LocalKafka(tmp_path_factory.mktemp("kafka-open")) as k:
        yield Bus.open(k.bootstrap_servers)


PY_EXAMPLE = REPO / "examples" / "consume_verdicts.py"
GO_EXAMPLE = REPO / "examples" / "go-verdicts"
SCHEMA_DIR = REPO / "schemas" / "avro"
# Our own top-level packages: an example importing one would not run at a data team's site.
OUR_PACKAGES = {"mxgate", "schemas", "receiver", "scanner", "deliverer"}
# A hang guard for each consumer run, not a performance bound: a consumer that never sees
# its N decisions must fail the test instead of blocking it.
CONSUMER_TIMEOUT = 180


@pytest.fixture(scope="module")
def go_verdicts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/go-verdicts built by the machine's Go toolchain into a temporary folder.

    ``-mod=readonly`` builds exactly the versions pinned in go.mod/go.sum and never rewrites
    them; the first build on a machine fetches the modules, later ones use the module cache.
    """
    go = shutil.which("go")
    if go is None:
        pytest.fail("the go toolchain is not on PATH: it is needed to build examples/go-verdicts")
    out = tmp_path_factory.mktemp("go-verdicts") / "go-verdicts"
    done = subprocess.run(
        [go, "build", "-mod=readonly", "-o", str(out), "."],
        cwd=GO_EXAMPLE,
        env=os.environ | {"CGO_ENABLED": "0"},  # a static binary: no C compiler needed
        capture_output=True,
        text=True,
        timeout=900,  # a cold module cache and build cache on 2 cores
        check=False,
    )
    assert done.returncode == 0, f"go build failed:\n{done.stderr}"
    return out


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, str(PY_EXAMPLE), *args]


def go_cmd(binary: Path, *args: str) -> list[str]:
    # Go's flag package accepts the same --options. The schema folder is given explicitly:
    # the binary has no repository to find it in.
    return [str(binary), "--schemas", str(SCHEMA_DIR), *args]


def run_consumers(cmds: dict[str, list[str]], cwd: Path) -> dict[str, subprocess.Popen[str]]:
    """Run the consumers side by side (they wait on the same topic) until each exits."""
    procs = {
        name: subprocess.Popen(
            cmd,
            cwd=cwd,  # not the repository: nothing may be picked up from the working directory
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for name, cmd in cmds.items()
    }
    try:
        for p in procs.values():
            p.wait(CONSUMER_TIMEOUT)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)
    return procs


def output(p: subprocess.Popen[str]) -> tuple[list[dict[str, Any]], str]:
    """The JSON lines a finished consumer printed, and its stderr."""
    assert p.stdout is not None and p.stderr is not None
    out, err = p.stdout.read(), p.stderr.read()
    p.stdout.close()
    p.stderr.close()
    return [json.loads(line) for line in out.splitlines()], err


@pytest.fixture
def sink() -> Iterator[SinkThread]:
    s = SinkThread().start()
    try:
        yield s
    finally:
        s.stop()


def test_python_example_uses_no_mxgate_code() -> None:
    """The Python example imports third-party libraries and the standard library only."""
    tree = ast.parse(PY_EXAMPLE.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert {"fastavro", "confluent_kafka"} <= imported
    assert not imported & OUR_PACKAGES


def test_examples_compute_the_published_fingerprints(go_verdicts: Path, tmp_path: Path) -> None:
    """Both examples fingerprint every .avsc (current and history) as mxgate's writers do."""
    ours = {s.fingerprint.hex(): s.name for s in schemas.history()}
    ours |= {schemas.schema(n).fingerprint.hex(): n for n in schemas.EVENTS}
    listings = {}
    for name, cmd in {
        "python": python_cmd("--schemas", str(SCHEMA_DIR), "--list-schemas"),
        "go": go_cmd(go_verdicts, "--list-schemas"),
    }.items():
        done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{name}: {done.stderr}"
        listings[name] = done.stdout.splitlines()
        held = {line.split()[0]: line.split()[1] for line in listings[name]}
        # Every event schema mxgate writes (nested types are listed too, but never sent alone).
        assert {fp: held.get(fp) for fp in ours} == ours, name
    assert listings["python"] == listings["go"]


def test_examples_print_the_pipelines_decisions(
    kafka: Any, sink: SinkThread, go_verdicts: Path, tmp_path: Path
) -> None:
    p = Pipeline(tmp_path, kafka, sink.port)
    try:
        p.start_all()
        code, clean = p.send(samples.clean_message(1), [samples.DEFAULT_RECIPIENT])
        assert code == 250, clean
        code, virus = p.send(samples.eicar_plain(), [samples.DEFAULT_RECIPIENT])
        assert code == 250, virus
        expected = {queued_id(clean): "deliver", queued_id(virus): "quarantine"}

        # No consumer group: each is assigned every partition and reads from the start
        # (the next test covers groups).
        args = ("--bootstrap", kafka.bootstrap_servers, "--topic-prefix", p.prefix)
        args += ("--from-beginning", "--max", "2")
        procs = run_consumers(
            {"python": python_cmd(*args), "go": go_cmd(go_verdicts, *args)}, tmp_path
        )
    finally:
        p.stop_all()

    printed = {}
    current = schemas.schema(schemas.MESSAGE_SCANNED).fingerprint.hex()
    for name, proc in procs.items():
        lines, err = output(proc)
        assert proc.returncode == 0, f"{name} exited {proc.returncode}: {err}"
        assert {d["message_id"]: d["action"] for d in lines} == expected, name
        assert len(lines) == 2, name
        by_id = {d["message_id"]: d for d in lines}
        assert by_id[queued_id(virus)]["reasons"], name
        assert any(v["outcome"] == "infected" for v in by_id[queued_id(virus)]["verdicts"]), name
        assert all(v["outcome"] != "infected" for v in by_id[queued_id(clean)]["verdicts"]), name
        assert {d["tenant"] for d in lines} == {"example"}, name
        assert {d["writer_schema"] for d in lines} == {current}, name
        printed[name] = by_id
    # Two libraries, two languages, one reading of the same bytes.
    assert printed["python"] == printed["go"]


def test_examples_decode_older_schemas_resume_and_stop_at_unknown_ones(
    kafka: Any, go_verdicts: Path, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    settings = KafkaSettings(bootstrap_servers=kafka.bootstrap_servers, topic_prefix=prefix)
    create_topics(settings, [catalog.SCANNED])
    topic = catalog.name(catalog.SCANNED, prefix)

    # v1: before EngineVerdict.shadow (later versions are in history/ too).
    (v1,) = [s for s in schemas.history() if s.fingerprint.hex() == "ab113f14b6d5b760"]
    v2 = schemas.schema(schemas.MESSAGE_SCANNED)
    assert v1.fingerprint != v2.fingerprint

    def event(mid: str, action: str, shadow: bool | None) -> dict[str, Any]:
        verdict = {
            "engine": "clamav", "kind": "antivirus", "engine_version": "1.4",
            "rules_version": "27000", "outcome": "clean", "score": 0.0, "symbols": [],
            "duration_ms": 3.0, "error": None,
        }  # fmt: skip
        if shadow is not None:
            verdict["shadow"] = shadow
        at = datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)
        return {
            "message_id": mid, "tenant": "example", "scanned_at": at, "scanner": "test",
            "action": action, "reasons": [], "spam_score": 0.0, "policy_version": "test-1",
            "verdicts": [verdict], "active_engines": ["clamav"], "mail_from": "a@sender.test",
            "rcpt_to": ["b@example.test"], "object_key": "k", "sha256": "0" * 64, "size": 1,
            "received_at": at, "client_ip": "192.0.2.1", "helo": "sender.test", "defects": [],
        }  # fmt: skip

    def encode(s: schemas.Schema, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(s.header)
        schemaless_writer(buf, s.parsed, record)
        return buf.getvalue()

    old_id, new_id = "01OLDSCHEMA" + "0" * 15, "01NEWSCHEMA" + "0" * 15
    values = [
        (old_id, encode(v1, event(old_id, "deliver", None))),
        (new_id, encode(v2, event(new_id, "tag", True))),
        # A schema published after this copy of schemas/avro was taken.
        ("01UNKNOWN" + "0" * 17, b"\xc3\x01" + bytes(8) + b"\x00"),
    ]
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "acks": "all"})
    for key, value in values:
        # One partition, so the consumers meet the events in this order.
        producer.produce(topic, value, key=key.encode(), partition=0)
    try:
        assert producer.flush(30) == 0
    finally:
        producer.close()

    def consume(max_n: int) -> dict[str, tuple[int, list[dict[str, Any]], str]]:
        """Both examples, each in a consumer group of its own kept across calls."""
        args = ("--bootstrap", kafka.bootstrap_servers, "--topic-prefix", prefix)
        args += ("--from-beginning", "--max", str(max_n))
        procs = run_consumers(
            {
                "python": python_cmd(*args, "--group", f"{prefix}python"),
                "go": go_cmd(go_verdicts, *args, "--group", f"{prefix}go"),
            },
            tmp_path,
        )
        return {name: (proc.returncode, *output(proc)) for name, proc in procs.items()}

    first = consume(1)
    # The group resumes after what was printed: a second run starts at the next event,
    # then stops at the unknown fingerprint, naming it, rather than skip a decision.
    second = consume(3)
    printed = {}
    for name in ("python", "go"):
        rc, lines, err = first[name]
        assert rc == 0, f"{name} exited {rc}: {err}"
        rc, more, err = second[name]
        assert rc == 1, f"{name} exited {rc}: {err}"
        assert "unknown writer schema 0000000000000000" in err, name
        lines += more
        assert [(d["message_id"], d["action"], d["writer_schema"]) for d in lines] == [
            (old_id, "deliver", v1.fingerprint.hex()),
            (new_id, "tag", v2.fingerprint.hex()),
        ], name
        # v1 had no EngineVerdict.shadow: resolution fills the reader's default.
        assert [d["verdicts"][0]["shadow"] for d in lines] == [False, True], name
        assert lines[0]["scanned_at"] == "2026-11-28T12:00:00.123456Z", name
        printed[name] = lines
    assert printed["python"] == printed["go"]
