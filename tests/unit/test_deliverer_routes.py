"""Routing: static hops in priority order, MX lookups against a real DNS server on loopback."""

from __future__ import annotations

import random

import pytest
from support.dnsserver import DnsServer

from deliverer.routes import Destination, RouteError, Router, order_by_preference, parse_hostport
from mxgate.tenants import Tenants


def _tenants(route: dict) -> Tenants:
    return Tenants.from_mapping({"tenants": {"acme": {"domains": ["acme.test"], "route": route}}})


async def test_static_hops_in_priority_order_with_route_tls() -> None:
    route = {
        "hops": [
            {"host": "backup.acme.test", "port": 2526, "priority": 20},
            {"host": "primary.acme.test", "port": 2525, "priority": 10},
        ],
        "tls": "required",
    }
    router = Router(_tenants(route))
    dests = await router.destinations("bob@acme.test")
    assert [(d.host, d.port, d.tls) for d in dests] == [
        ("primary.acme.test", 2525, "required"),
        ("backup.acme.test", 2526, "required"),
    ]


def test_route_needs_exactly_one_kind() -> None:
    from mxgate.errors import ConfigError

    with pytest.raises(ConfigError, match="exactly one"):
        _tenants({"host": "a.test", "mx": "acme.test"})
    with pytest.raises(ConfigError, match="exactly one"):
        _tenants({"port": 25})


def test_equal_preferences_are_shuffled_lower_first() -> None:
    rng = random.Random(7)
    seen = set()
    for _ in range(20):
        order = order_by_preference([(20, "c"), (10, "a"), (10, "b")], rng)
        assert order[2] == "c"
        seen.add(tuple(order[:2]))
    assert seen == {("a", "b"), ("b", "a")}


def test_parse_hostport() -> None:
    assert parse_hostport("mx.test:2525") == ("mx.test", 2525)
    assert parse_hostport("mx.test") == ("mx.test", 25)
    assert parse_hostport("[::1]:26") == ("::1", 26)
    assert parse_hostport("127.0.0.1", 53) == ("127.0.0.1", 53)


async def test_mx_route_and_outside_domains_resolve_by_mx() -> None:
    records = {
        "mail.acme.test": {"MX": ["20 mx2.acme.test.", "10 mx1.acme.test."]},
        "sender.test": {"MX": ["5 in.sender.test."]},
        "implicit.test": {"A": ["192.0.2.7"]},
        "nullmx.test": {"MX": ["0 ."]},
    }
    zones = ["acme.test", "sender.test", "implicit.test", "nullmx.test"]
    with DnsServer(records, zones=zones) as dns_server:
        router = Router(
            _tenants({"mx": "mail.acme.test", "port": 2525, "tls": "verified"}),
            nameservers=[dns_server.address],
        )
        assert await router.destinations("bob@acme.test") == [
            Destination("mx1.acme.test", 2525, "verified"),
            Destination("mx2.acme.test", 2525, "verified"),
        ]
        # A DSN to an outside sender: that domain's MX, port 25.
        assert await router.destinations("alice@sender.test") == [Destination("in.sender.test", 25)]
        assert await router.mx_hosts("implicit.test") == ["implicit.test"]
        with pytest.raises(RouteError, match="null MX") as e:
            await router.mx_hosts("nullmx.test")
        assert e.value.permanent
        with pytest.raises(RouteError, match="no such domain") as e:
            await router.mx_hosts("nothere.acme.test")
        assert e.value.permanent
        dns_server.fault = "servfail"
        with pytest.raises(RouteError) as e:
            await router.mx_hosts("sender.test")
        assert not e.value.permanent


async def test_outbound_route_overrides_mx_for_outside_domains() -> None:
    router = Router(_tenants({"host": "10.0.0.1"}), outbound_route="127.0.0.1:2599")
    assert await router.destinations("alice@elsewhere.test") == [Destination("127.0.0.1", 2599)]
