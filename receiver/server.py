"""Run the receiver: an aiosmtpd server on the event loop, with the durable-accept handler."""

from __future__ import annotations

import asyncio

import structlog
from aiosmtpd.smtp import SMTP

from mxgate.blobstore import open_store
from mxgate.kafka import AsyncProducer
from mxgate.process import run_until_signalled
from mxgate.settings import Settings
from mxgate.tenants import Tenants
from receiver.handler import ReceiverHandler, received_topic

log = structlog.get_logger("mxgate.receiver")


async def serve(
    settings: Settings, stop: asyncio.Event, ready: asyncio.Event | None = None
) -> None:
    """Serve SMTP until ``stop`` is set, then stop accepting and drain the open sessions."""
    rs = settings.receiver
    tenants = Tenants.load(settings.tenants_file)
    store = open_store(settings.store)
    producer = AsyncProducer(settings.kafka, message_timeout=rs.accept_timeout)
    handler = ReceiverHandler(
        rs, tenants, store, producer, received_topic(settings.kafka.topic_prefix)
    )
    loop = asyncio.get_running_loop()
    sessions: set[SMTP] = set()

    def factory() -> SMTP:
        smtp = SMTP(
            handler,
            data_size_limit=rs.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=rs.hostname,
            ident="mxgate",
            timeout=rs.data_timeout,
            loop=loop,
        )
        sessions.add(smtp)
        return smtp

    server = await loop.create_server(factory, host=rs.host, port=rs.port, reuse_port=True)
    log.info("receiver listening", host=rs.host, port=rs.port)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        server.close()
        # Drain: sessions in DATA finish their accept (store + Kafka) before we exit.
        pending = [s._handler_coroutine for s in sessions if s._handler_coroutine]
        pending = [t for t in pending if t is not None and not t.done()]
        if pending:
            log.info("draining sessions", count=len(pending))
            await asyncio.wait(pending, timeout=rs.accept_timeout + 5)
        await server.wait_closed()
        await asyncio.to_thread(producer.close)
        await store.aclose()
        log.info("receiver stopped")


def run(settings: Settings) -> None:
    """Blocking entry point for ``mxgate run receiver``: SIGTERM/SIGINT drain and exit."""
    run_until_signalled(lambda stop: serve(settings, stop))
