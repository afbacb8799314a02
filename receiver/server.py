"""Run the receiver: GatewaySMTP sessions on uvloop, the durable-accept handler, metrics,
SIGTERM drain, and ``workers`` processes sharing the port (SO_REUSEPORT)."""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import ssl
from contextlib import ExitStack
from pathlib import Path

import structlog

import schemas
from mxgate import catalog
from mxgate.blobstore import open_store
from mxgate.compacted import CompactedFollower
from mxgate.errors import ConfigError
from mxgate.kafka import AsyncProducer
from mxgate.metrics import serve_metrics
from mxgate.process import run_until_signalled
from mxgate.resolver import Resolver
from mxgate.settings import Settings
from mxgate.tenants import Tenants
from receiver.decisions import DecisionWatcher
from receiver.dnsbl import DnsblChecker, make_resolver
from receiver.greylist import Greylist, GreylistTable
from receiver.handler import ReceiverHandler, received_topic
from receiver.metrics import ReceiverMetrics
from receiver.recipients import RecipientVerifier
from receiver.smtp import Gateway, GatewaySMTP
from receiver.tls import TlsCertificate

log = structlog.get_logger("mxgate.receiver")


def _certificate(cert: Path, key: Path) -> TlsCertificate:
    """The STARTTLS pair, or a config error naming the keys when it does not load."""
    try:
        return TlsCertificate(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(
            "environment", "MXGATE_RECEIVER__TLS_CERT/TLS_KEY", f"{cert}, {key} do not load: {e}"
        ) from e


async def _greylist(
    settings: Settings, producer: AsyncProducer
) -> tuple[Greylist, CompactedFollower]:
    """The shared greylisting table, read to its end before the receiver listens (a receiver
    that greylisted from an empty table would refuse every retry it had not seen itself)."""
    topic = catalog.name(catalog.GREYLIST, settings.kafka.topic_prefix)
    table = GreylistTable()
    follower = CompactedFollower(
        settings.kafka, topic, f"{settings.kafka.group_prefix}.greylist-reader", table.apply
    )
    await asyncio.to_thread(follower.load, settings.receiver.accept_timeout * 2)
    follower.start()
    log.info("greylist loaded", entries=len(table), records=follower.records)

    async def publish(entry: schemas.GreylistEntry) -> None:
        await producer.produce(topic, entry.key, schemas.encode_event(entry))

    return Greylist(table, publish, settings.kafka.instance_id), follower


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    worker: int = 0,
) -> None:
    """Serve SMTP until ``stop`` is set, then stop accepting and drain the open sessions."""
    rs = settings.receiver
    tenants = Tenants.load(settings.tenants_file)
    store = open_store(settings.store)
    producer = AsyncProducer(settings.kafka, message_timeout=rs.accept_timeout)
    metrics = ReceiverMetrics()
    verifier = None
    if any(t.recipients.mode != "none" for t in tenants):
        # One rocksdict per worker: RocksDB allows one writer process per directory.
        verifier = RecipientVerifier(
            rs.recipient_cache / f"worker-{worker}",
            rs.hostname,
            resolver=Resolver(rs.dns_servers),  # cached: MX hosts of mx routes
        )
    dnsbl = None
    if rs.dnsbl_zones:
        resolver = make_resolver(rs.dns_servers, rs.dnsbl_timeout)
        dnsbl = DnsblChecker(rs.dnsbl_zones, resolver, rs.dnsbl_timeout)
    tls = _certificate(rs.tls_cert, rs.tls_key) if rs.tls_cert and rs.tls_key else None
    loop = asyncio.get_running_loop()
    decisions = None
    if any(t.session_reject is not None for t in tenants):
        decisions = DecisionWatcher(settings.kafka, loop)
        await asyncio.to_thread(decisions.start)
    greylist, follower = None, None
    if any(t.greylisting.enabled for t in tenants):
        greylist, follower = await _greylist(settings, producer)
    gateway = Gateway(rs, metrics, dnsbl=dnsbl, tls=tls)
    handler = ReceiverHandler(
        rs,
        tenants,
        store,
        producer,
        received_topic(settings.kafka.topic_prefix),
        metrics=metrics,
        verifier=verifier,
        decisions=decisions,
        rejected_topic=catalog.name(catalog.REJECTED, settings.kafka.topic_prefix),
        greylist=greylist,
    )
    with ExitStack() as stack:
        if settings.metrics_port:
            # Worker i serves on metrics_port + i: each process has its own counters.
            port = settings.metrics_port + worker
            stack.enter_context(
                serve_metrics(rs.metrics_host, port, "MXGATE_METRICS_PORT", metrics.registry)
            )
        server = await loop.create_server(
            lambda: GatewaySMTP(handler, gateway, loop),
            host=rs.host,
            port=rs.port,
            reuse_port=True,
            backlog=1024,
        )
        log.info("receiver listening", host=rs.host, port=rs.port, worker=worker)
        if ready is not None:
            ready.set()
        try:
            await stop.wait()
        finally:
            # Drain: no new connections; idle sessions get 421 now, transactions in flight
            # finish (their accept completes even if the client vanished), then exit.
            server.close()
            gateway.drain()
            log.info("draining sessions", count=len(gateway.sessions))
            await gateway.wait_drained(rs.drain_timeout)
            await server.wait_closed()
            if decisions is not None:
                await asyncio.to_thread(decisions.close)
            if follower is not None:
                await asyncio.to_thread(follower.stop)
            await asyncio.to_thread(producer.close)
            await store.aclose()
            if verifier is not None:
                verifier.close()
            log.info("receiver stopped", worker=worker)


def _worker(settings: Settings, index: int) -> None:
    """Entry of one worker process (spawned): logging, then serve until SIGTERM."""
    from mxgate.logs import configure

    configure(settings.log_level, settings.log_json)
    run_until_signalled(lambda stop: serve(settings, stop, worker=index))


def run(settings: Settings) -> None:
    """Blocking entry point for ``mxgate run receiver``: SIGTERM/SIGINT drain and exit.

    With ``workers`` > 1 this process supervises that many spawned workers on the same port
    and forwards SIGTERM/SIGINT to them; it exits when all have drained.
    """
    n = settings.receiver.workers
    if n == 1:
        run_until_signalled(lambda stop: serve(settings, stop))
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=(settings, i), name=f"receiver-{i}") for i in range(n)
    ]
    for p in procs:
        p.start()

    def forward(_signum: int, _frame: object) -> None:
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: each worker drains on its own

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for p in procs:
        p.join()
