"""After `mxgate up`, a second shell with no MXGATE_* variables runs the README's commands
(trace, quarantine list, engines, replay): they find what `up` chose in var/runtime.json, and
the ops user's password in the private file it names. `up`'s broker is SASL_SSL with ACLs on:
a role's credentials do only what the catalog grants it."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import SecretStr
from support import samples
from support.cli import MXGATE
from support.kafkaprobe import produce_error
from support.pipeline import free_port, wait_for

from devstack import passwords
from mxgate import catalog
from mxgate.kafka import base_config
from mxgate.settings import KafkaSettings

pytestmark = pytest.mark.integration


def _as(record: dict[str, object], user: str) -> KafkaSettings:
    """Client settings for `up`'s broker as ``user``, from what a local account can read."""
    env = record["env"]
    assert isinstance(env, dict)
    users = passwords.read(Path(str(record["secrets"])))
    return KafkaSettings(
        bootstrap_servers=env["MXGATE_KAFKA__BOOTSTRAP_SERVERS"], instance_id=f"t-{user}",
        security_protocol="SASL_SSL", sasl_username=user, sasl_password=SecretStr(users[user]),
        ssl_ca_location=Path(env["MXGATE_KAFKA__SSL_CA_LOCATION"]),
    )  # fmt: skip


def _check_the_bus_is_locked(home: Path) -> None:
    """What `up` set up on its broker and on disk, checked against the broker itself."""
    text = (home / "var" / "runtime.json").read_text()
    record = json.loads(text)
    secrets = Path(record["secrets"])
    assert secrets.stat().st_mode & 0o777 == 0o600
    users = passwords.read(secrets)
    assert set(users) >= {f"mxgate-{r}" for r in catalog.ROLES}
    assert "PASSWORD" not in text and not any(pw in text for pw in users.values())
    assert record["env"]["MXGATE_KAFKA__SASL_USERNAME"] == "mxgate-ops"
    # The receiver writes received; it may not write submit or control (forged mail, switches).
    receiver = _as(record, "mxgate-receiver")
    for refused in (catalog.CONTROL.name, catalog.SUBMIT.name):
        err = produce_error(receiver, refused)
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    # What no ACL names, nobody may do (allow.everyone.if.no.acl.found=false): ops may create
    # a topic outside the catalog, but not write to it.
    ops = _as(record, "mxgate-ops")
    admin = AdminClient(base_config(ops) | {"log_level": 2})
    admin.create_topics([NewTopic("outside-the-catalog", 1, 1)])["outside-the-catalog"].result(30)
    err = produce_error(ops, "outside-the-catalog")
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    # Without credentials nothing is answered at all.
    anonymous = AdminClient(
        {"bootstrap.servers": record["env"]["MXGATE_KAFKA__BOOTSTRAP_SERVERS"], "log_level": 0}
    )
    with pytest.raises(KafkaException):
        anonymous.list_topics(timeout=5)


def test_a_second_shell_runs_the_readme_commands_with_a_clean_environment(tmp_path: Path) -> None:
    """The README's "Try it" as a newcomer does it: `mxgate up` in one shell, then `trace`,
    `quarantine list`, `engines` and `replay` from a second one that has no MXGATE_* variable
    and passes no option: they find the broker and clamd that `up` chose (var/runtime.json)."""
    capture_port, smtp_port = free_port(), free_port()
    # The checkout as the user has it: commands run from its top, state in ./var.
    home = tmp_path / "checkout"
    (home / "infra").mkdir(parents=True)
    (home / "infra" / "tenants.toml").write_text(
        '[tenants.example]\ndomains = ["example.test"]\n'
        f'route = {{ host = "127.0.0.1", port = {capture_port} }}\n'
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MXGATE_")}
    # Only the first shell picks a free SMTP port; the second knows nothing of it.
    first = clean | {"MXGATE_RECEIVER__PORT": str(smtp_port)}
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        up = subprocess.Popen(
            [MXGATE, "up", "--capture-port", str(capture_port)],
            env=first, cwd=home, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def second_shell(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [MXGATE, *args], env=clean, cwd=home, capture_output=True, text=True, timeout=300
        )

    try:

        def accepted() -> str | None:
            assert up.poll() is None, log.read_text()
            try:
                with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as c:
                    c.ehlo("client.sender.test")
                    c.mail("alice@sender.test")
                    c.rcpt("bob@example.test")
                    code, reply = c.data(samples.clean_message(3))
                    return reply.decode().rsplit(" ", 1)[-1] if code == 250 else None
            except (OSError, smtplib.SMTPException):
                return None

        mid = wait_for(accepted, 180, "the first message to be accepted", every=0.5)
        box = home / "var" / "mailbox" / "bob@example.test"
        wait_for(lambda: list(box.glob("*.eml")), 120, "the message in the mailbox")

        def delivered() -> dict[str, object] | None:
            r = second_shell("trace", mid, "--json")
            assert "Traceback" not in r.stderr, r.stderr
            h = json.loads(r.stdout) if r.returncode == 0 else {}
            return h if h.get("outcome") == "delivered" else None

        history = wait_for(delivered, 120, "trace to show the delivery", every=1.0)
        assert history["message_id"] == mid
        _check_the_bus_is_locked(home)
        held = second_shell("quarantine", "list", "--json")
        assert held.returncode == 0, held.stderr
        assert json.loads(held.stdout) == []
        engines = second_shell("engines", "--json")
        assert engines.returncode == 0, engines.stderr
        assert "clamav" in {e["engine"] for e in json.loads(engines.stdout)}
        # replay needs clamd's socket, which only `up` knows.
        rep = second_shell("replay", "--from", "1h", "--to", "now", "--json")
        assert rep.returncode == 0, rep.stderr
        assert mid in json.loads(rep.stdout)["replayed"]
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=180)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
    # Once `up` is gone its choices are not lent any more: one clear line, no traceback.
    after = second_shell("trace", mid)
    assert after.returncode == 2 and "Traceback" not in after.stderr
    assert "MXGATE_KAFKA__BOOTSTRAP_SERVERS" in after.stderr
