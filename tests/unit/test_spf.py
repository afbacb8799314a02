"""SPF (RFC 7208) against a real authoritative DNS server on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.authkeys import served
from support.dnsserver import DnsServer

from mxgate.resolver import Resolver
from scanner.engines.common import ParsedMessage
from scanner.engines.spf import SpfEngine
from scanner.mailauth.spf import check_host

ZONES: dict[str, list[tuple[str, str]]] = {
    "pass.test": [("TXT", "v=spf1 ip4:192.0.2.0/24 -all")],
    "soft.test": [("TXT", "v=spf1 ~all")],
    "neutral.test": [("TXT", "v=spf1 ?all")],
    "nomatch.test": [("TXT", "v=spf1 ip4:198.51.100.1")],
    "norecord.test": [("TXT", "some other text")],
    "two.test": [("TXT", "v=spf1 -all"), ("TXT", "v=spf1 +all")],
    "syntax.test": [("TXT", "v=spf1 ip4:192.0.2.1 frobnicate -all")],
    "badip.test": [("TXT", "v=spf1 ip4:192.0.2.300 -all")],
    "a.test": [("TXT", "v=spf1 a -all"), ("A", "192.0.2.10")],
    "acidr.test": [("TXT", "v=spf1 a:host.acidr.test/24 -all")],
    "host.acidr.test": [("A", "203.0.113.77")],
    "mx.test": [("TXT", "v=spf1 mx -all"), ("MX", "10 mail.mx.test.")],
    "mail.mx.test": [("A", "192.0.2.20"), ("AAAA", "2001:db8::20")],
    "inc.test": [("TXT", "v=spf1 include:pass.test -all")],
    "incnone.test": [("TXT", "v=spf1 include:norecord.test -all")],
    "incfail.test": [("TXT", "v=spf1 include:soft.test ?all")],
    "redir.test": [("TXT", "v=spf1 redirect=pass.test")],
    "redirnone.test": [("TXT", "v=spf1 redirect=norecord.test")],
    "redirall.test": [("TXT", "v=spf1 ?all redirect=pass.test")],
    "ip6.test": [("TXT", "v=spf1 ip6:2001:db8::/32 -all")],
    "exists.test": [("TXT", "v=spf1 exists:%{ir}.%{v}._spf.%{d} -all")],
    "10.2.0.192.in-addr._spf.exists.test": [("A", "127.0.0.2")],
    "macro.test": [("TXT", "v=spf1 exists:%{l1r-}.u.%{o} -all")],
    "sales.u.macro.test": [("A", "127.0.0.2")],
    "ptr.test": [("TXT", "v=spf1 ptr -all")],
    "5.2.0.192.in-addr.arpa": [("PTR", "mail.ptr.test.")],
    "mail.ptr.test": [("A", "192.0.2.5")],
    # temp.invalid lies outside the served zones: REFUSED, a DNS failure (temperror).
    "tempinc.test": [("TXT", "v=spf1 include:temp.invalid -all")],
    "loop.test": [("TXT", "v=spf1 include:loop.test -all")],
    # 11 DNS-querying terms: one over the RFC 7208 4.6.4 limit.
    "many.test": [("TXT", "v=spf1 " + " ".join(f"a:h{i}.many.test" for i in range(11)) + " -all")],
    **{f"h{i}.many.test": [("A", "198.51.100.9")] for i in range(11)},
    "ten.test": [
        ("TXT", "v=spf1 " + " ".join(f"a:h{i}.many.test" for i in range(9)) + " a:ok.ten.test -all")
    ],
    "ok.ten.test": [("A", "192.0.2.1")],
    # Three lookups that find nothing: one over the void limit.
    "void.test": [("TXT", "v=spf1 a:n1.void.test a:n2.void.test a:n3.void.test +all")],
    "twovoid.test": [("TXT", "v=spf1 a:n1.void.test a:n2.void.test +all")],
    "dupredir.test": [("TXT", "v=spf1 redirect=a.test redirect=pass.test")],
    "badmacro.test": [("TXT", "v=spf1 exists:%{z}.x.test -all")],
    "case.test": [("TXT", "V=SPF1 IP4:192.0.2.0/24 -ALL")],
    # Syntax is checked in full before evaluating: these are permerror although -all matches.
    "bareip6.test": [("TXT", "v=spf1 -all ip6")],
    "toplabel.test": [("TXT", "v=spf1 -all a:example.123")],
    "cidr032.test": [("TXT", "v=spf1 -all ip4:192.0.2.1/032")],
    "exp.test": [("TXT", "v=spf1 -all exp=why.exp.test")],
    "why.exp.test": [("TXT", "%{c} may not send for %{d}, see https://%{d}/spf")],
}


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    srv = DnsServer(served(ZONES), zones=["test", "in-addr.arpa"])
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def dns_port(dns: DnsServer) -> int:
    return dns.port


@pytest.fixture
def resolver(dns_port: int) -> Resolver:
    return Resolver([f"127.0.0.1:{dns_port}"], timeout=2.0)


CASES = [
    ("192.0.2.1", "pass.test", "pass"),
    ("198.51.100.1", "pass.test", "fail"),
    ("198.51.100.1", "soft.test", "softfail"),
    ("198.51.100.1", "neutral.test", "neutral"),
    ("192.0.2.1", "nomatch.test", "neutral"),  # no match, no all: neutral (RFC 4.7)
    ("192.0.2.1", "norecord.test", "none"),
    ("192.0.2.1", "nxdomain.test", "none"),
    ("192.0.2.1", "two.test", "permerror"),  # several records (RFC 4.5)
    ("192.0.2.1", "syntax.test", "permerror"),  # unknown mechanism, even after a match
    ("192.0.2.1", "badip.test", "permerror"),
    ("192.0.2.10", "a.test", "pass"),
    ("192.0.2.11", "a.test", "fail"),
    ("203.0.113.1", "acidr.test", "pass"),
    ("203.0.114.1", "acidr.test", "fail"),
    ("192.0.2.20", "mx.test", "pass"),
    ("2001:db8::20", "mx.test", "pass"),
    ("192.0.2.21", "mx.test", "fail"),
    ("192.0.2.1", "inc.test", "pass"),
    ("198.51.100.1", "inc.test", "fail"),
    ("192.0.2.1", "incnone.test", "permerror"),  # include of a domain without SPF (RFC 5.2)
    ("198.51.100.1", "incfail.test", "neutral"),  # included softfail is "no match"
    ("192.0.2.1", "redir.test", "pass"),
    ("198.51.100.1", "redir.test", "fail"),
    ("192.0.2.1", "redirnone.test", "permerror"),  # RFC 6.1
    ("198.51.100.1", "redirall.test", "neutral"),  # redirect ignored when "all" exists
    ("2001:db8:1::1", "ip6.test", "pass"),
    ("2001:db9::1", "ip6.test", "fail"),
    ("192.0.2.10", "exists.test", "pass"),
    ("192.0.2.11", "exists.test", "fail"),
    ("192.0.2.5", "ptr.test", "pass"),
    ("192.0.2.6", "ptr.test", "fail"),
    ("192.0.2.1", "temp.invalid", "temperror"),
    ("192.0.2.1", "tempinc.test", "temperror"),
    ("192.0.2.1", "loop.test", "permerror"),
    ("192.0.2.1", "many.test", "permerror"),  # 11 DNS terms
    ("192.0.2.1", "ten.test", "pass"),  # exactly 10 is allowed
    ("192.0.2.1", "void.test", "permerror"),  # 3 void lookups
    ("192.0.2.1", "twovoid.test", "pass"),  # 2 are allowed
    ("192.0.2.1", "dupredir.test", "permerror"),
    ("192.0.2.1", "badmacro.test", "permerror"),
    ("192.0.2.1", "case.test", "pass"),  # names are case-insensitive
    ("::ffff:192.0.2.1", "pass.test", "pass"),  # IPv4-mapped IPv6 is checked as IPv4
    ("192.0.2.1", "-bad-.", "none"),  # not a domain
    ("192.0.2.1", "bareip6.test", "permerror"),
    ("192.0.2.1", "toplabel.test", "permerror"),
    ("192.0.2.1", "cidr032.test", "permerror"),
    ("192.0.2.1", "exp.test", "fail"),
]


@pytest.mark.parametrize(("ip", "domain", "expected"), CASES)
async def test_rfc7208_results(resolver: Resolver, ip: str, domain: str, expected: str) -> None:
    r = await check_host(resolver, ip, domain, f"user@{domain}", "helo.test")
    assert r.result == expected, r.reason


async def test_fail_carries_the_domains_explanation(resolver: Resolver) -> None:
    f = await SpfEngine(resolver).check(
        ParsedMessage("m0", "t", b"", (), (), client_ip="192.0.2.1", mail_from="a@exp.test")
    )
    assert (
        f.detail["explanation"] == "192.0.2.1 may not send for exp.test, see https://exp.test/spf"
    )
    ok = await check_host(resolver, "192.0.2.1", "pass.test", "a@pass.test")
    assert ok.explanation == ""


async def test_macro_local_part_with_delimiter_and_reverse(resolver: Resolver) -> None:
    # %{l1r-}: split on "-", reverse, keep the rightmost one: "sales-foo" -> "sales"
    # (RFC 7208 7.4's example: %{l1r-} of "strong-bad" is "strong").
    ok = await check_host(resolver, "192.0.2.1", "macro.test", "sales-foo@macro.test")
    no = await check_host(resolver, "192.0.2.1", "macro.test", "foo-bar-sales@macro.test")
    assert (ok.result, no.result) == ("pass", "fail")


async def test_engine_symbols_and_helo_identity_for_bounces(resolver: Resolver) -> None:
    engine = SpfEngine(resolver)
    msg = ParsedMessage("m1", "t", b"", (), (), client_ip="192.0.2.1", helo="pass.test")
    f = await engine.check(msg)  # null sender: the HELO identity is checked (RFC 2.3)
    assert f.outcome == "clean" and f.kind == "auth"
    assert f.symbols == ("SPF_PASS", "spf=pass", "smtp.helo=pass.test")
    msg2 = ParsedMessage("m2", "t", b"", (), (), client_ip="198.51.100.1", mail_from="a@pass.test")
    f2 = await engine.check(msg2)
    assert f2.outcome == "spam" and "smtp.mailfrom=pass.test" in f2.symbols


async def test_dns_failure_is_a_temperror_finding(resolver: Resolver) -> None:
    msg = ParsedMessage("m3", "t", b"", (), (), client_ip="192.0.2.1", mail_from="x@temp.invalid")
    f = await SpfEngine(resolver).check(msg)
    assert f.outcome == "error" and f.error and f.error.startswith("temperror")
    assert "spf=temperror" in f.symbols


async def test_answers_are_cached(resolver: Resolver) -> None:
    await check_host(resolver, "192.0.2.1", "inc.test", "a@inc.test")
    before = resolver.queries
    await check_host(resolver, "192.0.2.1", "inc.test", "a@inc.test")
    assert resolver.queries == before


_record = st.text(alphabet="v=spf1 ais:/.%{}-+~?4p6mxlrdeotc0123456789_", max_size=60)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(record=_record)
async def test_fuzzed_records_give_a_result_never_an_exception(dns: DnsServer, record: str) -> None:
    dns.records.update(served({"fuzz.test.": [("TXT", "v=spf1 " + record)]}))
    r = await check_host(
        Resolver([dns.address], timeout=1.0, cache_size=0), "192.0.2.1", "fuzz.test", "a@fuzz.test"
    )
    assert r.result in {"pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"}
