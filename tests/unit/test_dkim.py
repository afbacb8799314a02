"""DKIM (RSA, Ed25519, several signatures) and ARC against a real loopback DNS server."""

from __future__ import annotations

from collections.abc import Iterator

import dkim
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.authkeys import ed25519_key, rsa_key, served
from support.dnsserver import DnsServer

from mxgate.resolver import Resolver
from scanner.engines.arc import ArcEngine
from scanner.engines.common import ParsedMessage
from scanner.engines.dkim import DkimEngine
from scanner.mailauth.dkim import verify_dkim

RSA = rsa_key()
RSA_SHORT = rsa_key(1024)
ED = ed25519_key()
SEAL = rsa_key()

MSG = (
    b"From: Alice <alice@signer.test>\r\nTo: bob@tenant.test\r\nSubject: hello\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <1@signer.test>\r\n\r\n"
    b"Hello Bob.\r\n"
)


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    zones = served(
        {
            "rsa._domainkey.signer.test": [("TXT", RSA.record)],
            "ed._domainkey.signer.test": [("TXT", ED.record)],
            "short._domainkey.signer.test": [("TXT", RSA_SHORT.record)],
            "rsa._domainkey.other.test": [("TXT", RSA.record)],
            "bad._domainkey.signer.test": [("TXT", "v=DKIM1; k=rsa; p=notbase64!!")],
            "seal._domainkey.forwarder.test": [("TXT", SEAL.record)],
        }
    )
    srv = DnsServer(zones, zones=["test"])
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def resolver(dns: DnsServer) -> Resolver:
    return Resolver([dns.address], timeout=2.0)


def sign(msg: bytes, selector: bytes, domain: bytes, key, **kw) -> bytes:  # type: ignore[no-untyped-def]
    sig = dkim.sign(
        msg,
        selector,
        domain,
        key.private,
        signature_algorithm=key.algorithm,
        include_headers=[b"from", b"to", b"subject"],
        **kw,
    )
    return sig + msg


async def test_rsa_and_ed25519_signatures_pass(resolver: Resolver) -> None:
    signed = sign(sign(MSG, b"rsa", b"signer.test", RSA), b"ed", b"signer.test", ED)
    results = await verify_dkim(resolver, signed)
    assert [(r.result, r.algorithm) for r in results] == [
        ("pass", "ed25519-sha256"),
        ("pass", "rsa-sha256"),
    ]


async def test_tampered_body_fails_and_each_signature_is_judged_alone(resolver: Resolver) -> None:
    signed = sign(MSG, b"rsa", b"signer.test", RSA)
    tampered = signed.replace(b"Hello Bob.", b"Hello Eve.")
    # A second, valid signature added after tampering (as a forwarder would).
    both = sign(tampered, b"rsa", b"other.test", RSA)
    results = await verify_dkim(resolver, both)
    assert {(r.domain, r.result) for r in results} == {
        ("other.test", "pass"),
        ("signer.test", "fail"),
    }


async def test_missing_key_bad_key_and_short_key_are_permerrors(resolver: Resolver) -> None:
    missing = sign(MSG, b"nokey", b"signer.test", RSA)
    bad = sign(MSG, b"bad", b"signer.test", RSA)
    short = sign(MSG, b"short", b"signer.test", RSA_SHORT)
    got = [
        (await verify_dkim(resolver, m, min_key_bits=2048))[0].result for m in (missing, bad, short)
    ]
    assert got == ["permerror", "permerror", "permerror"]


async def test_dns_failure_is_temperror_finding(dns: DnsServer) -> None:
    signed = sign(MSG, b"rsa", b"signer.test", RSA)
    msg = ParsedMessage("d1", "t", signed, (), ())
    dns.fault = "servfail"
    try:
        f = await DkimEngine(Resolver([dns.address], timeout=1.0)).check(msg)
    finally:
        dns.fault = None
    assert f.outcome == "error" and "dkim=temperror" in f.symbols


async def test_engine_symbols_for_authentication_results(resolver: Resolver) -> None:
    signed = sign(MSG.replace(b"\r\n", b"\n"), b"rsa", b"signer.test", RSA, linesep=b"\n")
    f = await DkimEngine(resolver).check(ParsedMessage("d2", "t", signed, (), ()))
    assert f.outcome == "clean"
    assert f.symbols[:4] == ("DKIM_PASS", "dkim=pass", "header.d=signer.test", "header.s=rsa")
    unsigned = await DkimEngine(resolver).check(ParsedMessage("d3", "t", MSG, (), ()))
    assert unsigned.symbols == ("DKIM_NONE", "dkim=none")


async def test_arc_chain_passes_and_a_broken_one_fails(resolver: Resolver) -> None:
    signed = sign(MSG, b"rsa", b"signer.test", RSA)
    ar = b"Authentication-Results: forwarder.test; dkim=pass header.d=signer.test\r\n"
    sealed_headers = dkim.arc_sign(
        ar + signed, b"seal", b"forwarder.test", SEAL.private, b"forwarder.test"
    )
    sealed = b"".join(sealed_headers) + ar + signed
    engine = ArcEngine(resolver)
    ok = await engine.check(ParsedMessage("a1", "t", sealed, (), ()))
    assert ok.symbols == ("ARC_PASS", "arc=pass"), ok.detail
    broken = sealed.replace(b"Hello Bob.", b"Hello Eve.")
    bad = await engine.check(ParsedMessage("a2", "t", broken, (), ()))
    assert bad.symbols == ("ARC_FAIL", "arc=fail")
    none = await engine.check(ParsedMessage("a3", "t", MSG, (), ()))
    assert none.symbols == ("ARC_NONE", "arc=none")


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(header=st.text(max_size=200), body=st.binary(max_size=200))
async def test_fuzzed_signatures_never_crash(resolver: Resolver, header: str, body: bytes) -> None:
    raw = (
        ("DKIM-Signature: " + header.replace("\r", "").replace("\n", " ")).encode(
            "utf-8", "replace"
        )
        + b"\r\nARC-Seal: "
        + body.replace(b"\n", b" ")
        + b"\r\n"
        + MSG
    )
    results = await verify_dkim(resolver, raw)
    assert all(r.result in {"pass", "fail", "neutral", "permerror", "temperror"} for r in results)
    f = await ArcEngine(resolver).check(ParsedMessage("f", "t", raw, (), ()))
    assert f.symbols[1] in {"arc=fail", "arc=none", "arc=pass", "arc=temperror"}
