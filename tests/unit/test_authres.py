"""Authentication-Results from recorded verdicts, and ARC sealing verified by the ARC engine."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from support.authkeys import rsa_key, served
from support.dnsserver import DnsServer

from deliverer.authres import arc_seal, authentication_results
from mxgate.resolver import Resolver
from scanner.engines.arc import ArcEngine
from scanner.engines.common import ParsedMessage
from schemas import EngineVerdict

SEAL = rsa_key()


def verdict(engine: str, outcome: str = "clean", **detail: str) -> EngineVerdict:
    return EngineVerdict(
        engine=engine, kind="auth", engine_version="1", rules_version="r", outcome=outcome,
        # Symbols are for people: the header never reads them.
        symbols=("SPF_FAIL", "spf=fail", "smtp.mailfrom=symbols.test"),
        detail=detail,
    )  # fmt: skip


VERDICTS = [
    # The SPF engine's detail names the domain, not the identity: the envelope decides.
    verdict("spf", result="pass", domain="sender.test", reason="matched ip4"),
    verdict("dkim", **{"result": "pass", "header.d": "sender.test", "header.s": "k", "reason": ""}),
    verdict("dkim", **{"result": "fail", "header.d": "evil;\r\nX-Injected: 1"}),
    verdict(
        "dmarc",
        **{
            "result": "pass",
            "header.from": "sender.test",
            "policy.dmarc": "reject",
            "policy": "none",
            "reason": "",
        },
    ),
    verdict("arc", "error"),
    EngineVerdict(
        engine="bayes",
        kind="antispam",
        engine_version="1",
        rules_version="r",
        outcome="spam",
        symbols=("BAYES_99",),
        detail={"result": "pass"},
    ),
]


def test_one_header_with_every_method_and_nothing_injected() -> None:
    h = authentication_results("mx.gateway.test", VERDICTS, "alice@sender.test")
    assert h == (
        b"Authentication-Results: mx.gateway.test;\r\n"
        b"\tspf=pass smtp.mailfrom=sender.test;\r\n"
        b"\tdkim=pass header.d=sender.test header.s=k;\r\n"
        b"\tdkim=fail header.d=evilX-Injected1;\r\n"  # nothing that could end the header
        b"\tdmarc=pass header.from=sender.test policy.dmarc=reject;\r\n"
        b"\tarc=temperror\r\n"
    )
    assert authentication_results("mx", []) == b"Authentication-Results: mx;\r\n\tnone\r\n"


def test_fields_missing_from_the_detail_fall_back_to_the_outcome() -> None:
    got = authentication_results(
        "mx",
        [
            verdict("spf", result="none", domain="helo.test"),  # null sender: the HELO name
            verdict("dkim", **{"sender.test/k": "pass"}),  # no result key: nothing to claim
            verdict("dkim", "timeout"),
            verdict("dmarc", result="fail", policy="reject"),  # no header.from in its detail
            verdict("arc", cv="pass", reason=""),
        ],
        "",
    )
    assert got == (
        b"Authentication-Results: mx;\r\n\tspf=none smtp.helo=helo.test;\r\n"
        b"\tdkim=temperror;\r\n\tdmarc=fail;\r\n\tarc=pass\r\n"
    )


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    srv = DnsServer(served({"gw._domainkey.gateway.test": [("TXT", SEAL.record)]}), zones=["test"])
    srv.start()
    yield srv
    srv.stop()


async def test_arc_seal_verifies_and_survives_no_change(dns: DnsServer) -> None:
    msg = b"From: a@sender.test\r\nTo: b@tenant.test\r\nSubject: s\r\n\r\nbody\r\n"
    ar = authentication_results("gateway.test", VERDICTS[:1], "alice@sender.test")
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


def test_the_first_attempt_carries_the_header_built_from_the_verdicts() -> None:
    import datetime as dt

    from deliverer.service import first_attempt
    from schemas import MessageScanned, WorkKind

    now = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    scanned = MessageScanned(
        message_id="m", tenant="t", scanned_at=now, scanner="s", action="deliver", reasons=(),
        policy_version="1", verdicts=(VERDICTS[0], VERDICTS[-1]), mail_from="alice@sender.test",
        rcpt_to=("bob@example.test",), object_key="k", sha256="h", size=1, received_at=now,
    )  # fmt: skip
    item = first_attempt(scanned, now, "mx")
    assert (item.kind, item.action, item.attempt, item.due_at) == (
        WorkKind.DECISION, "deliver", 1, now,
    )  # fmt: skip
    assert (
        item.auth_results
        == "Authentication-Results: mx;\r\n\tspf=pass smtp.mailfrom=sender.test\r\n"
    )
    assert first_attempt(scanned, now).auth_results == ""  # no authserv-id: no header
    no_auth = first_attempt(replace(scanned, verdicts=(VERDICTS[-1],)), now, "mx")
    assert no_auth.auth_results == ""  # no auth engine ran
