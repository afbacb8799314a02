"""The auth engines through the scanner's runner, sharing one resolver with a real DNS server:
answers are shared and cached, and a dead DNS server gives temperror findings, not a stuck
message."""

from __future__ import annotations

import dkim
from support.authkeys import rsa_key, served
from support.dnsserver import DnsServer

from mxgate.resolver import shared_resolver
from mxgate.settings import AuthSettings, ScannerSettings
from scanner.engines.registry import build_engines
from scanner.mime import parse
from scanner.runner import run_engines

KEY = rsa_key()
ZONES = {
    "sender.test": [("TXT", "v=spf1 ip4:192.0.2.0/24 -all")],
    "_dmarc.sender.test": [("TXT", "v=DMARC1; p=reject")],
    "k._domainkey.sender.test": [("TXT", KEY.record)],
}
BODY = b"From: A <a@sender.test>\r\nTo: b@tenant.test\r\nSubject: hi\r\n\r\nhello\r\n"


async def test_auth_engines_share_dns_and_fail_soft() -> None:
    with DnsServer(served(ZONES), zones=["test"]) as srv:
        settings = ScannerSettings(
            engines=("spf", "dkim", "dmarc", "arc"),
            auth=AuthSettings(dns_servers=(srv.address,), dns_timeout=1.0),
        )
        engines = build_engines(settings)
        signed = (
            dkim.sign(
                BODY, b"k", b"sender.test", KEY.private, include_headers=[b"from", b"subject"]
            )
            + BODY
        )
        msg = parse(
            signed,
            message_id="ad1",
            tenant="t",
            client_ip="192.0.2.7",
            mail_from="a@sender.test",
            helo="mx.sender.test",
        )
        findings = {f.engine: f for f in await run_engines(engines, msg, timeout=5)}
        assert findings["spf"].symbols[:2] == ("SPF_PASS", "spf=pass")
        assert findings["dkim"].symbols[0] == "DKIM_PASS"
        assert findings["dmarc"].symbols[0] == "dmarc=pass"
        assert findings["arc"].symbols[1] == "arc=none"
        # SPF and DMARC both needed sender.test's records: asked once, then cached.
        assert srv.queries.count(("sender.test.", "TXT")) == 1
        srv.fault = "drop"
        lost = parse(
            signed, message_id="ad2", tenant="t", client_ip="192.0.2.7", mail_from="a@other.test"
        )
        shared_resolver.cache_clear()
        engines = build_engines(settings)
        failed = {f.engine: f for f in await run_engines(engines, lost, timeout=5)}
        assert failed["spf"].outcome == "error" and "spf=temperror" in failed["spf"].symbols
        assert failed["dmarc"].outcome == "error"
        for e in engines:
            await e.aclose()
