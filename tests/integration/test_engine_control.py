"""The control topic on a real Kafka: `mxgate engines disable|enable` reach a running scanner's
runner without a restart, and scanners' status reports come back in `mxgate engines --json`.

The session's broker is secured: the CLI runs as ops, the watcher and status writer as the
scanner, each with the catalog's ACLs on the test's topics only."""

from __future__ import annotations

import json
import time
import uuid

from pydantic import SecretStr
from typer.testing import CliRunner

from cli.main import app
from mxgate import catalog
from mxgate.enginecontrol import ControlWatcher, publish_control, publish_status, read_control
from mxgate.kafka import create_topics, producer_config
from scanner.engines.common import Finding, Kind, ParsedMessage
from scanner.runner import EngineRunner


class Clean:
    kind: Kind = "antivirus"
    cacheable = False

    def __init__(self, name: str) -> None:
        self.name = name

    version = "1"
    rules_version = "r"

    async def check(self, message: ParsedMessage) -> Finding:
        return Finding(self.name, "1", "r", "clean", kind=self.kind)

    async def aclose(self) -> None:
        pass


def _wait(cond, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


async def test_disable_and_enable_through_the_cli_reach_the_runner(kafka, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    prefix = f"t{uuid.uuid4().hex[:10]}."
    admin = kafka.settings(topic_prefix=prefix)
    create_topics(admin, [catalog.CONTROL])
    kafka.grant(prefix, admin.group_prefix, retry_tiers=4)
    ks = kafka.as_role(admin, "scanner")
    for k, v in {
        **kafka.env("ops"),
        "MXGATE_KAFKA__TOPIC_PREFIX": prefix,
        "MXGATE_SCANNER__ENGINES": '["clamav", "yara"]',
    }.items():
        monkeypatch.setenv(k, v)
    watcher = ControlWatcher(ks).start()
    runner = EngineRunner([Clean("clamav"), Clean("yara")], timeout=5, controls=watcher)
    msg = ParsedMessage("m", "t", b"x", (), ())
    cli = CliRunner()
    try:
        assert (await runner.run(msg)).active == ["clamav", "yara"]
        r = cli.invoke(app, ["engines", "disable", "clamav", "--reason", "FP storm"])
        assert r.exit_code == 0, r.output
        _wait(lambda: watcher.disabled_reason("clamav") == "FP storm", "the switch")
        res = await runner.run(msg)
        # Not asked, but on record: the switched-off engine is a `disabled` verdict, which the
        # policy treats as a missing antivirus verdict.
        assert res.active == ["yara"]
        assert [(f.engine, f.outcome) for f in res.findings] == [
            ("clamav", "disabled"),
            ("yara", "clean"),
        ]
        assert res.findings[0].error == "disabled: FP storm"

        # The scanner reports status; `mxgate engines --json` shows it with the switch.
        from confluent_kafka import Producer

        p = Producer(producer_config(ks))
        publish_status(p, ks, "scanner-1", runner.status())
        assert p.flush(20) == 0
        r = cli.invoke(app, ["engines", "--json"])
        assert r.exit_code == 0, r.output
        table = {row["engine"]: row for row in json.loads(r.output)}
        assert table["clamav"]["state"] == "disabled"
        assert table["clamav"]["reason"] == "FP storm"
        assert table["yara"]["state"] == "enabled"
        assert table["yara"]["kind"] == "antivirus" and table["yara"]["scans"] == 2
        assert table["yara"]["scanner"] == "scanner-1"
        r = cli.invoke(app, ["engines"])
        assert r.exit_code == 0 and "FP storm" in r.output

        r = cli.invoke(app, ["engines", "enable", "clamav"])
        assert r.exit_code == 0, r.output
        _wait(lambda: watcher.disabled_reason("clamav") is None, "the switch back")
        assert (await runner.run(msg)).active == ["clamav", "yara"]
        # The compacted log's latest record per engine is what a new scanner starts with.
        assert read_control(ks).disabled_reason("clamav") is None
    finally:
        watcher.stop()


def test_disable_needs_a_reason(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    r = CliRunner().invoke(app, ["engines", "disable", "clamav", "--reason", "  "])
    assert r.exit_code == 2 and "reason" in r.output


def test_a_rotated_key_verifies_old_switches_until_it_is_removed(kafka) -> None:  # type: ignore[no-untyped-def]
    """The README's rotation steps on a real topic: a switch signed with the old key counts
    while that key is listed as previous, not once it is removed; re-signing it with the new
    key (step 3) keeps it in force."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    create_topics(kafka.settings(topic_prefix=prefix), [catalog.CONTROL])
    kafka.grant(prefix, "mxgate", retry_tiers=4)
    # Ops signs the switches; scanners, which hold the keys, read them.
    ops = kafka.settings("ops", topic_prefix=prefix, control_key=SecretStr("k1"),
                         control_key_id="2026-11")  # fmt: skip
    publish_control(ops, "clamav", False, reason="signed with k1")
    rotated = kafka.settings(
        "scanner",
        topic_prefix=prefix,
        control_key=SecretStr("k2"),
        control_key_id="2026-12",
        control_keys_previous={"2026-11": SecretStr("k1")},
    )
    assert read_control(rotated).disabled_reason("clamav") == "signed with k1"
    removed = kafka.settings(
        "scanner", topic_prefix=prefix, control_key=SecretStr("k2"), control_key_id="2026-12"
    )
    view = read_control(removed)
    assert view.disabled_reason("clamav") is None and view.rejected == 1
    publish_control(kafka.as_role(rotated, "ops"), "clamav", False, reason="re-signed with k2")
    view = read_control(removed)
    assert view.disabled_reason("clamav") == "re-signed with k2" and view.rejected == 1
