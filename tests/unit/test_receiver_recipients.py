"""Recipient verification: static lists, and SMTP callouts to a real tenant server with a
rocksdict positive/negative cache."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from mxgate.tenants import RecipientCheck, Route, Tenant
from receiver.checks import accept
from receiver.recipients import UNKNOWN_USER, UNVERIFIED, RecipientVerifier


class Directory:
    """The tenant's own mail server: knows some users, counts the RCPTs it is asked."""

    def __init__(self, users: set[str]) -> None:
        self.users = users
        self.asked: list[str] = []
        self.tempfail = False

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        self.asked.append(address)
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
    import asyncio

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
        assert (await v.check(down, "carol@example.test")).reply == UNVERIFIED
    finally:
        v.close()


def test_static_check_validates_entries() -> None:
    with pytest.raises(ValueError, match="not user@domain"):
        RecipientCheck(mode="static", addresses=("alice",))
