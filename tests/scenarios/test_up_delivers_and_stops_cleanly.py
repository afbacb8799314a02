"""`mxgate up` (what `make run` ends in): a local broker, the topics, all roles, a capture
server and, as infra installs them, a private spamd and rspamd; a newcomer's message arrives
in the mailbox folder, judged by SpamAssassin and rspamd too; Ctrl-C stops everything cleanly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import samples
from support.cli import MXGATE
from support.pipeline import REPO, free_port, wait_for

pytestmark = pytest.mark.integration


def _unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # self-signed, like opportunistic STARTTLS between MTAs
    return ctx


def _sample(port: int, name: str, labels: dict[str, str]) -> float | None:
    """One series as the role at ``port`` serves it, or None when it has none such."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


def _check_the_spam_engines_decided(tmp_path: Path, workdir: Path, mid: str) -> list[int]:
    """The delivered message's history, read by a second shell (no MXGATE_* variable, its
    ./var being `up`'s workdir) as a user would: spamassassin's and rspamd's verdicts are
    in the scan that decided it. Returns spamd's and rspamd's ports, from var/runtime.json."""
    for tool in ("spamd", "rspamd", "redis-server"):
        assert shutil.which(tool), f"{tool}: infra/apt-packages.txt installs it"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MXGATE_")}

    def scanned() -> dict[str, dict[str, object]] | None:
        r = subprocess.run(
            [MXGATE, "trace", mid, "--json"],
            env=clean, cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert "Traceback" not in r.stderr, r.stderr
        h = json.loads(r.stdout) if r.returncode == 0 else {}
        if not h.get("scanned"):
            return None
        return {v["engine"]: v for v in h["scanned"]["verdicts"]}

    verdicts = wait_for(scanned, 120, "trace to show the scan")
    for engine in ("spamassassin", "rspamd"):
        v = verdicts.get(engine)
        assert v is not None, sorted(verdicts)
        assert v["outcome"] in ("clean", "spam") and not v["shadow"], v
    env = json.loads((workdir / "runtime.json").read_text())["env"]
    rspamd_ports = [
        int(env[f"MXGATE_SCANNER__SPAM__RSPAMD_{k}"].rsplit(":", 1)[1])
        for k in ("URL", "CONTROLLER_URL")
    ]
    assert "PASSWORD" not in json.dumps(env)  # rspamd's controller password stays with `up`
    return [int(env["MXGATE_SCANNER__SPAM__SPAMD_PORT"]), *rspamd_ports]


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "term"])
def test_up_accepts_delivers_and_stops_cleanly(tmp_path: Path, stop_signal: int) -> None:
    capture_port, smtp_port = free_port(), free_port()
    tenants = tmp_path / "tenants.toml"
    tenants.write_text(
        '[tenants.example]\ndomains = ["example.test"]\n'
        f'route = {{ host = "127.0.0.1", port = {capture_port} }}\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MXGATE_")}
    env |= {"MXGATE_TENANTS_FILE": str(tenants), "MXGATE_RECEIVER__PORT": str(smtp_port)}
    # up's own metrics ports are fixed; free ones here, so parallel runs do not collide.
    metrics = {"receiver": free_port(), "scanner": free_port(), "deliverer": free_port()}
    env |= {
        "MXGATE_METRICS_PORT": str(metrics["receiver"]),
        "MXGATE_SCANNER__METRICS_PORT": str(metrics["scanner"]),
        "MXGATE_DELIVERER__METRICS_PORT": str(metrics["deliverer"]),
    }
    workdir = tmp_path / "var"
    log = tmp_path / "up.log"
    t0 = time.monotonic()
    with log.open("wb") as out:  # a file, not a pipe: the roles log a lot and must never block
        up = subprocess.Popen(
            [MXGATE, "up", "--workdir", str(workdir),
             "--capture-port", str(capture_port)],
            env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def accepted() -> str | None:
            assert up.poll() is None, log.read_text()
            try:
                with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as c:
                    c.ehlo()
                    # STARTTLS on by default, with the pair made at first start.
                    assert c.has_extn("starttls"), c.esmtp_features
                    c.starttls(context=_unverified())
                    c.ehlo("client.sender.test")
                    c.mail("alice@sender.test")
                    c.rcpt("newcomer@example.test")
                    code, reply = c.data(samples.clean_message(7))
                    return reply.decode().rsplit(" ", 1)[-1] if code == 250 else None
            except (OSError, smtplib.SMTPException):
                return None

        mid = wait_for(accepted, 180, "the first message to be accepted", every=0.5)
        print(f"\nmxgate up: first message accepted {time.monotonic() - t0:.1f}s after start")
        box = workdir / "mailbox" / "newcomer@example.test"
        files = wait_for(lambda: list(box.glob("*.eml")), 120, "the message in the mailbox")
        data = files[0].read_bytes()
        # The default protection ran: sender authentication (its header) beside antivirus.
        head = data.split(b"\r\n\r\n")[0]
        for result in (b"spf=none", b"dkim=none", b"dmarc=none", b"arc=none"):
            assert result in head, head.decode(errors="replace")
        assert b"X-MXGate: action=deliver" in data
        assert data.endswith(samples.clean_message(7))
        # SpamAssassin and rspamd judged it too, as a second shell's `mxgate trace` shows.
        spam_ports = _check_the_spam_engines_decided(tmp_path, workdir, mid)
        # A newcomer's hand-typed test (no Subject, Date or Message-ID: every engine marks the
        # same missing headers, 7.40 by the old score sum) is delivered untagged: the packaged
        # spam model decides, not a sum of scores on different scales.
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as c:
            c.starttls(context=_unverified())
            c.sendmail(
                "alice@sender.test",
                ["newcomer@example.test"],
                b"From: alice@sender.test\r\nTo: newcomer@example.test\r\n\r\n"
                b"hello, a plain test\r\n",
            )
        plain = wait_for(
            lambda: [p for p in box.glob("*.eml") if b"hello, a plain test" in p.read_bytes()],
            120,
            "the plain message in the mailbox",
        )[0].read_bytes()
        assert b"X-MXGate: action=deliver" in plain, plain.decode(errors="replace")
        assert b"X-Spam" not in plain.split(b"\r\n\r\n")[0]
        assert (workdir / "tls" / "cert.pem").exists() and (workdir / "tls" / "key.pem").exists()
        assert (workdir / "tls" / "key.pem").stat().st_mode & 0o077 == 0
        # Every role serves /metrics; the scanner and deliverer count the batch they decided.
        banner = ", ".join(f"{r} http://127.0.0.1:{port}/metrics" for r, port in metrics.items())
        assert f"metrics: {banner}" in log.read_text()
        for role in ("scanner", "deliverer"):
            batches = _sample(
                metrics[role], "mxgate_kafka_batch_bytes_count", {"group": f"mxgate.{role}"}
            )
            assert batches is not None and batches >= 1, role
        accepted = {"outcome": "accepted"}
        assert (_sample(metrics["receiver"], "mxgate_receiver_messages_total", accepted) or 0) >= 1
        # The broker's users, CA and key: made at first start, readable by their owner only.
        assert (workdir / "secrets" / "kafka-users.json").stat().st_mode & 0o777 == 0o600
        assert (workdir / "kafka-tls" / "ca.pem").is_file()
        assert (workdir / "kafka-tls" / "ca.key").stat().st_mode & 0o077 == 0
        assert "SASL_SSL" in (workdir / "kafka" / "broker-0" / "server.properties").read_text()
        up.send_signal(stop_signal)
        assert up.wait(timeout=180) == 0, log.read_text()
        assert "stopping" in log.read_text()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    # Nothing left running: no role and no broker from this workdir.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(workdir) not in ps
    assert f"--capture-port {capture_port}" not in ps
    # ... and no spamd, rspamd or rspamd's Redis: nothing answers on their ports any more.
    assert not any(f"127.0.0.1:{port}" in ps for port in spam_ports), ps
    for port in spam_ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
