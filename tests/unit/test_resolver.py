"""The shared resolver's options the receiver and deliverer rely on, against a real DNS server."""

from __future__ import annotations

from support.dnsserver import DnsServer

from deliverer.routes import Router
from mxgate.resolver import Resolver
from mxgate.tenants import Tenants
from receiver.dnsbl import make_resolver


def test_servers_are_reported_with_their_ports() -> None:
    r = Resolver(["127.0.0.1:5353", "[::1]:54", "192.0.2.1"])
    assert r.servers == (("127.0.0.1", 5353), ("::1", 54), ("192.0.2.1", 53))


async def test_cache_off_asks_the_network_every_time() -> None:
    with DnsServer({"a.zone.test": {"A": ["192.0.2.1"]}}, zones=["zone.test"]) as server:
        cached = Resolver([server.address], timeout=2.0)
        uncached = Resolver([server.address], timeout=2.0, cache_size=0)
        for r in (cached, uncached):
            assert (await r.addresses("a.zone.test", ipv6=False)).records == ("192.0.2.1",)
            assert (await r.addresses("a.zone.test", ipv6=False)).records == ("192.0.2.1",)
        assert (cached.queries, uncached.queries) == (1, 2)


async def test_receiver_and_deliverer_see_a_dns_change_at_once() -> None:
    records = {"2.0.0.127.bl.test": {"A": ["127.0.0.2"]}, "mail.acme.test": {"MX": ["10 a."]}}
    with DnsServer(records, zones=["bl.test", "acme.test"]) as server:
        dnsbl = make_resolver((server.address,), 2.0)
        tenants = Tenants.from_mapping(
            {"tenants": {"acme": {"domains": ["acme.test"], "route": {"mx": "mail.acme.test"}}}}
        )
        router = Router(tenants, nameservers=[server.address], lookup_timeout=2.0)
        assert (await dnsbl.addresses("2.0.0.127.bl.test", ipv6=False)).records
        assert await router.mx_hosts("mail.acme.test") == ["a"]
        server.records["2.0.0.127.bl.test."] = {"A": []}
        server.records["mail.acme.test."] = {"MX": ["10 b."]}
        assert (await dnsbl.addresses("2.0.0.127.bl.test", ipv6=False)).records == ()
        assert await router.mx_hosts("mail.acme.test") == ["b"]
