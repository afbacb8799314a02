"""DNSBL and URIBL lookups against a loopback DNS server; DNS failure is never a stuck message."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.dnsserver import DnsServer

from mxgate.resolver import Resolver
from scanner.engines.dnsbl import DnsblEngine, link_domains
from scanner.mime import parse


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    srv = DnsServer(
        {
            "2.0.0.192.bl.test": {"A": ["127.0.0.2"]},
            "3.0.0.192.bl.test": {"A": ["192.0.2.99"]},  # not 127/8: not a listing (RFC 5782)
            "spammy.co.uk.uribl.test": {"A": ["127.0.0.2"]},
        },
        zones=["bl.test", "uribl.test"],
    )
    srv.start()
    yield srv
    srv.stop()


def msg(ip: str, body: bytes = b"hello"):  # type: ignore[no-untyped-def]
    return parse(b"Subject: x\r\n\r\n" + body, message_id="d", tenant="t", client_ip=ip)


async def test_ip_and_uri_listings(dns: DnsServer) -> None:
    engine = DnsblEngine(Resolver([dns.address]), ["bl.test"], ["uribl.test"], score=3.0)
    listed = await engine.check(msg("192.0.0.2", b"see http://www.spammy.co.uk/offer"))
    assert listed.outcome == "spam" and listed.score == 6.0
    assert listed.symbols == ("DNSBL_bl.test", "URIBL_uribl.test")
    clean = await engine.check(msg("192.0.0.3", b"see https://example.org/"))
    assert clean.outcome == "clean" and clean.score == 0.0


async def test_all_lookups_failing_is_an_error_finding(dns: DnsServer) -> None:
    engine = DnsblEngine(Resolver([dns.address], timeout=0.5), ["bl.test"], [])
    dns.fault = "drop"
    try:
        f = await engine.check(msg("192.0.0.2"))
    finally:
        dns.fault = None
    assert f.outcome == "error" and f.error and "temperror" in f.error


def test_link_domains_are_registered_domains() -> None:
    assert link_domains("http://a.b.example.co.uk/x www.shop.test http://10.0.0.1/") == [
        "example.co.uk",
        "shop.test",
    ]
