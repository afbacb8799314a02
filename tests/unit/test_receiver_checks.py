"""Each receiver check's recorded result, and the one mapping from results to the reply."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from mxgate.blobstore import FsBlobStore
from mxgate.settings import ReceiverSettings
from mxgate.tenants import Tenants
from receiver import replies
from receiver.checks import CheckResult, accept, decide, record, refuse, reply_for
from receiver.dnsbl import DnsblResult
from receiver.handler import ReceiverHandler
from receiver.metrics import ReceiverMetrics

TENANTS = {
    "tenants": {
        "acme": {"domains": ["acme.test"], "route": {"host": "127.0.0.1", "port": 1}},
        "globex": {"domains": ["globex.test"], "route": {"host": "127.0.0.1", "port": 1}},
    }
}


class _NoPublisher:
    """MAIL and RCPT never produce: a call here is a test failure."""

    async def produce(self, topic: str, key: str, value: bytes) -> None:
        raise AssertionError("MAIL/RCPT checks must not produce")


def handler(tmp_path: Path, **settings: int) -> ReceiverHandler:
    return ReceiverHandler(
        ReceiverSettings().model_copy(update=settings),
        Tenants.from_mapping(TENANTS),
        FsBlobStore(tmp_path / "store"),
        _NoPublisher(),
        "received",
    )


def test_refusals_take_their_verdict_from_the_reply_class() -> None:
    assert refuse("limits", "connections", replies.TOO_MANY_CONNECTIONS).verdict == "tempfail"
    assert refuse("relay", "relay", replies.RELAY_DENIED).verdict == "reject"
    assert accept("dnsbl") == CheckResult("dnsbl", "accept") and accept("dnsbl").accepted
    for bad in ("250 2.0.0 Ok", "", "4xx nothing", "354 go on"):
        with pytest.raises(ValueError, match="4xx or 5xx"):
            refuse("x", "y", bad)


def test_results_map_to_the_first_refusal_else_the_accept_reply() -> None:
    ok = [accept("address"), accept("rate")]
    assert decide(ok) is None and reply_for(ok, "250 2.1.0 Sender ok") == "250 2.1.0 Sender ok"
    first = refuse("relay", "relay", replies.RELAY_DENIED)
    later = refuse("recipient", "unknown_user", replies.UNKNOWN_USER)
    results = [accept("address"), first, later]
    assert decide(results) is first
    assert reply_for(results, "250 2.1.5 Recipient ok") == replies.RELAY_DENIED


def test_record_counts_by_check_and_reason_only_what_has_a_reason() -> None:
    m = ReceiverMetrics()
    for r in (accept("dnsbl"), accept("dnsbl", "lookup_failed"), refuse("rate", "message_rate",
              replies.message_rate_exceeded("192.0.2.1"))):  # fmt: skip
        record(m, r)
    value = m.registry.get_sample_value
    assert (
        value("mxgate_receiver_rejections_total", {"check": "dnsbl", "reason": "lookup_failed"})
        == 1
    )
    assert (
        value("mxgate_receiver_rejections_total", {"check": "rate", "reason": "message_rate"}) == 1
    )
    assert value("mxgate_receiver_rejections_total", {"check": "dnsbl", "reason": ""}) is None


def test_dnsbl_outcome_by_threshold_and_failures() -> None:
    listed = DnsblResult(listed=("bl.test", "other.test"))
    refused = listed.outcome("192.0.2.1", threshold=2)
    assert (refused.check, refused.verdict, refused.reason) == ("dnsbl", "reject", "listed")
    assert refused.reply == (
        "554 5.7.1 Service unavailable; client [192.0.2.1] blocked using bl.test, other.test"
    )
    assert listed.outcome("192.0.2.1", threshold=3) == accept("dnsbl")
    assert DnsblResult(failed=("bl.test",)).outcome("192.0.2.1", 1) == accept(
        "dnsbl", "lookup_failed"
    )


async def test_rcpt_checks_in_order_up_to_the_first_refusal(tmp_path: Path) -> None:
    h = handler(tmp_path, max_recipients=2)
    env = Envelope()
    assert await h.rcpt_checks(env, "bob@acme.test") == [
        accept("address"), accept("relay"), accept("recipients"),
    ]  # fmt: skip
    bad = await h.rcpt_checks(env, "bob@acme.test\x01")
    assert [r.check for r in bad] == ["address"] and bad[0].reply.startswith("553 5.1.3")
    relay = await h.rcpt_checks(env, "bob@elsewhere.test")
    assert relay[-1] == refuse("relay", "relay", replies.RELAY_DENIED)
    env.rcpt_tos = ["bob@acme.test"]
    other = await h.rcpt_checks(env, "hank@globex.test")
    assert other[-1] == refuse("recipients", "other_tenant", replies.OTHER_TENANT)
    env.rcpt_tos = ["bob@acme.test", "carol@acme.test"]
    many = await h.rcpt_checks(env, "dave@acme.test")
    assert many[-1] == refuse("recipients", "too_many", replies.TOO_MANY_RECIPIENTS)


async def test_handle_rcpt_keeps_the_replies_and_records_refused_recipients(
    tmp_path: Path,
) -> None:
    class Server:
        client_ip = "192.0.2.1"
        rejected_rcpts: list[str] = []

    h = handler(tmp_path)
    env = Envelope()
    server = Server()
    session = Session(asyncio.get_running_loop())

    async def say(address: str) -> str:
        return await h.handle_RCPT(cast(SMTP, server), session, env, address, [])

    assert await say("bob@acme.test") == "250 2.1.5 Recipient ok"
    assert await say("x@elsewhere.test") == replies.RELAY_DENIED
    assert await say("hank@globex.test") == replies.OTHER_TENANT
    # Another tenant's recipient is deferred to its own transaction, not refused for good.
    assert env.rcpt_tos == ["bob@acme.test"] and server.rejected_rcpts == ["x@elsewhere.test"]
    value = h.metrics.registry.get_sample_value
    assert value("mxgate_receiver_rejections_total", {"check": "relay", "reason": "relay"}) == 1


async def test_mail_checks_address_then_rate(tmp_path: Path) -> None:
    h = handler(tmp_path, message_rate_per_ip=1)
    env = Envelope()
    assert h.mail_checks(env, "<>", "192.0.2.1") == [accept("address"), accept("rate")]
    bad = h.mail_checks(env, "a@\x7f.test", "192.0.2.1")
    assert [r.check for r in bad] == ["address"] and bad[0].verdict == "reject"
    slow = h.mail_checks(env, "a@sender.test", "192.0.2.1")
    assert slow[-1] == refuse("rate", "message_rate", replies.message_rate_exceeded("192.0.2.1"))
    assert slow[-1].reply == "451 4.7.1 Too much mail from 192.0.2.1, slow down and try again later"
