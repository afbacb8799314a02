"""Greylisting's rule (RFC 6647) on a table of its own: new triplets wait, retries after the
delay pass, passes and networks are remembered, allow lists skip it, and the table folds the
topic's records as every receiver would."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

import schemas
from mxgate.errors import ConfigError
from mxgate.tenants import Greylisting, Tenant, Tenants
from receiver.greylist import Greylist, GreylistTable, client_network, entry_key

T0 = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def _tenant(**rules: object) -> Tenant:
    return Tenant(
        name="acme",
        domains=("acme.test",),
        route={"host": "127.0.0.1", "port": 25},  # type: ignore[arg-type]
        greylisting=Greylisting(enabled=True, **rules),  # type: ignore[arg-type]
    )


def _greylist(
    clock: Clock, table: GreylistTable | None = None
) -> tuple[Greylist, list[schemas.GreylistEntry]]:
    written: list[schemas.GreylistEntry] = []

    async def publish(entry: schemas.GreylistEntry) -> None:
        written.append(entry)

    return Greylist(table or GreylistTable(), publish, "r1", clock), written


async def test_a_new_triplet_waits_the_delay_then_passes_and_is_remembered() -> None:
    clock, tenant = Clock(), _tenant(delay=300, retry_window=3600)
    g, written = _greylist(clock)
    first = await g.check(tenant, "192.0.2.10", "a@sender.test", "bob@acme.test")
    assert (first.verdict, first.reason) == ("tempfail", "new")
    assert first.reply == "451 4.7.1 Greylisted, please try again in 300 seconds"
    assert [e.passed_at for e in written] == [None]
    clock.advance(120)
    early = await g.check(tenant, "192.0.2.10", "A@Sender.test", "Bob@acme.test")
    assert (early.verdict, early.reason) == ("tempfail", "early")
    assert "in 180 seconds" in early.reply
    assert len(written) == 1  # waiting retries write nothing
    clock.advance(181)
    passed = await g.check(tenant, "192.0.2.10", "a@sender.test", "bob@acme.test")
    assert (passed.verdict, passed.reason) == ("accept", "retried")
    assert written[1].key == written[0].key and written[1].passed_at == clock.now
    assert written[2].key == entry_key("acme", "192.0.2.0/24")  # the network is allowed too
    again = await g.check(tenant, "192.0.2.10", "a@sender.test", "bob@acme.test")
    assert again.accepted and again.reason == "network"


async def test_the_retry_may_come_from_another_host_of_the_same_network() -> None:
    clock, tenant = Clock(), _tenant(delay=60, network_lifetime=0)
    g, _ = _greylist(clock)
    assert not (await g.check(tenant, "198.51.100.7", "a@s.test", "bob@acme.test")).accepted
    clock.advance(61)
    assert (await g.check(tenant, "198.51.100.200", "a@s.test", "bob@acme.test")).accepted
    # Without network allowing, another sender from there still waits; a pass is kept.
    other = await g.check(tenant, "198.51.100.7", "c@s.test", "bob@acme.test")
    assert other.reason == "new"
    known = await g.check(tenant, "198.51.100.7", "a@s.test", "bob@acme.test")
    assert known.reason == "passed"
    # Another network is another triplet.
    assert (await g.check(tenant, "203.0.113.7", "a@s.test", "bob@acme.test")).reason == "new"


async def test_ipv6_clients_count_by_their_64() -> None:
    clock, tenant = Clock(), _tenant(delay=10)
    g, written = _greylist(clock)
    await g.check(tenant, "2001:db8:1:2::25", "a@s.test", "bob@acme.test")
    assert written[0].network == "2001:db8:1:2::/64"
    clock.advance(11)
    assert (await g.check(tenant, "2001:db8:1:2::99", "a@s.test", "bob@acme.test")).accepted
    assert client_network("::ffff:192.0.2.1", tenant.greylisting) == "192.0.2.0/24"
    assert client_network("not an ip", tenant.greylisting) is None


async def test_a_retry_after_the_window_starts_again() -> None:
    clock, tenant = Clock(), _tenant(delay=60, retry_window=600)
    g, _ = _greylist(clock)
    await g.check(tenant, "192.0.2.1", "a@s.test", "bob@acme.test")
    clock.advance(601)
    late = await g.check(tenant, "192.0.2.1", "a@s.test", "bob@acme.test")
    assert late.reason == "new"  # the old sighting expired: the delay counts from now
    clock.advance(30)
    assert (await g.check(tenant, "192.0.2.1", "a@s.test", "bob@acme.test")).reason == "early"


async def test_a_pass_expires_and_is_renewed_by_use() -> None:
    clock, tenant = Clock(), _tenant(delay=1, pass_lifetime=1000, network_lifetime=0)
    g, written = _greylist(clock)
    await g.check(tenant, "192.0.2.1", "a@s.test", "bob@acme.test")
    clock.advance(2)
    await g.check(tenant, "192.0.2.1", "a@s.test", "bob@acme.test")
    clock.advance(500)  # used half-way through its life: renewed
    assert (await g.check(tenant, "192.0.2.1", "a@s.test", "bob@acme.test")).reason == "passed"
    assert written[-1].expires_at == clock.now + dt.timedelta(seconds=1000)
    clock.advance(999)
    assert (await g.check(tenant, "192.0.2.1", "a@s.test", "bob@acme.test")).reason == "passed"
    clock.advance(1001)
    assert (await g.check(tenant, "192.0.2.1", "a@s.test", "bob@acme.test")).reason == "new"


async def test_allow_lists_are_never_greylisted_and_write_nothing() -> None:
    clock = Clock()
    tenant = _tenant(
        allow_networks=["192.0.2.0/28", "2001:db8::/32"],
        allow_recipients=["postmaster@acme.test", "@vip.acme.test"],
    )
    g, written = _greylist(clock)
    for ip, rcpt in [
        ("192.0.2.5", "bob@acme.test"),
        ("::ffff:192.0.2.5", "bob@acme.test"),
        ("2001:db8::1", "bob@acme.test"),
        ("203.0.113.1", "PostMaster@acme.test"),
        ("203.0.113.1", "ceo@vip.acme.test"),
    ]:
        result = await g.check(tenant, ip, "a@s.test", rcpt)
        assert (result.accepted, result.reason) == (True, "allowed"), (ip, rcpt)
    assert written == []
    assert (await g.check(tenant, "192.0.2.16", "a@s.test", "bob@acme.test")).reason == "new"


async def test_a_lost_write_keeps_the_answer_and_the_local_entry() -> None:
    clock, tenant = Clock(), _tenant(delay=5)

    async def broken(_entry: schemas.GreylistEntry) -> None:
        raise RuntimeError("broker gone")

    g = Greylist(GreylistTable(), broken, "r1", clock)
    assert (await g.check(tenant, "192.0.2.1", "a@s.test", "bob@acme.test")).reason == "new"
    clock.advance(6)
    assert (await g.check(tenant, "192.0.2.1", "a@s.test", "bob@acme.test")).accepted


async def test_the_table_folds_records_as_a_second_receiver_sees_them() -> None:
    clock, tenant = Clock(), _tenant(delay=60)
    a, written = _greylist(clock)
    await a.check(tenant, "192.0.2.1", "a@s.test", "bob@acme.test")
    other = GreylistTable()
    for e in written:
        other.apply(e.key.encode(), schemas.encode_event(e))
    b, _ = _greylist(clock, other)
    assert (await b.check(tenant, "192.0.2.1", "a@s.test", "bob@acme.test")).reason == "early"
    clock.advance(61)
    assert (await b.check(tenant, "192.0.2.1", "a@s.test", "bob@acme.test")).reason == "retried"
    # A late echo of the first sighting never undoes the pass; a tombstone removes it.
    other.apply(written[0].key.encode(), schemas.encode_event(written[0]))
    assert other.get(written[0].key, clock.now).passed_at is not None  # type: ignore[union-attr]
    other.apply(written[0].key.encode(), None)
    assert other.get(written[0].key, clock.now) is None
    other.apply(b"k", b"not an event")  # skipped, never fatal
    other.apply(b"k", schemas.encode_event(_other_event()))


def _other_event() -> schemas.ReputationListed:
    return schemas.ReputationListed(sha256="0" * 64, listed=True, listed_at=T0)


def test_the_tenants_file_names_a_bad_greylisting_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "tenants.toml"
    path.write_text(
        '[tenants.acme]\ndomains = ["acme.test"]\nroute = { host = "127.0.0.1", port = 25 }\n'
        "[tenants.acme.greylisting]\nenabled = true\ndelay = 600\nretry_window = 300\n"
    )
    with pytest.raises(ConfigError) as e:
        Tenants.load(path)
    assert "greylisting" in str(e.value) and "retry_window" in str(e.value)
    path.write_text(
        '[tenants.acme]\ndomains = ["acme.test"]\nroute = { host = "127.0.0.1", port = 25 }\n'
        '[tenants.acme.greylisting]\nenabled = true\nallow_networks = ["300.1.2.0/24"]\n'
    )
    with pytest.raises(ConfigError) as e:
        Tenants.load(path)
    assert "allow_networks" in str(e.value)


@given(ip=st.text(max_size=60), sender=st.text(max_size=80), rcpt=st.text(max_size=80))
async def test_any_client_text_gets_an_answer(ip: str, sender: str, rcpt: str) -> None:
    clock, tenant = Clock(), _tenant()
    g, _ = _greylist(clock)
    result = await g.check(tenant, ip, sender, rcpt)
    assert result.verdict in {"accept", "tempfail"}
