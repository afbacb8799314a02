"""DNSBL lookups against a real authoritative DNS server on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.dnsserver import DnsServer

from receiver.dnsbl import DnsblChecker, make_resolver


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer(
        {
            "2.0.0.127.bl.test": {"A": ["127.0.0.2"]},
            "2.0.0.127.other.test": {"A": ["127.0.0.4"]},
            # A zone answering outside 127/8 is broken, not a listing.
            "3.0.0.127.bl.test": {"A": ["192.0.2.1"]},
        },
        zones=["bl.test", "other.test"],
    ) as server:
        yield server


def checker(server: DnsServer, zones: tuple[str, ...], timeout: float = 2.0) -> DnsblChecker:
    return DnsblChecker(zones, make_resolver((server.address,), timeout), timeout)


async def test_listed_in_some_zones(dns_server: DnsServer) -> None:
    result = await checker(dns_server, ("bl.test", "other.test")).check("127.0.0.2")
    assert result.listed == ("bl.test", "other.test") and result.failed == ()
    assert ("2.0.0.127.bl.test.", "A") in dns_server.queries


async def test_not_listed(dns_server: DnsServer) -> None:
    result = await checker(dns_server, ("bl.test",)).check("127.0.0.9")
    assert result.listed == () and result.failed == ()


async def test_non_loopback_answer_is_not_a_listing(dns_server: DnsServer) -> None:
    assert (await checker(dns_server, ("bl.test",)).check("127.0.0.3")).listed == ()


async def test_servfail_and_timeout_are_failures_not_listings(dns_server: DnsServer) -> None:
    dns_server.fault = "servfail"
    result = await checker(dns_server, ("bl.test",)).check("127.0.0.2")
    assert result.listed == () and result.failed == ("bl.test",)
    dns_server.fault = "drop"
    result = await checker(dns_server, ("bl.test",), timeout=0.3).check("127.0.0.2")
    assert result.listed == () and result.failed == ("bl.test",)


async def test_not_an_ip_is_never_listed(dns_server: DnsServer) -> None:
    assert (await checker(dns_server, ("bl.test",)).check("not-an-ip")).listed == ()


async def test_ipv6_reverse_name(dns_server: DnsServer) -> None:
    dns_server.records[
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test."
    ] = {"A": ["127.0.0.2"]}
    assert (await checker(dns_server, ("bl.test",)).check("2001:db8::1")).listed == ("bl.test",)
