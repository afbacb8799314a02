"""MTA-STS (RFC 8461) on MX routes, end to end on loopback: the TXT record from the real test
DNS server, the policy from a real HTTPS server whose certificate a test CA issued, and the
mail to real aiosmtpd servers with STARTTLS. Plus the policy grammar, fuzzed.

The MX host the policy allows is ``localhost``: the SMTP client resolves MX host names with the
system resolver (which knows only ``localhost`` here), and the certificate is checked against
that name exactly as against a real MX host's.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import structlog
from aiosmtpd.controller import Controller
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from support.dnsserver import DnsServer
from support.leftovers import collect_unclosed_sockets
from support.pipeline import free_port
from support.policyserver import WELL_KNOWN, PolicyServer
from support.sink import TlsCountingHandler
from support.tlsca import TestCA

from deliverer.mta_sts import (
    MAX_AGE_LIMIT,
    MtaSts,
    Policy,
    PolicyError,
    mx_matches,
    parse_policy,
    parse_txt,
)
from deliverer.pool import Pool
from deliverer.routes import Destination, RouteError, Router, make_resolver
from deliverer.smtp import ConnectFailed
from mxgate.settings import DelivererSettings
from mxgate.tenants import Tenants

DOMAIN = "mail.acme.test"  # the tenant route's mx domain: whose policy applies
TXT_NAME = f"_mta-sts.{DOMAIN}"
POLICY_HOST = f"mta-sts.{DOMAIN}"
MSG = b"From: a@sender.test\r\nSubject: t\r\n\r\nhello\r\n"


def policy_text(
    mode: str = "enforce", mx: tuple[str, ...] = ("localhost",), age: int = 86400
) -> str:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {age}"]
    return "\r\n".join(lines) + "\r\n"


def txt(policy_id: str) -> dict[str, list[str]]:
    return {"TXT": [f'"v=STSv1; id={policy_id};"', '"some-other=record"']}


def findings(mode: str, result: str) -> float:
    value = REGISTRY.get_sample_value(
        "mxgate_deliverer_mta_sts_findings_total", {"mode": mode, "result": result}
    )
    return value or 0.0


def tenants(**route: object) -> Tenants:
    r = {"mx": DOMAIN} | route
    return Tenants.from_mapping({"tenants": {"acme": {"domains": ["acme.test"], "route": r}}})


class Clock:
    """Wall time the test moves by hand: expiry without waiting."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


# -- fixtures: CA, DNS, policy server, SMTP servers -------------------------------------------


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"), "mxgate test CA")


@pytest.fixture(scope="module")
def rogue_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """A CA nobody trusts: what an attacker in the path can present."""
    return TestCA(tmp_path_factory.mktemp("rogue"), "rogue CA")


@pytest.fixture
def web(ca: TestCA) -> Iterator[PolicyServer]:
    with PolicyServer(ca.server_context(POLICY_HOST)) as server:
        server.policy = policy_text()
        yield server


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    records = {
        # Without a policy the lower preference, a host the policy does not name, goes first.
        DOMAIN: {"MX": ["5 mx.elsewhere.test.", "10 localhost."]},
        TXT_NAME: txt("20261101"),
        POLICY_HOST: {"A": ["127.0.0.1"]},
    }
    with DnsServer(records, zones=["acme.test"]) as server:
        yield server


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    """The connection pool; its idle sessions are closed even when a test fails."""
    p = Pool(DelivererSettings(connect_timeout=5, command_timeout=30))
    yield p
    await p.aclose()


def sts(dns_server: DnsServer, web: PolicyServer, ca: TestCA, **kw: object) -> MtaSts:
    return MtaSts(
        make_resolver([dns_server.address], 5.0), port=web.port, ca_file=ca.ca_file,
        timeout=5.0, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def router(t: Tenants, s: MtaSts | None) -> Router:
    assert s is not None
    return Router(t, resolver=s.resolver, mta_sts=s)


TlsHandler = TlsCountingHandler


@contextmanager
def smtp_server(tls: ssl.SSLContext | None) -> Iterator[tuple[TlsHandler, int]]:
    """An aiosmtpd server on 127.0.0.1 offering STARTTLS with ``tls`` (None: no STARTTLS)."""
    handler = TlsHandler()
    c = Controller(handler, hostname="127.0.0.1", port=free_port(), tls_context=tls)
    c.start()
    try:
        yield handler, c.port
    finally:
        c.stop()
        collect_unclosed_sockets()


# -- enforce -----------------------------------------------------------------------------------


async def test_enforce_delivers_to_matching_mx_only_with_verified_tls(
    ca: TestCA, web: PolicyServer, dns_server: DnsServer, pool: Pool
) -> None:
    s = sts(dns_server, web, ca)
    mismatches = findings("enforce", "mx-mismatch")
    with smtp_server(ca.server_context("localhost")) as (handler, port):
        dests = await router(tenants(port=port), s).destinations("bob@acme.test")
        # mx.elsewhere.test (preferred by MX, absent from the policy) is no candidate.
        assert dests == [
            Destination("localhost", port, "verified", str(ca.ca_file), None, "enforce", DOMAIN)
        ]
        res = await pool.send(dests[0], "a@sender.test", ["bob@acme.test"], MSG)
        await pool.aclose()  # QUIT while the server still runs
    assert [r.status for r in res] == ["delivered"]
    assert handler.tls_sessions == 1
    assert findings("enforce", "mx-mismatch") == mismatches + 1
    # The policy came over HTTPS from mta-sts.<domain>, found through our resolver, with SNI.
    assert web.requests == [(WELL_KNOWN, f"{POLICY_HOST}:{web.port}", POLICY_HOST)]
    assert ("_mta-sts.mail.acme.test.", "TXT") in dns_server.queries
    assert ("mta-sts.mail.acme.test.", "A") in dns_server.queries


def _bad_tls(kind: str, ca: TestCA, rogue_ca: TestCA) -> ssl.SSLContext | None:
    if kind == "untrusted":
        return rogue_ca.server_context("localhost")
    if kind == "wrong-name":
        return ca.server_context("mx.elsewhere.test")
    if kind == "expired":
        return ca.server_context("localhost", expired=True)
    return None  # no STARTTLS at all


@pytest.mark.parametrize(
    ("kind", "result"),
    [
        ("untrusted", "certificate-not-trusted"),
        ("wrong-name", "certificate-host-mismatch"),
        ("expired", "certificate-expired"),
        ("no-starttls", "starttls-not-supported"),
    ],
)
async def test_enforce_refuses_an_mx_without_valid_tls(
    ca: TestCA,
    rogue_ca: TestCA,
    web: PolicyServer,
    dns_server: DnsServer,
    kind: str,
    result: str,
    pool: Pool,
) -> None:
    s = sts(dns_server, web, ca)
    before = findings("enforce", result)
    with smtp_server(_bad_tls(kind, ca, rogue_ca)) as (handler, port):
        dests = await router(tenants(port=port), s).destinations("bob@acme.test")
        # ConnectFailed: nothing sent, the deliverer defers the recipient (no clear text).
        with pytest.raises(ConnectFailed, match=rf"MTA-STS enforce \({DOMAIN}\)"):
            await pool.send(dests[0], "a@sender.test", ["bob@acme.test"], MSG)
        await pool.aclose()
    assert handler.messages == []
    assert findings("enforce", result) == before + 1


async def test_enforce_without_a_matching_mx_is_a_temporary_failure(
    ca: TestCA, web: PolicyServer, dns_server: DnsServer
) -> None:
    web.policy = policy_text(mx=("*.acme.test",))
    r = router(tenants(), sts(dns_server, web, ca))
    with pytest.raises(RouteError, match="no MX host matches") as e:
        await r.destinations("bob@acme.test")
    assert not e.value.permanent


async def test_a_route_can_opt_out_and_static_routes_never_use_it(
    ca: TestCA, web: PolicyServer, dns_server: DnsServer
) -> None:
    s = sts(dns_server, web, ca)
    assert await router(tenants(mta_sts=False), s).destinations("bob@acme.test") == [
        Destination("mx.elsewhere.test", 25), Destination("localhost", 25),
    ]  # fmt: skip
    static = Tenants.from_mapping(
        {"tenants": {"acme": {"domains": ["acme.test"], "route": {"host": DOMAIN}}}}
    )
    assert await router(static, s).destinations("bob@acme.test") == [Destination(DOMAIN, 25)]
    assert web.requests == []


async def test_outside_domains_follow_their_own_policy(
    ca: TestCA, web: PolicyServer, dns_server: DnsServer
) -> None:
    """A DSN to an outside sender goes to that domain's MX, under that domain's policy."""
    s = sts(dns_server, web, ca)
    other = Tenants.from_mapping(
        {"tenants": {"x": {"domains": ["x.test"], "route": {"host": "127.0.0.1"}}}}
    )
    assert await router(other, s).destinations(f"alice@{DOMAIN}") == [
        Destination("localhost", 25, "verified", str(ca.ca_file), None, "enforce", DOMAIN)
    ]


# -- testing -----------------------------------------------------------------------------------


async def test_testing_mode_delivers_as_usual_and_reports(
    ca: TestCA, rogue_ca: TestCA, web: PolicyServer, dns_server: DnsServer, pool: Pool
) -> None:
    web.policy = policy_text(mode="testing")
    s = sts(dns_server, web, ca)
    before = findings("testing", "mx-mismatch"), findings("testing", "certificate-not-trusted")
    with (
        smtp_server(rogue_ca.server_context("localhost")) as (handler, port),
        structlog.testing.capture_logs() as logs,
    ):
        dests = await router(tenants(port=port), s).destinations("bob@acme.test")
        # Every MX host, in MX order, under the route's own TLS policy.
        assert [(d.host, d.tls, d.mta_sts) for d in dests] == [
            ("mx.elsewhere.test", "opportunistic", "testing"),
            ("localhost", "opportunistic", "testing"),
        ]
        res = await pool.send(dests[1], "a@sender.test", ["bob@acme.test"], MSG)
        await pool.aclose()  # QUIT while the server still runs
    assert [r.status for r in res] == ["delivered"]
    assert handler.tls_sessions == 1  # opportunistic STARTTLS, the untrusted certificate
    after = findings("testing", "mx-mismatch"), findings("testing", "certificate-not-trusted")
    assert after == (before[0] + 1, before[1] + 1)
    would = [e for e in logs if e["event"] == "mta-sts testing: enforce would refuse"]
    assert [(e["mx"], e["result"]) for e in would] == [
        ("mx.elsewhere.test", "mx-mismatch"),
        ("localhost", "certificate-not-trusted"),
    ]


async def test_testing_mode_with_a_valid_certificate_reports_nothing(
    ca: TestCA, web: PolicyServer, dns_server: DnsServer, pool: Pool
) -> None:
    web.policy = policy_text(mode="testing", mx=("localhost", "mx.elsewhere.test"))
    s = sts(dns_server, web, ca)
    with (
        smtp_server(ca.server_context("localhost")) as (handler, port),
        structlog.testing.capture_logs() as logs,
    ):
        dests = await router(tenants(port=port), s).destinations("bob@acme.test")
        res = await pool.send(dests[1], "a@sender.test", ["bob@acme.test"], MSG)
        await pool.aclose()  # QUIT while the server still runs
    assert [r.status for r in res] == ["delivered"] and handler.tls_sessions == 1
    assert [e for e in logs if "would refuse" in e["event"]] == []


# -- no policy: delivery as before --------------------------------------------------------


PLAIN = [Destination("mx.elsewhere.test", 25), Destination("localhost", 25)]


@pytest.mark.parametrize(
    "failure",
    ["no-txt", "bad-txt", "two-txt", "404", "redirect", "content-type", "too-large",
     "malformed", "mode-none", "server-down", "untrusted-https"],
)  # fmt: skip
async def test_without_a_usable_policy_delivery_is_as_before(
    ca: TestCA,
    rogue_ca: TestCA,
    web: PolicyServer,
    dns_server: DnsServer,
    failure: str,
) -> None:
    records = dns_server.records
    port = web.port
    if failure == "no-txt":
        del records[TXT_NAME + "."]
    elif failure == "bad-txt":
        records[TXT_NAME + "."] = {"TXT": ['"v=STSv1; id=has spaces"']}
    elif failure == "two-txt":
        records[TXT_NAME + "."] = {"TXT": ['"v=STSv1; id=1"', '"v=STSv1; id=2"']}
    elif failure == "404":
        web.status = 404
    elif failure == "redirect":
        web.status, web.location = 301, f"https://{POLICY_HOST}:{web.port}/elsewhere"
    elif failure == "content-type":
        web.content_type = "text/html"
    elif failure == "too-large":
        web.policy = policy_text() + "x-padding: " + "a" * 70_000 + "\n"
    elif failure == "malformed":
        web.policy = "version: STSv1\nmode: enforce\nmx: localhost\n"  # no max_age
    elif failure == "mode-none":
        web.policy = policy_text(mode="none")
    elif failure == "server-down":
        port = free_port()
    elif failure == "untrusted-https":
        untrusted = PolicyServer(rogue_ca.server_context(POLICY_HOST)).start()
        untrusted.policy = policy_text()
        port = untrusted.port
    s = MtaSts(make_resolver([dns_server.address], 5.0), port=port, ca_file=ca.ca_file, timeout=5)
    try:
        with structlog.testing.capture_logs() as logs:
            assert await router(tenants(), s).destinations("bob@acme.test") == PLAIN
    finally:
        if failure == "untrusted-https":
            untrusted.stop()
    fetched = failure not in ("no-txt", "bad-txt", "two-txt")
    assert s.fetches == int(fetched)
    if failure == "redirect":
        assert [path for path, _, _ in web.requests] == [WELL_KNOWN]  # not followed
    if failure == "untrusted-https":
        assert web.requests == [] and untrusted.requests == []  # refused in the handshake
    if fetched and failure != "mode-none":
        assert [e["event"] for e in logs if e["event"].startswith("mta-sts policy")] == [
            "mta-sts policy malformed" if failure == "malformed" else "mta-sts policy fetch failed"
        ]


# -- caching -----------------------------------------------------------------------------------


async def test_policy_is_cached_until_the_txt_id_changes_or_max_age(
    ca: TestCA, web: PolicyServer, dns_server: DnsServer
) -> None:
    clock = Clock()
    s = sts(dns_server, web, ca, clock=clock)
    first = await s.policy_for(DOMAIN)
    assert first == Policy("enforce", ("localhost",), 86400)
    web.policy = policy_text(mode="testing")  # published, but the id still says nothing changed
    assert await s.policy_for(DOMAIN) == first
    assert len(web.requests) == 1
    # A new id: fetched again.
    dns_server.records[TXT_NAME + "."] = txt("20261102")
    assert (await s.policy_for(DOMAIN)) == Policy("testing", ("localhost",), 86400)
    assert len(web.requests) == 2
    # The TXT record vanishes (a downgrade attempt): the cached policy holds until max_age ...
    del dns_server.records[TXT_NAME + "."]
    clock.now += 86399
    assert (await s.policy_for(DOMAIN)).mode == "testing"  # type: ignore[union-attr]
    # ... and not a second longer.
    clock.now += 1
    assert await s.policy_for(DOMAIN) is None
    # Expired with the record back: fetched again even though the id is the same.
    dns_server.records[TXT_NAME + "."] = txt("20261102")
    assert (await s.policy_for(DOMAIN)).mode == "testing"  # type: ignore[union-attr]
    assert len(web.requests) == 3


async def test_concurrent_deliveries_share_one_fetch(
    ca: TestCA, web: PolicyServer, dns_server: DnsServer
) -> None:
    s = sts(dns_server, web, ca)
    got = await asyncio.gather(*(s.policy_for(DOMAIN) for _ in range(8)))
    assert {p.mode for p in got if p is not None} == {"enforce"} and None not in got
    assert len(web.requests) == 1 and s.fetches == 1


async def test_failed_refresh_keeps_the_cached_policy_and_backs_off(
    ca: TestCA, web: PolicyServer, dns_server: DnsServer
) -> None:
    clock = Clock()
    s = sts(dns_server, web, ca, clock=clock, fetch_backoff=600)
    assert (await s.policy_for(DOMAIN)).mode == "enforce"  # type: ignore[union-attr]
    dns_server.records[TXT_NAME + "."] = txt("2")
    web.status = 500
    for _ in range(3):
        assert (await s.policy_for(DOMAIN)).mode == "enforce"  # type: ignore[union-attr]
    assert s.fetches == 2  # one failed refresh, then no more until the backoff ends
    web.status = 200
    web.policy = policy_text(mode="testing")
    clock.now += 600
    assert (await s.policy_for(DOMAIN)).mode == "testing"  # type: ignore[union-attr]
    assert s.fetches == 3


async def test_the_cache_survives_a_restart_in_rocksdict(
    ca: TestCA, web: PolicyServer, dns_server: DnsServer, tmp_path: Path
) -> None:
    clock = Clock()
    first = sts(dns_server, web, ca, clock=clock, cache_path=tmp_path / "mta-sts")
    try:
        assert (await first.policy_for(DOMAIN)).mode == "enforce"  # type: ignore[union-attr]
    finally:
        first.close()
    web.status = 500  # the policy host is unreachable after the restart
    second = sts(dns_server, web, ca, clock=clock, cache_path=tmp_path / "mta-sts")
    try:
        assert (await second.policy_for(DOMAIN)).mode == "enforce"  # type: ignore[union-attr]
        assert second.fetches == 0
        clock.now += 86400
        assert second.cached(DOMAIN) is None  # expired entries are dropped, also on disk
    finally:
        second.close()
    third = sts(dns_server, web, ca, clock=clock, cache_path=tmp_path / "mta-sts")
    try:
        assert third.cached(DOMAIN) is None
    finally:
        third.close()


def test_router_from_settings(tmp_path: Path) -> None:
    settings = DelivererSettings(
        state_path=tmp_path, dns_nameservers=("127.0.0.1:5353",), mta_sts_port=8443,
        mta_sts_ca_file=tmp_path / "ca.pem", mta_sts_timeout=3,
    )  # fmt: skip
    r = Router.from_settings(tenants(), settings)
    try:
        assert r.mta_sts is not None and r.mta_sts.resolver is r.resolver
        assert (r.mta_sts.port, r.mta_sts.ca_file, r.mta_sts.timeout) == (
            8443, str(tmp_path / "ca.pem"), 3.0,
        )  # fmt: skip
        assert r.resolver.servers == (("127.0.0.1", 5353),)
        assert (tmp_path / "mta-sts").is_dir()
    finally:
        r.close()
    off = Router.from_settings(tenants(), settings.model_copy(update={"mta_sts_enabled": False}))
    assert off.mta_sts is None


# -- grammar -----------------------------------------------------------------------------------


def test_policy_parser_accepts_the_rfc_example_and_extensions() -> None:
    text = (
        "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n"
        "mx: backupmx.example.com\r\nmax_age: 604800\r\nx-extension: anything goes here \r\n"
    )
    assert parse_policy(text.encode()) == Policy(
        "enforce", ("mail.example.com", "*.example.net", "backupmx.example.com"), 604800
    )
    # No final line break, LF only, a max_age above a year is clamped.
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 9999999999") == Policy(
        "none", (), MAX_AGE_LIMIT
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n",
        "version: STSv1\nmode: Enforce\nmx: a.test\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmax_age: 1\n",  # no mx
        "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -1\n",
        "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 12345678901\n",
        "version: STSv1\nmode: enforce\nmode: testing\nmx: a.test\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: a..test\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: *.*.test\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: mail.*.test\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: a_b.test\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\n\nmx: a.test\nmax_age: 1\n",  # blank line inside
        "version: STSv1\nmode: enforce\nmx a.test\nmax_age: 1\n",
        " version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 1\nx: a\x00b\n",
    ],
)
def test_policy_parser_refuses_malformed_policies(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(text)


def test_policy_parser_refuses_oversize_and_non_utf8() -> None:
    with pytest.raises(PolicyError, match="larger"):
        parse_policy(policy_text().encode() + b"x: " + b"a" * 70_000)
    with pytest.raises(PolicyError, match="UTF-8"):
        parse_policy(b"version: STSv1\nmode: enforce\nmx: \xff\nmax_age: 1\n")


def test_txt_record_parser() -> None:
    assert parse_txt("v=STSv1; id=20160831085700Z;") == "20160831085700Z"
    assert parse_txt("v=STSv1 ;id=abc ; ext=val") == "abc"
    for bad in ["v=STSv1", "v=STSv1;", "v=STSv2; id=1", "id=1; v=STSv1", "v=STSv1; id=",
                "v=STSv1; id=1; id=2", "v=STSv1; id=" + "a" * 33, "v=STSv1;; id=1",
                "v=STSv1; id=a-b", "v=STSv1; ext; id=1"]:  # fmt: skip
        with pytest.raises(PolicyError):
            parse_txt(bad)


def test_mx_patterns_match_one_label_for_a_wildcard() -> None:
    assert mx_matches("mail.example.com", "MAIL.example.com.")
    assert mx_matches("*.example.com", "mx1.example.com")
    assert not mx_matches("*.example.com", "example.com")
    assert not mx_matches("*.example.com", "a.mx1.example.com")
    assert not mx_matches("*.example.com", ".example.com")
    assert not mx_matches("mail.example.com", "mail.example.com.evil.test")


# -- fuzzing -----------------------------------------------------------------------------------

_names = st.sampled_from(["version", "mode", "mx", "max_age", "x-ext", "Version", "", "m x"])
_values = st.one_of(
    st.sampled_from(["STSv1", "enforce", "testing", "none", "86400", "*.a.test", "a.test", ""]),
    st.text(max_size=20),
)
_lines = st.lists(
    st.tuples(_names, st.sampled_from([":", ": ", ":\t", " : ", ""]), _values), max_size=8
).map(lambda ls: "\n".join(n + sep + v for n, sep, v in ls))


@given(st.one_of(st.text(), st.binary(), _lines))
def test_policy_parser_only_ever_raises_policy_error(data: str | bytes) -> None:
    try:
        policy = parse_policy(data)
    except PolicyError:
        return
    assert policy.mode in ("enforce", "testing", "none")
    assert 0 <= policy.max_age <= MAX_AGE_LIMIT
    assert policy.mode == "none" or policy.mx


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_host = st.lists(_label, min_size=1, max_size=4).map(".".join)


@given(
    st.sampled_from(["enforce", "testing"]),
    st.lists(st.tuples(st.booleans(), _host), min_size=1, max_size=4),
    st.integers(0, 10**10 - 1),
    st.sampled_from(["\n", "\r\n"]),
)
def test_valid_policies_round_trip(
    mode: str, mx: list[tuple[bool, str]], age: int, eol: str
) -> None:
    patterns = tuple(("*." if wild else "") + h for wild, h in mx)
    text = eol.join(["version: STSv1", f"mode: {mode}", *(f"mx: {p}" for p in patterns),
                     f"max_age: {age}"]) + eol  # fmt: skip
    policy = parse_policy(text)
    assert policy == Policy(mode, patterns, min(age, MAX_AGE_LIMIT))  # type: ignore[arg-type]
    for wild, h in mx:
        assert policy.matches(f"x.{h}" if wild else h.upper())


@given(st.text(max_size=60))
def test_txt_parser_only_ever_raises_policy_error(record: str) -> None:
    try:
        policy_id = parse_txt(record)
    except PolicyError:
        return
    assert policy_id.isalnum() and len(policy_id) <= 32
