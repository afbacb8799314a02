"""Peak RSS of one receiver process while N sessions each send an M MB message at once.

The receiver (GatewaySMTP + ReceiverHandler + the filesystem store, as ``mxgate run receiver``
builds them) runs in a child process; its publisher acknowledges every event at once (no
Kafka: this measures the receiver's own memory, not librdkafka's). The parent opens the
sessions, sends every body concurrently from one shared 1 MB block, and reads the child's
``VmHWM`` (peak resident set) from /proc when all replies are in. The script runs against
whichever checkout is first on ``PYTHONPATH``, so the same command measures before and after.

    PYTHONPATH=. .venv/bin/python bench/receiver_memory.py [--sessions 50] [--mb 20] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shutil
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from rawsmtp import hwm_kib, send

TENANTS = {"tenants": {"acme": {"domains": ["acme.test"], "route": {"host": "127.0.0.1"}}}}


def _serve(port_out: Any, root: str, max_size: int, sessions: int) -> None:
    """Child: a receiver on a loopback port until killed."""
    from mxgate.blobstore import FsBlobStore
    from mxgate.logs import configure
    from mxgate.settings import ReceiverSettings
    from mxgate.tenants import Tenants
    from receiver.handler import ReceiverHandler
    from receiver.metrics import ReceiverMetrics
    from receiver.smtp import Gateway, GatewaySMTP

    class Acked:
        async def produce(self, topic: str, key: str, value: bytes) -> None:
            return None

    configure("warning", False)  # no line per accepted message
    fields = ReceiverSettings.model_fields
    extra: dict[str, Any] = {}
    # Settings the newer receiver has: let every session of the benchmark in.
    if "max_inflight_per_ip" in fields:
        extra["max_inflight_per_ip"] = sessions
    if "max_inflight_bytes" in fields:
        extra["max_inflight_bytes"] = (sessions + 1) * max_size
    rs = ReceiverSettings(
        max_message_size=max_size,
        max_connections_per_ip=sessions + 10,
        max_inflight=sessions + 10,
        **extra,
    )
    metrics = ReceiverMetrics()
    handler = ReceiverHandler(
        rs, Tenants.from_mapping(TENANTS), FsBlobStore(Path(root)), Acked(), "received",
        metrics=metrics,
    )  # fmt: skip

    async def main() -> None:
        loop = asyncio.get_running_loop()
        gateway = Gateway(rs, metrics)
        server = await loop.create_server(
            lambda: GatewaySMTP(handler, gateway, loop), "127.0.0.1", 0
        )
        port_out.send(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


def _session(port: int, i: int, block: bytes, blocks: int) -> Awaitable[str]:
    # Distinct bodies, distinct keys; ``blocks`` writes of one shared block.
    head = f"Subject: message {i}\r\n\r\n".encode()
    return send(port, b"b@acme.test", [head, *[block] * blocks], sender=b"a@sender.test")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--mb", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    line = b"y" * 998 + b"\r\n"
    block = line * 1000  # 1 MB
    root = tempfile.mkdtemp(prefix="mxgate-bench-store-")
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    max_size = (args.mb + 1) * len(block)
    child = ctx.Process(target=_serve, args=(send, root, max_size, args.sessions), daemon=True)
    child.start()
    try:
        port = recv.recv()
        idle = hwm_kib(child.pid or 0)
        t0 = time.perf_counter()

        async def run() -> list[str]:
            return await asyncio.gather(
                *(_session(port, i, block, args.mb) for i in range(args.sessions))
            )

        answers = asyncio.run(run())
        elapsed = time.perf_counter() - t0
        peak = hwm_kib(child.pid or 0)
    finally:
        child.kill()
        child.join()
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "sessions": args.sessions,
        "message_mb": args.mb,
        "accepted": sum(a.startswith("250") for a in answers),
        "idle_rss_mib": round(idle / 1024, 1),
        "peak_rss_mib": round(peak / 1024, 1),
        "seconds": round(elapsed, 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>14}: {v}")


if __name__ == "__main__":
    main()
