"""DMARC (RFC 7489): alignment, p/sp/pct, organizational domain, against a loopback DNS."""

from __future__ import annotations

from collections.abc import Iterator

import dkim
import pytest
from support.authkeys import rsa_key, served
from support.dnsserver import DnsServer

from mxgate.resolver import Resolver
from mxgate.tenants import Policy
from scanner.engines.common import ParsedMessage
from scanner.engines.dmarc import DmarcEngine
from scanner.mailauth.dkim import DkimResult
from scanner.mailauth.dmarc import DmarcRecord, InvalidRecord, evaluate, org_domain, parse_record
from scanner.mailauth.spf import SpfResult
from scanner.mime import parse
from scanner.policy import decide

KEY = rsa_key()
ZONES = {
    "_dmarc.relaxed.test": [("TXT", "v=DMARC1; p=reject")],
    "_dmarc.strict.test": [("TXT", "v=DMARC1; p=reject; adkim=s; aspf=s")],
    "_dmarc.quar.test": [("TXT", "v=DMARC1; p=quarantine; pct=0")],
    "_dmarc.none.test": [("TXT", "v=DMARC1; p=none")],
    "_dmarc.org.test": [("TXT", "v=DMARC1; p=none; sp=reject")],
    "_dmarc.two.test": [("TXT", "v=DMARC1; p=reject"), ("TXT", "v=DMARC1; p=none")],
    "_dmarc.example.co.uk": [("TXT", "v=DMARC1; p=reject")],
    "_dmarc.broken.test": [("TXT", "v=DMARC1; p=bogus")],
    "_dmarc.nop.test": [("TXT", "v=DMARC1; rua=mailto:d@nop.test")],
    "_dmarc.badsp.test": [("TXT", "v=DMARC1; p=none; sp=drop")],
    "_dmarc.junk.test": [("TXT", "v=DMARC1; p=reject; garbage")],
    "_dmarc.spfok.test": [("TXT", "v=DMARC1; p=reject")],
    "spfok.test": [("TXT", "v=spf1 ip4:192.0.2.0/24 -all")],
    "k._domainkey.relaxed.test": [("TXT", KEY.record)],
}


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    srv = DnsServer(served(ZONES), zones=["test", "uk"])
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def resolver(dns: DnsServer) -> Resolver:
    return Resolver([dns.address], timeout=2.0)


def frm(domain: str) -> tuple[tuple[str, str], ...]:
    return (("From", f"Someone <someone@{domain}>"),)


NO_SPF = SpfResult("none", "")
SPF_TEMP = SpfResult("temperror", "relaxed.test")


def dk(domain: str, result: str = "pass") -> list[DkimResult]:
    return [DkimResult(result, domain, "k")]


@pytest.mark.parametrize(
    ("from_dom", "spf", "dkim_res", "result", "policy"),
    [
        ("relaxed.test", NO_SPF, dk("mail.relaxed.test"), "pass", "none"),  # relaxed: same org
        ("strict.test", NO_SPF, dk("mail.strict.test"), "fail", "reject"),  # strict: exact only
        ("strict.test", NO_SPF, dk("strict.test"), "pass", "none"),
        ("relaxed.test", NO_SPF, dk("relaxed.test", "fail"), "fail", "reject"),
        ("relaxed.test", NO_SPF, dk("evil.test"), "fail", "reject"),  # unaligned pass
        ("relaxed.test", SpfResult("pass", "bounce.relaxed.test"), [], "pass", "none"),
        ("strict.test", SpfResult("pass", "bounce.strict.test"), [], "fail", "reject"),
        # SPF of the HELO identity never aligns (RFC 7489 3.1.2).
        ("relaxed.test", SpfResult("pass", "relaxed.test", "helo"), [], "fail", "reject"),
        ("quar.test", NO_SPF, [], "fail", "none"),  # pct=0: quarantine falls back to none
        ("none.test", NO_SPF, [], "fail", "none"),
        ("sub.org.test", NO_SPF, [], "fail", "reject"),  # sp= from the org domain's record
        ("org.test", NO_SPF, [], "fail", "none"),  # p= for the org domain itself
        ("two.test", NO_SPF, [], "none", "none"),  # several records: no policy
        # A record that cannot be applied is reported as permerror, and applies no policy.
        ("broken.test", NO_SPF, [], "permerror", "none"),
        ("nop.test", NO_SPF, [], "permerror", "none"),
        ("badsp.test", NO_SPF, [], "permerror", "none"),
        ("junk.test", NO_SPF, [], "permerror", "none"),
        # A DNS failure in a check that could have aligned: temperror, the p=reject not applied.
        ("relaxed.test", SPF_TEMP, [], "temperror", "none"),
        ("relaxed.test", NO_SPF, dk("relaxed.test", "temperror"), "temperror", "none"),
        ("strict.test", NO_SPF, dk("strict.test", "temperror"), "temperror", "none"),
        # ... one that could not have aligned leaves the failure a failure.
        ("strict.test", NO_SPF, dk("mail.strict.test", "temperror"), "fail", "reject"),
        ("relaxed.test", SpfResult("temperror", "evil.test"), [], "fail", "reject"),
        ("relaxed.test", SpfResult("temperror", "relaxed.test", "helo"), [], "fail", "reject"),
        # Any aligned pass still wins over another check's DNS failure.
        (
            "relaxed.test",
            SpfResult("temperror", "relaxed.test"),
            dk("relaxed.test"),
            "pass",
            "none",
        ),
        ("nodmarc.test", NO_SPF, [], "none", "none"),
        ("mail.example.co.uk", NO_SPF, [], "fail", "reject"),  # PSL: org is example.co.uk
    ],
)
async def test_rfc7489(
    resolver: Resolver,
    from_dom: str,
    spf: SpfResult,
    dkim_res: list[DkimResult],
    result: str,
    policy: str,
) -> None:
    r = await evaluate(resolver, frm(from_dom), spf, dkim_res, "mid-1")
    assert (r.result, r.policy) == (result, policy), r.reason


async def test_several_from_domains_are_a_permerror(resolver: Resolver) -> None:
    headers = (("From", "a@relaxed.test, b@none.test"),)
    r = await evaluate(resolver, headers, NO_SPF, [], "m")
    assert r.result == "permerror"


async def test_dns_failure_is_temperror(resolver: Resolver) -> None:
    r = await evaluate(resolver, frm("outside.invalid"), NO_SPF, [], "m")  # REFUSED
    assert r.result == "temperror"


async def test_invalid_record_reason_names_the_tag(resolver: Resolver) -> None:
    r = await evaluate(resolver, frm("broken.test"), NO_SPF, [], "m")
    assert (r.result, r.reason) == ("permerror", "invalid record: invalid p='bogus'")


async def test_spf_dns_outage_never_rejects(dns: DnsServer) -> None:
    """SPF's lookups fail, DMARC's own work: temperror (an ``error`` finding), and the tenant's
    policy, which rejects on DMARC p=reject, delivers."""
    dns.records["_dmarc.spfdown.test."] = {"TXT": ['"v=DMARC1; p=reject"']}
    body = b"From: A <a@spfdown.test>\r\nTo: x@tenant.test\r\nSubject: s\r\n\r\nhi\r\n"
    # spfdown.test's own TXT is unserved: point SPF at a name outside the zones (REFUSED).
    dns.records["spfdown.test."] = {"TXT": ['"v=spf1 include:down.invalid -all"']}
    try:
        msg = parse(
            body, message_id="t1", tenant="t", client_ip="192.0.2.9", mail_from="b@spfdown.test"
        )
        f = await DmarcEngine(Resolver([dns.address], timeout=2.0)).check(msg)
        assert f.outcome == "error" and f.symbols[0] == "dmarc=temperror", f.detail
        assert "DMARC_POLICY_REJECT" not in f.symbols
        assert f.detail["policy"] == "none" and f.detail["policy.dmarc"] == "reject"
        decision = decide([f], Policy(version="p", on_dmarc_reject="discard"))
        assert decision.action == "deliver", decision.reasons
    finally:
        del dns.records["_dmarc.spfdown.test."], dns.records["spfdown.test."]


def test_org_domain_and_record_parsing() -> None:
    assert org_domain("a.b.example.co.uk") == "example.co.uk"
    assert org_domain("x.user.github.io") == "user.github.io"  # private PSL section
    assert parse_record("p=reject") is None  # v=DMARC1 must come first
    with pytest.raises(InvalidRecord, match="no p= tag"):
        parse_record("v=DMARC1; rua=mailto:x@example.test")
    assert parse_record("v=DMARC1; p=none; pct=lots; adkim=x;") == DmarcRecord("none")
    rec = parse_record("v=DMARC1; p=quarantine; sp=none; pct=50; adkim=s")
    assert rec is not None and (rec.p, rec.sp, rec.pct, rec.adkim, rec.aspf) == (
        "quarantine",
        "none",
        50,
        "s",
        "r",
    )


async def test_engine_end_to_end_with_dkim_and_spf(resolver: Resolver) -> None:
    body = (
        b"From: Boss <boss@relaxed.test>\r\nTo: x@tenant.test\r\nSubject: pay\r\n\r\n"
        b"Please pay.\r\n"
    )
    signed = (
        dkim.sign(body, b"k", b"relaxed.test", KEY.private, include_headers=[b"from", b"subject"])
        + body
    )
    engine = DmarcEngine(resolver)
    ok = await engine.check(parse(signed, message_id="e1", tenant="t"))
    assert ok.outcome == "clean" and ok.symbols[0] == "dmarc=pass", ok.detail
    forged = parse(
        body, message_id="e2", tenant="t", client_ip="198.51.100.1", mail_from="x@evil.test"
    )
    bad = await engine.check(forged)
    assert bad.outcome == "match"
    assert bad.symbols == (
        "DMARC_POLICY_REJECT",
        "dmarc=fail",
        "header.from=relaxed.test",
        "policy.dmarc=reject",
    )
    spf_ok = parse(
        body.replace(b"relaxed.test", b"spfok.test"),
        message_id="e3",
        tenant="t",
        client_ip="192.0.2.9",
        mail_from="bounce@spfok.test",
    )
    assert (await engine.check(spf_ok)).symbols[0] == "dmarc=pass"


async def test_parsed_message_without_headers_is_permerror(resolver: Resolver) -> None:
    f = await DmarcEngine(resolver).check(ParsedMessage("e4", "t", b"junk", (), ()))
    assert f.outcome == "clean" and f.symbols == ("dmarc=permerror",)
