"""Authentication-Results from recorded verdicts, and ARC sealing verified by the ARC engine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.authkeys import rsa_key, served
from support.dnsserver import DnsServer

from deliverer.authres import arc_seal, authentication_results
from mxgate.resolver import Resolver
from scanner.engines.arc import ArcEngine
from scanner.engines.common import ParsedMessage

SEAL = rsa_key()
VERDICTS = [
    {
        "engine": "spf",
        "outcome": "clean",
        "symbols": ["SPF_PASS", "spf=pass", "smtp.mailfrom=sender.test"],
    },
    {
        "engine": "dkim",
        "outcome": "clean",
        "symbols": [
            "DKIM_PASS",
            "dkim=pass",
            "header.d=sender.test",
            "header.s=k",
            "dkim=fail",
            "header.d=evil;\r\nX-Injected: 1",
        ],
    },
    {
        "engine": "dmarc",
        "outcome": "clean",
        "symbols": ["dmarc=pass", "header.from=sender.test", "policy.dmarc=reject"],
    },
    {"engine": "arc", "outcome": "error", "symbols": []},
    {"engine": "bayes", "outcome": "spam", "symbols": ["BAYES_99"]},
]


def test_one_header_with_every_method_and_nothing_injected() -> None:
    h = authentication_results("mx.gateway.test", VERDICTS)
    assert h == (
        b"Authentication-Results: mx.gateway.test;\r\n"
        b"\tspf=pass smtp.mailfrom=sender.test;\r\n"
        b"\tdkim=pass header.d=sender.test header.s=k;\r\n"
        b"\tdkim=fail;\r\n"  # the malformed property is dropped, not copied
        b"\tdmarc=pass header.from=sender.test policy.dmarc=reject;\r\n"
        b"\tarc=temperror\r\n"
    )
    assert authentication_results("mx", []) == b"Authentication-Results: mx;\r\n\tnone\r\n"


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    srv = DnsServer(served({"gw._domainkey.gateway.test": [("TXT", SEAL.record)]}), zones=["test"])
    srv.start()
    yield srv
    srv.stop()


async def test_arc_seal_verifies_and_survives_no_change(dns: DnsServer) -> None:
    msg = b"From: a@sender.test\r\nTo: b@tenant.test\r\nSubject: s\r\n\r\nbody\r\n"
    ar = authentication_results("gateway.test", VERDICTS[:1])
    seal = arc_seal(
        msg,
        ar,
        selector="gw",
        domain="gateway.test",
        private_key=SEAL.private,
        authserv_id="gateway.test",
    )
    assert seal.startswith(b"ARC-Seal:") and b"ARC-Authentication-Results: i=1;" in seal
    out = seal + ar + msg
    f = await ArcEngine(Resolver([dns.address])).check(ParsedMessage("s", "t", out, (), ()))
    assert f.symbols == ("ARC_PASS", "arc=pass"), f.detail
    assert (
        arc_seal(
            msg,
            ar,
            selector="gw",
            domain="gateway.test",
            private_key=b"junk",
            authserv_id="gateway.test",
        )
        == b""
    )
