"""The deliverer service: carries out decisions and records every attempt (rules 1 and 6).

It consumes the scanned topic, the retry tiers and the submit topic (DSNs and quarantine
releases the gateway sends itself). Deliver and tag decisions go to each recipient's route
(static hops with failover, or MX) with trace headers prepended; quarantine and discard
decisions are recorded. Deferred recipients move to the next retry tier in the same Kafka
transaction that commits the input, so retry state lives in Kafka, never only in memory.
Bounced and expired recipients of mail that may be bounced get one DSN, itself a work item on
the submit topic, written in that same transaction.

A batch waits at most ``batch_deadline`` for its attempts. An attempt still running then (a
stalled server) is recorded as deferred and goes on in the background; its recipients stay
"in flight" so a retry never sends them again while it runs, and a 250 it gets later is in the
dedupe record, which the retry finds. So one stalled customer server holds neither the
batch's other tenants nor the next batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Sequence

import structlog
from confluent_kafka import KafkaException
from prometheus_client import Counter

import schemas
from deliverer import smtp
from deliverer.authres import AUTH_METHODS, arc_seal, authentication_results
from deliverer.dedupe import DeliveredLog, rebuild_from_topic
from deliverer.dsn import bounce_allowed, build_dsn, sender_authentication, wants_dsn
from deliverer.headers import drop_forged_headers, tag_subject, trace_headers
from deliverer.pool import Pool
from deliverer.routes import Destination, RouteError, Router
from deliverer.text import safe_address
from mxgate import catalog
from mxgate.blobstore import BlobCorrupt, BlobMissing, BlobStore, open_store
from mxgate.ids import new_message_id
from mxgate.kafka import Hold, Incoming, Output, TransactionalLoop
from mxgate.metrics import serve_metrics
from mxgate.process import run_until_signalled
from mxgate.settings import DelivererSettings, Settings
from mxgate.tenants import Tenants
from mxgate.timeutil import utcnow
from schemas import DeliveryRetry, WorkKind

log = structlog.get_logger("mxgate.deliverer")

DSN_WITHHELD = Counter(
    "mxgate_deliverer_dsn_withheld",
    "Bounces not reported to the sender: recipient unverified at RCPT, sender unauthenticated.",
    ["tenant"],
)

DELIVERABLE = frozenset({"deliver", "tag"})
# Mail the gateway writes itself; the only mail that may go to domains no tenant owns.
OUTBOUND = frozenset({WorkKind.DSN, WorkKind.DIGEST})


def first_attempt(
    scanned: schemas.MessageScanned, now: dt.datetime, authserv_id: str = ""
) -> DeliveryRetry:
    """The work item of the first attempt for a deliver or tag decision. Its
    Authentication-Results header is computed here, once, from the verdicts (retries carry
    it along); none when ``authserv_id`` is empty or no auth engine ran. How the sender was
    authenticated (for the DSN rule, :func:`deliverer.dsn.bounce_allowed`) is noted too."""
    ran_auth = any(v.engine in AUTH_METHODS for v in scanned.verdicts)
    auth = (
        authentication_results(authserv_id, scanned.verdicts, scanned.mail_from).decode("ascii")
        if authserv_id and ran_auth
        else ""
    )
    sender_auth = sender_authentication(scanned.verdicts, scanned.mail_from)
    return DeliveryRetry.for_decision(scanned, now, auth_results=auth, sender_auth=sender_auth)


def work_bytes(i: Incoming, unknown: int) -> int:
    """Bytes an input record's handling holds (its body), for the batch byte budget: the
    size a deliver or tag decision or a work item carries; ``unknown`` for an item that does
    not say (written before DeliveryRetry v5); nothing for a decision that only records."""
    ev = i.event
    if isinstance(ev, schemas.MessageScanned):
        return ev.size if ev.action in DELIVERABLE else 0
    if isinstance(ev, DeliveryRetry):
        return unknown if ev.size is None else ev.size
    return 0


def retry_tier_for(attempt: int, schedule: Sequence[float]) -> int:
    """Tier index after failed attempt number ``attempt`` (1-based); the last tier repeats."""
    return min(attempt - 1, len(schedule) - 1)


class Deliverer:
    """Turns decisions and retry items into SMTP transactions and events."""

    def __init__(
        self,
        settings: DelivererSettings,
        tenants: Tenants,
        store: BlobStore,
        delivered: DeliveredLog,
        topic_prefix: str = "",
        router: Router | None = None,
        pool: Pool | None = None,
        authserv_id: str = "",
    ) -> None:
        """``authserv_id``: our name in Authentication-Results (the scanner's auth setting);
        empty: no Authentication-Results header is added."""
        self.settings = settings
        self.authserv_id = authserv_id
        self._arc_key = settings.arc_key_file.read_bytes() if settings.arc_key_file else None
        self.tenants = tenants
        self.store = store
        self.delivered = delivered
        self.prefix = topic_prefix
        self.delivery_topic = catalog.name(catalog.DELIVERY, topic_prefix)
        self.quarantine_topic = catalog.name(catalog.QUARANTINE, topic_prefix)
        self.submit_topic = catalog.name(catalog.SUBMIT, topic_prefix)
        self.tier_topics = [
            catalog.name(catalog.retry_tier(i), topic_prefix)
            for i in range(len(settings.retry_schedule))
        ]
        self.router = router or Router.from_settings(tenants, settings)
        self.pool = pool or Pool(settings)
        # (message, recipient) pairs whose attempt outlived its batch and still runs.
        self._inflight: set[tuple[str, str]] = set()
        self._background: set[asyncio.Task[list[Output]]] = set()

    def input_topics(self) -> list[str]:
        """The scanned topic, the submit topic and every retry tier."""
        return [catalog.name(catalog.SCANNED, self.prefix), self.submit_topic, *self.tier_topics]

    def hold(self, i: Incoming) -> Hold | None:
        """Work items wait in their tier until due."""
        if not isinstance(i.event, DeliveryRetry):
            return None
        wait = (i.event.due_at - utcnow()).total_seconds()
        return Hold(wait) if wait > 0 else None

    async def handle(self, batch: Sequence[Incoming]) -> list[Output]:
        """Carry out a batch concurrently; returns the events to commit with it."""
        now = utcnow()
        works: list[DeliveryRetry] = []
        outputs: list[Output] = []
        await self.pool.prune()
        for i in batch:
            ev = i.event
            if isinstance(ev, schemas.MessageScanned):
                if ev.action in DELIVERABLE:
                    works.append(first_attempt(ev, now, self.authserv_id))
                else:
                    outputs.append(self.quarantined(ev, now))
            elif isinstance(ev, DeliveryRetry):
                works.append(ev)
        if not works:
            return outputs
        # Items of one batch that share a (message, recipient) run one after the other, so the
        # later one finds the earlier one's 250 in the dedupe record: two releases of one
        # message read in one batch still give one copy. Across batches the record and the
        # in-flight set do that.
        locks: dict[tuple[str, str], asyncio.Lock] = {}

        async def in_turn(w: DeliveryRetry) -> list[Output]:
            keys = sorted({(w.message_id, r.lower()) for r in w.rcpt_to})
            async with contextlib.AsyncExitStack() as held:
                for k in keys:  # sorted: two items never wait on each other in a cycle
                    await held.enter_async_context(locks.setdefault(k, asyncio.Lock()))
                return await self.attempt(w)

        tasks = [asyncio.ensure_future(in_turn(w)) for w in works]
        await asyncio.wait(tasks, timeout=self.settings.batch_deadline)
        for w, t in zip(works, tasks, strict=True):
            if t.done():
                outputs.extend(t.result())  # an attempt's exception aborts the batch
            else:
                outputs.extend(self._outlived(w, t))
        return outputs

    def _outlived(self, w: DeliveryRetry, task: asyncio.Task[list[Output]]) -> list[Output]:
        """Record an attempt that outlived its batch as deferred; let it finish in the
        background with its recipients marked in flight."""
        keys = {(w.message_id, r.lower()) for r in w.rcpt_to}
        self._inflight |= keys
        self._background.add(task)

        def finished(t: asyncio.Task[list[Output]]) -> None:
            self._inflight.difference_update(keys)
            self._background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("background attempt failed", message_id=w.message_id,
                          error=repr(t.exception()))  # fmt: skip

        task.add_done_callback(finished)
        reply = f"attempt still running after {self.settings.batch_deadline:g}s"
        results = [smtp.RecipientResult(r, "deferred", 0, reply) for r in w.rcpt_to]
        return self._record(w, "-", results)[0]

    def quarantined(self, r: schemas.MessageScanned, now: dt.datetime) -> Output:
        """Record a held-back (or discarded) message; nothing is delivered."""
        log.info("quarantined", message_id=r.message_id, action=r.action)
        event = schemas.MessageQuarantined(
            message_id=r.message_id,
            tenant=r.tenant,
            quarantined_at=now,
            action=r.action,
            reasons=r.reasons,
            mail_from=r.mail_from,
            rcpt_to=r.rcpt_to,
            object_key=r.object_key,
            size=r.size,
        )
        return Output(self.quarantine_topic, r.message_id, event)

    async def attempt(self, w: DeliveryRetry) -> list[Output]:
        """One attempt for the recipients in ``w``: SMTP, dedupe record, events, retries."""
        results: list[smtp.RecipientResult] = []
        todo: list[str] = []
        for r in w.rcpt_to:
            if self.delivered.delivered(w.message_id, r):
                reply = "accepted before (dedupe record)"
                results.append(smtp.RecipientResult(r, "delivered", 250, reply))
            elif (w.message_id, r.lower()) in self._inflight:
                reply = "an earlier attempt is still running"
                results.append(smtp.RecipientResult(r, "deferred", 0, reply))
            else:
                todo.append(r)
        remotes: list[str] = []
        if todo:
            try:
                raw = await self.store.get(w.object_key)
            except (BlobMissing, BlobCorrupt) as e:
                results += [
                    smtp.RecipientResult(r, "bounced", 0, f"body unreadable: {e}") for r in todo
                ]
            else:
                groups, failed = await self._route(todo, outbound=w.kind in OUTBOUND)
                results += failed
                sent = await asyncio.gather(
                    *(self._send_group(w, dests, rcpts, raw) for dests, rcpts in groups)
                )
                for remote, rs in sent:
                    remotes.append(remote)
                    results += rs
        order = {r: i for i, r in enumerate(w.rcpt_to)}
        results.sort(key=lambda r: order.get(r.recipient, 0))
        outputs, final = self._record(w, ",".join(remotes) or "-", results)
        outputs += await self._dsn(w, ",".join(remotes), final)
        return outputs

    async def _route(
        self, rcpts: Sequence[str], *, outbound: bool
    ) -> tuple[list[tuple[list[Destination], list[str]]], list[smtp.RecipientResult]]:
        """Group recipients by the destinations they go to; unroutable ones become results.

        Only mail the gateway writes itself (``outbound``: DSNs, digests) may leave for a
        domain no tenant owns; inbound mail for a domain whose tenant was removed waits
        (deferred) instead of looking up the domain's MX, which is this gateway: a loop.
        """
        groups: dict[tuple[str, ...], tuple[list[Destination], list[str]]] = {}
        failed: list[smtp.RecipientResult] = []
        for r in rcpts:
            if not outbound and self.router.route_for(r) is None:
                reply = "no route: no tenant owns this domain"
                failed.append(smtp.RecipientResult(r, "deferred", 0, reply))
                continue
            try:
                dests = await self.router.destinations(r)
            except RouteError as e:
                status: smtp.Status = "bounced" if e.permanent else "deferred"
                failed.append(smtp.RecipientResult(r, status, 0, f"no route: {e}"))
                continue
            if not dests:
                failed.append(smtp.RecipientResult(r, "deferred", 0, "no route: no destination"))
                continue
            key = tuple(d.key for d in dests)
            groups.setdefault(key, (dests, []))[1].append(r)
        return list(groups.values()), failed

    async def _send_group(
        self, w: DeliveryRetry, dests: Sequence[Destination], rcpts: list[str], raw: bytes
    ) -> tuple[str, list[smtp.RecipientResult]]:
        """Send to the first destination that takes a session (failover in route order)."""
        s = self.settings
        # Sender-written headers in our name go before ours are added (our hostname counts as
        # an authserv-id too: filters may trust either).
        body = drop_forged_headers(raw, self.authserv_id, s.hostname)
        tenant = self.tenants.by_name(w.tenant)
        # The tenant's own tag wins; the deliverer's setting is the default for all.
        subject_tag = (tenant.policy.subject_tag if tenant else "") or s.subject_tag
        if w.kind is WorkKind.DECISION and w.action == "tag" and subject_tag:
            body = tag_subject(body, subject_tag)
        data = (
            trace_headers(
                message_id=w.message_id,
                action=w.action,
                reasons=w.reasons,
                spam_score=w.spam_score,
                helo=w.helo,
                client_ip=w.client_ip,
                hostname=s.hostname,
                recipients=rcpts,
                received_at=w.received_at,
            )
            + body
        )
        authres = w.auth_results.encode("ascii")
        if self._arc_key and s.arc_domain and authres:
            data = authres + data
            data = arc_seal(
                data[len(authres) :], authres, selector=s.arc_selector, domain=s.arc_domain,
                private_key=self._arc_key, authserv_id=self.authserv_id,
            ) + data  # fmt: skip
        else:
            data = authres + data
        errors = []
        doubt = {r for r in rcpts if self.delivered.in_doubt(w.message_id, r)}

        def intend(accepted: list[str]) -> None:
            self.delivered.intend(w.message_id, accepted)

        for dest in dests:
            try:
                sent = await self.pool.send(dest, w.mail_from, rcpts, data, intend)
            except smtp.ConnectFailed as e:
                errors.append(str(e))
                log.warning("destination failed, trying next", message_id=w.message_id,
                            destination=str(dest), error=str(e))  # fmt: skip
                continue
            except Exception as e:
                # A bug or a message the client library refuses must not stop the partition
                # (the batch would abort and re-run forever): defer it, retries and expiry
                # (with its DSN) deal with it, and the log says why.
                log.exception("attempt failed", message_id=w.message_id, destination=str(dest))
                reply = f"internal error: {type(e).__name__}: {e}"[:900]
                return str(dest), [smtp.RecipientResult(r, "deferred", 0, reply) for r in rcpts]
            for r in sent:
                if r.status == "delivered":
                    self.delivered.mark(w.message_id, r.recipient, f"{r.code} {r.reply}")
            # A reply was read (code 0: the connection died after DATA; still unknown).
            self.delivered.settle(w.message_id, [r.recipient for r in sent if r.code])
            sent = [
                smtp.RecipientResult(
                    r.recipient, r.status, r.code,
                    f"{r.reply} [in doubt: an earlier attempt died awaiting the reply to DATA]",
                )
                if r.recipient in doubt
                else r
                for r in sent
            ]  # fmt: skip
            return str(dest), sent
        reply = "; ".join(errors)[:900]
        return (
            str(dests[-1]),
            [smtp.RecipientResult(r, "deferred", 0, reply) for r in rcpts],
        )

    async def _dsn(
        self, w: DeliveryRetry, remote: str, results: Sequence[smtp.RecipientResult]
    ) -> list[Output]:
        """The DSN work item for this attempt's failed recipients, if any is due."""
        failed = [r for r in results if r.status in ("bounced", "expired")]
        wanted = wants_dsn(w.kind, w.action, w.mail_from)
        if not failed or not self.settings.dsn_enabled or not wanted:
            return []
        tenant = self.tenants.by_name(w.tenant)
        withheld = [r for r in failed if not bounce_allowed(w.sender_auth, tenant, r.recipient)]
        if withheld:
            # Neither verified at RCPT time nor from an authenticated sender: the sender is
            # likely forged, and a DSN to it would be backscatter. The failure itself is in the
            # DeliveryAttempted event; the withheld bounce is logged and counted.
            DSN_WITHHELD.labels(w.tenant).inc(len(withheld))
            log.warning("dsn withheld: recipient unverified and sender unauthenticated",
                        message_id=w.message_id, recipients=[r.recipient for r in withheld],
                        mail_from=safe_address(w.mail_from))  # fmt: skip
            failed = [r for r in failed if r not in withheld]
            if not failed:
                return []
        try:
            original = await self.store.get(w.object_key)
        except (BlobMissing, BlobCorrupt):
            original = b""
        now = utcnow()
        sender = safe_address(w.mail_from.strip().strip("<>"))
        try:
            dsn = build_dsn(
                hostname=self.settings.hostname,
                message_id=w.message_id,
                mail_from=sender,
                failed=failed,
                remote=remote,
                original=original,
                arrival=w.received_at,
                now=now,
            )
        except Exception:
            # Raising here would abort the batch and re-run it forever, delivering the other
            # recipients again; the bounce itself is in the DeliveryAttempted event already.
            log.exception("dsn not built", message_id=w.message_id,
                          failed=[r.recipient for r in failed])  # fmt: skip
            return []
        ref = await self.store.put(dsn)
        dsn_id = new_message_id()
        item = DeliveryRetry.first(
            WorkKind.DSN,
            message_id=dsn_id,
            tenant=w.tenant,
            reasons=[f"dsn-for:{w.message_id}"],
            mail_from="",  # the null sender: a DSN never causes another
            rcpt_to=[sender],
            object_key=ref.key,
            received_at=now,
            now=now,
            helo=self.settings.hostname,
            size=len(dsn),
        )
        log.info("dsn queued", message_id=w.message_id, dsn_id=dsn_id, to=sender,
                 failed=[r.recipient for r in failed])  # fmt: skip
        return [Output(self.submit_topic, dsn_id, item)]

    def _record(
        self, w: DeliveryRetry, remote: str, results: list[smtp.RecipientResult]
    ) -> tuple[list[Output], list[smtp.RecipientResult]]:
        """The DeliveryAttempted event and retry item for an attempt, and the final results
        (deferrals past ``expire_after`` become expired)."""
        s = self.settings
        now = utcnow()
        deferred = [r.recipient for r in results if r.status == "deferred"]
        outputs: list[Output] = []
        next_at: dt.datetime | None = None
        if deferred:
            tier = retry_tier_for(w.attempt, s.retry_schedule)
            due = now + dt.timedelta(seconds=s.retry_schedule[tier])
            if (due - w.first_attempt_at).total_seconds() > s.expire_after:
                results = [
                    smtp.RecipientResult(r.recipient, "expired", r.code, r.reply)
                    if r.status == "deferred"
                    else r
                    for r in results
                ]
            else:
                next_at = due
                outputs.append(
                    Output(self.tier_topics[tier], w.message_id, w.next_attempt(deferred, due))
                )
        event = schemas.DeliveryAttempted(
            message_id=w.message_id,
            tenant=w.tenant,
            attempted_at=now,
            attempt=w.attempt,
            remote_host=remote,
            action=w.action,  # deliver | tag, or the kind of the gateway's own mail
            recipients=tuple(
                schemas.RecipientOutcome(
                    recipient=r.recipient, status=r.status, reply_code=r.code, reply=r.reply
                )
                for r in results
            ),
            next_attempt_at=next_at,
        )
        log.info(
            "delivery attempted",
            message_id=w.message_id,
            attempt=w.attempt,
            remote=remote,
            outcomes={r.recipient: f"{r.status} {r.code}" for r in results},
        )
        outputs.insert(0, Output(self.delivery_topic, w.message_id, event))
        return outputs, results

    async def aclose(self) -> None:
        """Stop background attempts (their recipients are already recorded deferred) and
        close idle connections."""
        for t in list(self._background):
            t.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.pool.aclose()
        self.router.close()


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run the deliverer group member until ``stop`` is set."""
    tenants = Tenants.load(settings.tenants_file)
    store = open_store(settings.store)
    ds = settings.deliverer
    delivered = DeliveredLog(ds.state_path / settings.kafka.instance_id / "delivered")
    d = Deliverer(
        ds, tenants, store, delivered, settings.kafka.topic_prefix,
        authserv_id=settings.scanner.auth.authserv_id,
    )  # fmt: skip
    if ds.dedupe_rebuild:
        # Only deliveries that a retry could still repeat matter: those within expire_after.
        since = utcnow() - dt.timedelta(seconds=ds.expire_after + 86400)
        for attempt in range(1, 31):
            try:
                n = await asyncio.to_thread(
                    rebuild_from_topic, delivered, settings.kafka, d.delivery_topic, since
                )
            except KafkaException as e:
                # Retriable (a leader moving, a topic just created): the local record still
                # covers this instance, so after a while carry on rather than not deliver.
                log.warning("dedupe rebuild failed", attempt=attempt, error=str(e))
                await asyncio.sleep(1.0)
                continue
            log.info("dedupe record rebuilt from the delivery topic", delivered=n)
            break
        else:
            log.error("dedupe record not rebuilt; relying on the local record only")
    unknown = settings.receiver.max_message_size

    def weigh(i: Incoming) -> int:
        return work_bytes(i, unknown)

    loop = TransactionalLoop(
        settings.kafka, "deliverer", d.input_topics(), d.handle, ds.batch_size, hold=d.hold,
        batch_bytes=ds.batch_bytes, weigh=weigh,
    )  # fmt: skip
    log.info("deliverer started", topics=d.input_topics())
    try:
        await loop.run(stop)
    finally:
        await d.aclose()
        delivered.close()
        await store.aclose()
        log.info("deliverer stopped")


def run(settings: Settings) -> None:
    """Blocking entry point for ``mxgate run deliverer``: SIGTERM/SIGINT drain and exit.

    With ``deliverer.metrics_port`` set, the process's metrics are served from before the first
    record until the drain ends; a port that cannot be bound stops the start (ConfigError).
    """
    ms = settings.deliverer
    with serve_metrics(ms.metrics_host, ms.metrics_port, "MXGATE_DELIVERER__METRICS_PORT"):
        run_until_signalled(lambda stop: serve(settings, stop))
