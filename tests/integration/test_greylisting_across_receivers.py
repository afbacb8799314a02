"""Greylisting shared by two receiver processes on a real Kafka: a first attempt refused by one
receiver is retried after the delay on the other and accepted; a receiver killed and started
again keeps every sighting and pass; the propagation delay to a receiver is measured."""

from __future__ import annotations

import smtplib
import time
from pathlib import Path

import pytest
from support import samples
from support.factories import NO_VERIFICATION
from support.pipeline import Pipeline, free_port, queued_id, received_ids, wait_for

from mxgate import catalog
from mxgate.compacted import CompactedFollower
from mxgate.timeutil import utcnow
from receiver.greylist import GreylistTable, entry_key

pytestmark = pytest.mark.integration

DELAY = 3.0


def _attempt(port: int, sender: str, rcpt: str, body: bytes | None = None) -> tuple[int, str]:
    """One transaction: the RCPT reply, or with ``body`` the DATA reply once RCPT passed."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.sender.test")
        code, msg = c.mail(sender)
        assert code == 250, (code, msg)
        code, msg = c.rcpt(rcpt)
        if code != 250 or body is None:
            return code, msg.decode()
        code, msg = c.data(body)
        return code, msg.decode()


def test_a_retry_on_another_receiver_passes_and_restarts_lose_nothing(
    kafka, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    p = Pipeline(
        tmp_path,
        kafka,
        sink_port=1,
        recipients=NO_VERIFICATION,
        tenant_extra=f"greylisting = {{ enabled = true, delay = {DELAY} }}",
    )
    port_b = free_port()
    b_env = {"MXGATE_RECEIVER__PORT": str(port_b)}
    topic = catalog.name(catalog.GREYLIST, p.prefix)
    # A third reader of the table, as a receiver holds it: how soon a write reaches it.
    watched = GreylistTable()
    follower = CompactedFollower(
        p.settings.kafka, topic, f"g{p.prefix}.greylist-reader", watched.apply
    )
    try:
        p.start("receiver", "ra")
        p.start("receiver", "rb", env=b_env)
        follower.load(30)
        follower.start()

        # 1. A refuses the first attempt; the retry after the delay lands on B and passes.
        code, text = _attempt(p.receiver_port, "alice@sender.test", "bob@example.test")
        assert (code, text[:5]) == (451, "4.7.1"), text
        refused_at = time.monotonic()
        key = entry_key("example", "127.0.0.0/24", "alice@sender.test", "bob@example.test")
        wait_for(lambda: watched.get(key, utcnow()), 10, "the sighting")
        print(
            f"greylist propagation to a follower: {1000 * (time.monotonic() - refused_at):.0f} ms"
        )
        # B's first sight of the triplet is the retry: had it not learnt A's sighting, it
        # would count it as new and refuse it.
        time.sleep(DELAY + 0.5)
        code, text = _attempt(
            port_b, "alice@sender.test", "bob@example.test", samples.clean_message(1)
        )
        assert code == 250, text
        first = queued_id(text)

        # 2. A restarted after SIGKILL reloads the table: the pass B wrote is known at once,
        # and the client's network is allowed for another sender and recipient too.
        p.kill("ra")
        p.start("receiver", "ra")
        code, text = _attempt(
            p.receiver_port, "alice@sender.test", "bob@example.test", samples.clean_message(2)
        )
        assert code == 250, text
        second = queued_id(text)
        code, text = _attempt(p.receiver_port, "carol@elsewhere.test", "dave@example.test")
        assert code == 250, text  # network entry: 127.0.0.0/24 passed once

        # 3. A tenant without greylisting is never asked to wait.
        code, text = _attempt(p.receiver_port, "eve@sender.test", "x@other.test")
        assert code == 250, text

        assert sorted(received_ids(p)) == sorted([first, second])
        p.assert_alive()
    finally:
        follower.stop()
        p.stop_all()


def test_a_sighting_survives_the_restart_of_the_only_receiver(kafka, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = Pipeline(
        tmp_path,
        kafka,
        sink_port=1,
        recipients=NO_VERIFICATION,
        tenant_extra=(f"greylisting = {{ enabled = true, delay = {DELAY}, network_lifetime = 0 }}"),
    )
    try:
        p.start("receiver", "ra")
        code, text = _attempt(p.receiver_port, "alice@sender.test", "bob@example.test")
        assert (code, text[:5]) == (451, "4.7.1"), text
        p.kill("ra")
        time.sleep(DELAY + 0.5)
        p.start("receiver", "ra")
        # Had the restart forgotten the sighting, this would be "new" and refused again.
        code, text = _attempt(
            p.receiver_port, "alice@sender.test", "bob@example.test", samples.clean_message(3)
        )
        assert code == 250, text
        # network_lifetime = 0: another sender from the same network still waits.
        code, text = _attempt(p.receiver_port, "carol@sender.test", "bob@example.test")
        assert code == 451, text
        p.assert_alive()
    finally:
        p.stop_all()
