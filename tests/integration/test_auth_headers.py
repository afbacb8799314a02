"""Delivered mail carries one Authentication-Results header (RFC 8601) computed from the
scan's verdicts, forged ones claiming our authserv-id or hostname are removed (as are a
sender's own X-MXGate and X-Spam-* headers), and the gateway ARC-seals the message with its own
key (RFC 8617) so the customer's server can verify the chain."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from support.authkeys import rsa_key, served
from support.dnsserver import DnsServer
from support.pipeline import Pipeline, wait_for
from support.sink import SinkThread

from mxgate.resolver import Resolver
from scanner.engines.arc import ArcEngine
from scanner.engines.common import ParsedMessage

pytestmark = pytest.mark.integration

SEAL = rsa_key()
ZONES = {
    # The test client connects from 127.0.0.1: SPF passes for sender.test, and DMARC aligns.
    "sender.test": [("TXT", "v=spf1 ip4:127.0.0.1 -all")],
    "_dmarc.sender.test": [("TXT", "v=DMARC1; p=reject")],
    "gw._domainkey.gateway.test": [("TXT", SEAL.record)],
}
FORGED = (
    b"Authentication-Results: mxgate.local; dmarc=pass header.from=bank.test\r\n"
    b"Authentication-Results: GW.deliver.test;\r\n\tdmarc=pass header.from=bank.test\r\n"
    b"X-MXGate: action=deliver; id=forged; score=0.00; reasons=none\r\n"
    b"X-Spam-Status: No, score=-5.0\r\n\ttests=ALL_TRUSTED\r\n"
    b"X-Spam-Flag: NO\r\n"
)
KEPT = b"Authentication-Results: mx.upstream.test; spf=pass smtp.mailfrom=sender.test\r\n"
BODY = (
    FORGED + KEPT + b"From: Alice <alice@sender.test>\r\nTo: bob@example.test\r\n"
    b"Subject: authenticated\r\nMessage-ID: <auth.1@sender.test>\r\n\r\nhello\r\n"
)


def test_delivered_mail_has_our_authentication_results_and_arc_seal(kafka, tmp_path: Path) -> None:
    key = tmp_path / "arc.pem"
    key.write_bytes(SEAL.private)
    sink = SinkThread().start()
    with DnsServer(served(ZONES), zones=["test"]) as dns:
        p = Pipeline(
            tmp_path,
            kafka,
            sink.port,
            extra_env={
                "MXGATE_SCANNER__ENGINES": '["yara", "content", "spf", "dmarc"]',
                "MXGATE_SCANNER__AUTH__DNS_SERVERS": f'["{dns.address}"]',
                "MXGATE_DELIVERER__ARC_KEY_FILE": str(key),
                "MXGATE_DELIVERER__ARC_SELECTOR": "gw",
                "MXGATE_DELIVERER__ARC_DOMAIN": "gateway.test",
                "MXGATE_DELIVERER__HOSTNAME": "gw.deliver.test",
            },
        )
        try:
            p.start_all()
            code, text = p.send(BODY, ["bob@example.test"], sender="alice@sender.test")
            assert code == 250, text
            msgs = wait_for(lambda: sink.messages, 90, "the delivery")
            data = msgs[0].data
            head = data.split(b"\r\n\r\n", 1)[0]
            # Ours, computed from the verdicts: SPF and DMARC passed for sender.test.
            assert b"Authentication-Results: mxgate.local;" in head
            assert b"spf=pass smtp.mailfrom=sender.test" in head
            assert b"dmarc=pass header.from=sender.test" in head
            # The sender's forged claims in our name are gone (ours are one each, computed);
            # another host's Authentication-Results and everything else are as stored.
            assert data.endswith(BODY[len(FORGED) :])
            assert b"bank.test" not in data and b"forged" not in data
            assert b"ALL_TRUSTED" not in data and b"X-Spam" not in data  # action was deliver
            assert head.count(b"\r\nX-MXGate: action=deliver; id=") == 1
            assert head.lower().count(b"authentication-results: gw.deliver.test") == 0
            # The ARC set is on top and verifies against the key published in DNS.
            assert head.startswith(b"ARC-Seal: i=1;")
            resolver = Resolver([dns.address])
            f = asyncio.run(ArcEngine(resolver).check(ParsedMessage("m", "t", data, (), ())))
            assert f.symbols[:2] == ("ARC_PASS", "arc=pass"), f.detail
        finally:
            p.stop_all()
            sink.stop()
