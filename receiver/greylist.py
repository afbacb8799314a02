"""Greylisting (RFC 6647) at RCPT, with state every receiver shares through Kafka.

A real MTA retries a ``451``; most spam engines send once and move on. A tenant with
``greylisting.enabled`` (:class:`mxgate.tenants.Greylisting`) therefore refuses the first
attempt of each (client network, sender, recipient) triplet with ``451 4.7.1``, accepts a
retry that comes after ``delay`` and within ``retry_window``, and then lets the triplet, and
the client's network, through at once for a while.

The state is the compacted topic ``mxgate.greylist.v1`` (:data:`mxgate.catalog.GREYLIST`):
every receiver reads it whole before it listens (:class:`GreylistTable` fed by
:class:`mxgate.compacted.CompactedFollower`) and follows it, and writes an entry when a
triplet is first refused and when it passes. A retry that lands on another receiver, or on
one restarted since, is therefore recognised; within one receiver an entry counts from the
moment it is written, before the broker has it back.

Why by hand: greylisting daemons (postgrey, sqlgrey) keep their state in a local database of
one host; a gateway whose receivers share nothing else but Kafka needs it on the bus, and the
rule itself is a few comparisons.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import threading
from collections.abc import Awaitable, Callable

import structlog

import schemas
from mxgate.tenants import Greylisting, Tenant
from mxgate.timeutil import utcnow
from receiver import replies
from receiver.checks import CheckResult, accept, refuse

__all__ = ["Greylist", "GreylistTable", "client_network", "entry_key"]

log = structlog.get_logger("mxgate.receiver")

Publish = Callable[[schemas.GreylistEntry], Awaitable[None]]
"""Writes one entry to the shared topic (awaits the broker's acknowledgement)."""

CHECK = "greylist"


def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address (an IPv4-mapped IPv6 one as IPv4); None when it is none."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def client_network(ip: str, rules: Greylisting) -> str | None:
    """The network ``ip`` counts as (its /24 or /64 by default); None when it is no address."""
    addr = _address(ip)
    if addr is None:
        return None
    prefix = rules.ipv4_prefix if addr.version == 4 else rules.ipv6_prefix
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def entry_key(tenant: str, network: str, sender: str = "", recipient: str = "") -> str:
    """The record key of a triplet, or of a network entry (sender and recipient empty)."""
    raw = "\0".join((tenant, network, sender.lower(), recipient.lower()))
    return hashlib.sha256(raw.encode("utf-8", "surrogateescape")).hexdigest()


class GreylistTable:
    """Entries by key, as the topic holds them; safe to use from the follower thread."""

    def __init__(self) -> None:
        self._entries: dict[str, schemas.GreylistEntry] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, key: str, now: dt.datetime) -> schemas.GreylistEntry | None:
        """The entry in force for ``key``: None when there is none or it expired."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry.expires_at <= now:
            return None
        return entry

    def put(self, entry: schemas.GreylistEntry) -> None:
        """Keep ``entry`` unless a later state of its key is already held (a pass is never
        undone by an older first sighting arriving late from another receiver)."""
        with self._lock:
            held = self._entries.get(entry.key)
            # A held entry that had expired when this one began is over, whatever it was.
            if held is None or held.expires_at <= entry.first_seen or _rank(entry) >= _rank(held):
                self._entries[entry.key] = entry

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Fold one topic record in (:data:`mxgate.compacted.Apply`); a tombstone removes its
        key, an undecodable record is logged and skipped."""
        if value is None:
            with self._lock:
                self._entries.pop((key or b"").decode("ascii", "replace"), None)
            return
        try:
            event = schemas.decode_event(value)
        except schemas.SchemaError as e:
            log.warning("greylist record skipped", error=str(e))
            return
        if isinstance(event, schemas.GreylistEntry):
            self.put(event)


def _rank(e: schemas.GreylistEntry) -> tuple[bool, dt.datetime, dt.datetime]:
    # A pass outranks a wait; then the later expiry (a renewal), then the later first sighting.
    return (e.passed_at is not None, e.expires_at, e.first_seen)


class Greylist:
    """The RCPT check of tenants that greylist. ``publish`` writes an entry to the topic."""

    def __init__(
        self,
        table: GreylistTable,
        publish: Publish,
        instance: str = "",
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.table = table
        self._publish = publish
        self._instance = instance
        self._clock = clock

    async def check(self, tenant: Tenant, ip: str, sender: str, recipient: str) -> CheckResult:
        """Accept, or refuse with 451 4.7.1, one recipient of a transaction from ``ip``.

        The result's reason says which rule answered (a metric label): ``allowed``,
        ``network``, ``passed`` (known triplet), ``retried`` (the retry that passes),
        ``new`` and ``early`` (refusals), ``no_address`` (no client IP to key on).
        """
        rules = tenant.greylisting
        network = client_network(ip, rules)
        if network is None:
            return accept(CHECK, "no_address")
        if _allowed(rules, ip, recipient):
            return accept(CHECK, "allowed")
        now = self._clock()
        if self.table.get(entry_key(tenant.name, network), now) is not None:
            return accept(CHECK, "network")
        key = entry_key(tenant.name, network, sender, recipient)
        entry = self.table.get(key, now)
        if entry is not None and entry.passed_at is not None:
            renew_after = dt.timedelta(seconds=min(86400.0, rules.pass_lifetime / 10))
            if entry.expires_at - now < dt.timedelta(seconds=rules.pass_lifetime) - renew_after:
                # In use: keep it alive, at most one write a day per triplet.
                await self._write(
                    _passed(entry, now, rules.pass_lifetime, self._instance), refusing=False
                )
            return accept(CHECK, "passed")
        if entry is None:
            await self._write(
                schemas.GreylistEntry(
                    key=key,
                    tenant=tenant.name,
                    network=network,
                    sender=sender.lower(),
                    recipient=recipient.lower(),
                    first_seen=now,
                    expires_at=now + dt.timedelta(seconds=rules.retry_window),
                    written_by=self._instance,
                ),
                refusing=True,
            )
            return refuse(CHECK, "new", replies.greylisted(rules.delay))
        waited = (now - entry.first_seen).total_seconds()
        if waited < rules.delay:
            return refuse(CHECK, "early", replies.greylisted(rules.delay - waited))
        await self._write(_passed(entry, now, rules.pass_lifetime, self._instance), refusing=False)
        if rules.network_lifetime > 0:
            await self._write(
                schemas.GreylistEntry(
                    key=entry_key(tenant.name, network),
                    tenant=tenant.name,
                    network=network,
                    first_seen=now,
                    passed_at=now,
                    expires_at=now + dt.timedelta(seconds=rules.network_lifetime),
                    written_by=self._instance,
                ),
                refusing=False,
            )
        return accept(CHECK, "retried")

    async def _write(self, entry: schemas.GreylistEntry, refusing: bool) -> None:
        # Held at once, so this receiver knows it before the broker echoes it back.
        self.table.put(entry)
        try:
            await self._publish(entry)
        except Exception as e:
            # Not shared: another receiver will greylist this triplet again (one more retry
            # for the sender), which is all a lost write costs. The answer stays as decided.
            log.warning(
                "greylist entry not written",
                error=str(e),
                tenant=entry.tenant,
                refusing=refusing,
            )


def _passed(
    entry: schemas.GreylistEntry, now: dt.datetime, lifetime: float, instance: str
) -> schemas.GreylistEntry:
    return schemas.GreylistEntry(
        key=entry.key,
        tenant=entry.tenant,
        network=entry.network,
        sender=entry.sender,
        recipient=entry.recipient,
        first_seen=entry.first_seen,
        passed_at=entry.passed_at or now,
        expires_at=now + dt.timedelta(seconds=lifetime),
        written_by=instance,
    )


def _allowed(rules: Greylisting, ip: str, recipient: str) -> bool:
    addr = _address(ip)
    if addr is None:
        return False
    if any(addr.version == n.version and addr in n for n in rules.allow_networks):
        return True
    rcpt = recipient.lower()
    domain = "@" + rcpt.rpartition("@")[2]
    return rcpt in rules.allow_recipients or domain in rules.allow_recipients
