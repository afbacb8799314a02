"""Recipient verification: SMTP callouts to a real tenant server with a rocksdict
positive/negative cache (the default), static lists, and the ``none`` opt-out."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from support.dnsserver import DnsServer
from support.tlsca import TestCA

from mxgate.resolver import Resolver
from mxgate.tenants import Hop, RecipientCheck, Route, Tenant, Tenants
from receiver.checks import accept
from receiver.recipients import (
    CALLOUT_BROKEN,
    CALLOUT_UNREACHABLE,
    UNKNOWN_USER,
    UNVERIFIED,
    RecipientVerifier,
)


class Directory:
    """The tenant's own mail server: knows some users, counts the RCPTs it is asked."""

    def __init__(self, users: set[str]) -> None:
        self.users = users
        self.senders: list[str] = []
        self.over_tls: list[bool] = []  # per RCPT: did it arrive over STARTTLS?
        self.asked: list[str] = []
        self.tempfail = False
        self.stall = False  # never answer RCPT
        self.drop = False  # close the connection at RCPT

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        self.senders.append(address)
        envelope.mail_from = address
        return "250 2.1.0 ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        self.asked.append(address)
        self.over_tls.append(session.ssl is not None)
        if self.stall:
            await asyncio.sleep(3600)
        if self.drop:
            assert server.transport is not None
            server.transport.abort()
            return "421 4.3.0 gone"
        if self.tempfail:
            return "451 4.3.0 directory down"
        if address.lower() in self.users:
            envelope.rcpt_tos.append(address)
            return "250 2.1.5 ok"
        return "550 5.1.1 no such user"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def directory() -> AsyncIterator[tuple[Directory, int]]:
    d = Directory({"alice@example.test"})
    port = free_port()
    ctl = Controller(d, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield d, port
    finally:
        ctl.stop()


def tenant(port: int, check: RecipientCheck) -> Tenant:
    return Tenant(
        name="example",
        domains=("example.test",),
        route=Route(host="127.0.0.1", port=port),
        recipients=check,
    )


async def test_static_list(tmp_path: Path) -> None:
    v = RecipientVerifier(tmp_path / "cache", "mx.test")
    t = tenant(1, RecipientCheck(mode="static", addresses=("Alice@example.test", "@sub.test")))
    try:
        assert (await v.check(t, "alice@EXAMPLE.test")).accepted
        assert (await v.check(t, "anyone@sub.test")).accepted
        assert (await v.check(t, "bob@example.test")).reply == UNKNOWN_USER
        assert UNKNOWN_USER.startswith("550 5.1.1")
    finally:
        v.close()


async def test_callout_answers_and_caches_both_ways(
    tmp_path: Path, directory: tuple[Directory, int]
) -> None:
    d, port = directory
    clock = Clock()
    t = tenant(port, RecipientCheck(mode="callout", positive_ttl=100, negative_ttl=10))
    v = RecipientVerifier(tmp_path / "cache", "mx.test", clock=clock)
    try:
        assert (await v.check(t, "alice@example.test")).accepted
        assert (await v.check(t, "bob@example.test")).reply == UNKNOWN_USER
        assert d.asked == ["alice@example.test", "bob@example.test"]
        # Cached: the tenant's server is not asked again.
        assert (await v.check(t, "ALICE@example.test")).accepted
        assert (await v.check(t, "bob@example.test")).reply == UNKNOWN_USER
        assert len(d.asked) == 2
        # The negative entry expires first.
        clock.now += 11
        d.users.add("bob@example.test")
        assert (await v.check(t, "bob@example.test")).accepted
        assert (await v.check(t, "alice@example.test")).accepted
        assert d.asked == ["alice@example.test", "bob@example.test", "bob@example.test"]
    finally:
        v.close()
    # The cache survives a restart (rocksdict on disk).
    v2 = RecipientVerifier(tmp_path / "cache", "mx.test", clock=clock)
    try:
        assert (await v2.check(t, "alice@example.test")).accepted
        assert v2.callouts == 0
    finally:
        v2.close()


async def test_concurrent_checks_share_one_callout(
    tmp_path: Path, directory: tuple[Directory, int]
) -> None:
    d, port = directory
    t = tenant(port, RecipientCheck(mode="callout"))
    v = RecipientVerifier(tmp_path / "cache", "mx.test")
    try:
        results = await asyncio.gather(*(v.check(t, "alice@example.test") for _ in range(5)))
        assert results == [accept("recipient")] * 5
        assert d.asked == ["alice@example.test"]
    finally:
        v.close()


async def test_no_answer_defers_or_accepts_by_tenant_choice(
    tmp_path: Path, directory: tuple[Directory, int]
) -> None:
    d, port = directory
    d.tempfail = True
    v = RecipientVerifier(tmp_path / "cache", "mx.test")
    try:
        strict = tenant(port, RecipientCheck(mode="callout"))
        assert (await v.check(strict, "alice@example.test")).reply == UNVERIFIED
        assert UNVERIFIED.startswith("451 4.4.3")
        lenient = tenant(port, RecipientCheck(mode="callout", on_error="accept"))
        assert (await v.check(lenient, "alice@example.test")).accepted
        # Nothing was cached from a temporary failure.
        d.tempfail = False
        assert (await v.check(strict, "alice@example.test")).accepted
        # A server that is not there at all.
        down = tenant(free_port(), RecipientCheck(mode="callout", timeout=2))
        assert (await v.check(down, "carol@example.test")).reply == CALLOUT_UNREACHABLE
    finally:
        v.close()


def bare_tenant(route: Route) -> Tenant:
    """A tenant as most are written: no ``recipients`` table."""
    return Tenant(name="example", domains=("example.test",), route=route)


async def test_without_a_table_a_tenant_verifies_by_callout_to_its_route(
    tmp_path: Path, directory: tuple[Directory, int]
) -> None:
    d, port = directory
    t = bare_tenant(Route(host="127.0.0.1", port=port))
    assert t.recipients.mode == "callout"
    assert (t.recipients.positive_ttl, t.recipients.negative_ttl) == (7 * 86400.0, 3600.0)
    v = RecipientVerifier(tmp_path / "cache", "mx.test")
    try:
        assert (await v.check(t, "alice@example.test")).accepted
        refused = await v.check(t, "bob@example.test")
        assert refused.reply == UNKNOWN_USER and refused.reason == "unknown_user"
        assert d.asked == ["alice@example.test", "bob@example.test"]
        assert d.senders == ["<>", "<>"]  # MAIL FROM:<> (as aiosmtpd records it): no bounce
        assert (await v.check(t, "bob@example.test")).reply == UNKNOWN_USER
        assert v.callouts == 2  # the negative answer was cached
    finally:
        v.close()


async def test_mode_none_accepts_anyone_without_asking(
    tmp_path: Path, directory: tuple[Directory, int]
) -> None:
    d, port = directory
    loaded = Tenants.from_mapping(
        {
            "tenants": {
                "example": {
                    "domains": ["example.test"],
                    "route": {"host": "127.0.0.1", "port": port},
                    "recipients": {"mode": "none"},
                }
            }
        }
    )
    t = loaded.by_name("example")
    assert t is not None and t.recipients.mode == "none"
    v = RecipientVerifier(tmp_path / "cache", "mx.test")
    try:
        assert (await v.check(t, "bob@example.test")) == accept("recipient")
        assert d.asked == [] and v.callouts == 0
    finally:
        v.close()


async def test_a_callout_that_cannot_reach_the_server_tempfails_with_the_reason(
    tmp_path: Path, directory: tuple[Directory, int]
) -> None:
    d, port = directory
    v = RecipientVerifier(tmp_path / "cache", "mx.test")
    quick = RecipientCheck(timeout=1)
    try:
        nobody = tenant(free_port(), quick)  # connection refused
        result = await v.check(nobody, "alice@example.test")
        assert result.verdict == "tempfail" and result.reply == CALLOUT_UNREACHABLE
        assert CALLOUT_UNREACHABLE.startswith("451 4.4.1 ")
        d.tempfail = True  # the server answers 451 to RCPT
        assert (await v.check(tenant(port, quick), "alice@example.test")).reply == UNVERIFIED
        d.tempfail, d.drop = False, True  # the server drops the line at RCPT
        assert (await v.check(tenant(port, quick), "alice@example.test")).reply == CALLOUT_BROKEN
        assert CALLOUT_BROKEN.startswith("451 4.4.2 ")
        d.drop, d.stall = False, True  # the server never answers RCPT
        assert (await v.check(tenant(port, quick), "alice@example.test")).reply == CALLOUT_BROKEN
        # None of it was cached: the next RCPT asks again, and gets the real answer.
        d.stall = False
        assert (await v.check(tenant(port, quick), "alice@example.test")).accepted
        # A UTF-8 address is asked with SMTPUTF8, as it would be delivered.
        d.users.add("jörg@example.test")
        assert (await v.check(tenant(port, quick), "Jörg@example.test")).accepted
        assert d.asked[-1] == "jörg@example.test"
    finally:
        v.close()


async def test_a_utf8_address_at_a_server_without_smtputf8_tempfails(tmp_path: Path) -> None:
    d = Directory({"jörg@example.test"})
    port = free_port()
    ctl = Controller(d, hostname="127.0.0.1", port=port, enable_SMTPUTF8=False)
    ctl.start()
    v = RecipientVerifier(tmp_path / "cache", "mx.test")
    try:
        # It could not take this recipient's mail either; nothing is asked, nothing cached.
        assert (await v.check(tenant(port, RecipientCheck()), "jörg@example.test")).reply == (
            UNVERIFIED
        )
        assert d.asked == []
        assert (await v.check(tenant(port, RecipientCheck()), "jorg@example.test")).reply == (
            UNKNOWN_USER
        )
    finally:
        v.close()
        ctl.stop()


async def test_a_callout_follows_the_hops_in_priority_order(
    tmp_path: Path, directory: tuple[Directory, int]
) -> None:
    d, port = directory
    dead = free_port()
    route = Route(
        hops=(Hop(host="127.0.0.1", port=port, priority=20), Hop(host="127.0.0.1", port=dead))
    )
    v = RecipientVerifier(tmp_path / "cache", "mx.test")
    try:
        # The first hop (priority 10) refuses connections: the second one answers.
        assert (await v.check(bare_tenant(route), "bob@example.test")).reply == UNKNOWN_USER
        assert d.asked == ["bob@example.test"]
    finally:
        v.close()


async def test_a_callout_to_an_mx_route_asks_the_mx_hosts(
    tmp_path: Path, directory: tuple[Directory, int]
) -> None:
    d, port = directory
    records = {"corp.test": {"MX": ["10 localhost."]}}
    with DnsServer(records, zones=["corp.test"]) as dns:
        resolver = Resolver([dns.address])
        v = RecipientVerifier(tmp_path / "cache", "mx.test", resolver=resolver)
        try:
            t = bare_tenant(Route(mx="corp.test", port=port))
            assert (await v.check(t, "alice@example.test")).accepted
            assert (await v.check(t, "bob@example.test")).reply == UNKNOWN_USER
            assert d.asked == ["alice@example.test", "bob@example.test"]
            # DNS that does not answer: 451 4.4.3, never an accept or a 5xx.
            dns.fault = "servfail"
            failing = bare_tenant(Route(mx="other.corp.test", port=port))
            assert (await v.check(failing, "carol@example.test")).reply == UNVERIFIED
        finally:
            v.close()


def test_static_check_validates_entries() -> None:
    with pytest.raises(ValueError, match="not user@domain"):
        RecipientCheck(mode="static", addresses=("alice",))


async def test_a_route_that_requires_tls_is_never_asked_in_clear(
    tmp_path: Path, directory: tuple[Directory, int]
) -> None:
    d, port = directory  # offers no STARTTLS
    v = RecipientVerifier(tmp_path / "cache", "mx.test")
    try:
        t = bare_tenant(Route(host="127.0.0.1", port=port, tls="required"))
        assert (await v.check(t, "alice@example.test")).reply == UNVERIFIED
        assert d.asked == []  # the recipient was not named over a clear channel
    finally:
        v.close()


async def test_a_callout_uses_starttls_as_the_route_says(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    d = Directory({"alice@example.test"})
    port = free_port()
    ctl = Controller(d, hostname="127.0.0.1", port=port, tls_context=ca.server_context("127.0.0.1"))
    ctl.start()
    v = RecipientVerifier(tmp_path / "cache", "mx.test")
    try:
        # Opportunistic (the default): STARTTLS when offered, any certificate.
        assert (await v.check(tenant(port, RecipientCheck()), "alice@example.test")).accepted
        verified = Route(host="127.0.0.1", port=port, tls="verified", tls_ca_file=ca.ca_file)
        assert (await v.check(bare_tenant(verified), "bob@example.test")).reply == UNKNOWN_USER
        assert d.over_tls == [True, True]
        # A certificate that does not chain to the route's CA: no answer, so a 451.
        other = TestCA(tmp_path / "other")
        wrong = Route(host="127.0.0.1", port=port, tls="verified", tls_ca_file=other.ca_file)
        result = await v.check(bare_tenant(wrong), "carol@example.test")
        assert result.reply == UNVERIFIED  # it answered, but could not be trusted to say
        assert d.asked == ["alice@example.test", "bob@example.test"]
    finally:
        v.close()
        ctl.stop()
