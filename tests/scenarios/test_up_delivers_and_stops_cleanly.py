"""`mxgate up` (what `make run` ends in): a local broker, the topics, all roles and a capture
server; a newcomer's message arrives in the mailbox folder; Ctrl-C stops everything cleanly."""

from __future__ import annotations

import os
import signal
import smtplib
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
                    c.sendmail("alice@sender.test", ["newcomer@example.test"],
                               samples.clean_message(7))  # fmt: skip
                    return "ok"
            except (OSError, smtplib.SMTPException):
                return None

        wait_for(accepted, 180, "the first message to be accepted", every=0.5)
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
