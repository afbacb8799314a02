"""End-to-end delivery benchmark: mxgate (receiver → Kafka → scanner → Kafka → deliverer) against
a private Postfix relaying the same mail, same run, same downstream server.

For each session count (default 10 and 50), N concurrent SMTP sessions send clean 1-2 KB
messages (``samples.clean_message``, each tagged with an ``X-Bench-Id`` header) to the
gateway under test; a real SMTP server (aiosmtpd, in this process) stands for the customer's
server downstream. Per message we take the time from the gateway's 250 to the message's
arrival downstream; per run, messages per second from the first MAIL to the last arrival.

* mxgate: ``mxgate run receiver|scanner|deliverer`` processes with the default engines and
  the filesystem store, on a local Kafka broker;
* peer: Postfix from Debian (``tests/support/postfix.py``), relay_transport to the same
  downstream, no content filter: the cost of a plain store-and-forward MTA.

Run: ``.venv/bin/python bench/delivery.py [--messages 400] [--sessions 10,50] [--json]``
(see bench/README.md). Needs root (Postfix drops to its own user) and the Kafka jars.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import aiosmtplib  # noqa: E402
from aiosmtpd.smtp import SMTP, Envelope, Session  # noqa: E402
from support import samples  # noqa: E402
from support.pipeline import Pipeline, free_port  # noqa: E402
from support.postfix import Postfix  # noqa: E402

from devstack.kafka import LocalKafka  # noqa: E402


class _Recorder:
    """aiosmtpd handler of the downstream process: appends "<bench id> <monotonic>" lines."""

    def __init__(self, out: Path) -> None:
        self.out = out.open("a", buffering=1)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Note the arrival time of the message's bench id."""
        now = time.monotonic()
        data = envelope.original_content or b""
        head = data.split(b"\r\n\r\n", 1)[0]
        for line in head.split(b"\r\n"):
            if line.startswith(b"X-Bench-Id:"):
                self.out.write(f"{line[11:].strip().decode()} {now}\n")
        return "250 2.0.0 Ok"


def _serve_downstream(port: int, out: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        handler = _Recorder(Path(out))
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="downstream.test", loop=loop), "127.0.0.1", port
        )
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class Downstream:
    """The customer's server, in its own process (so the load generator's event loop does not
    delay its clock readings): records when each X-Bench-Id arrives. CLOCK_MONOTONIC is one
    clock for every process of the machine, so its times compare with the driver's."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.file = workdir / "arrivals.txt"
        self.file.touch()
        self.proc = multiprocessing.get_context("spawn").Process(
            target=_serve_downstream, args=(self.port, str(self.file)), daemon=True
        )

    def start(self) -> Downstream:
        self.proc.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    @property
    def arrivals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for line in self.file.read_text().splitlines():
            bid, _, t = line.partition(" ")
            if t:
                out.setdefault(bid, float(t))
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.join(10)


async def drive(port: int, ids: list[str], sessions: int) -> dict[str, float]:
    """Send one message per id over ``sessions`` connections; returns id -> time of the 250."""
    accepted: dict[str, float] = {}
    queue: asyncio.Queue[str] = asyncio.Queue()
    for i in ids:
        queue.put_nowait(i)

    async def session() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=120, start_tls=False)
        await client.connect()
        try:
            while not queue.empty():
                bid = queue.get_nowait()
                n = int(bid.rsplit("-", 1)[1])
                body = f"X-Bench-Id: {bid}\r\n".encode() + samples.clean_message(n)
                await client.sendmail("alice@sender.test", [f"u{n % 97}@example.test"], body)
                accepted[bid] = time.monotonic()
        finally:
            await client.quit()

    await asyncio.gather(*(session() for _ in range(sessions)))
    return accepted


def measure(name: str, port: int, down: Downstream, n: int, sessions: int) -> dict[str, object]:
    """One run against one gateway: rate and 250→arrival latency percentiles."""
    ids = [f"{name}-{sessions}-{i}" for i in range(n)]
    t0 = time.monotonic()
    accepted = asyncio.run(drive(port, ids, sessions))
    deadline = time.monotonic() + 600
    while not all(i in (arrivals := down.arrivals) for i in ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: {sum(i in arrivals for i in ids)}/{n} arrived")
        time.sleep(0.2)
    last = max(arrivals[i] for i in ids)
    lat = sorted((arrivals[i] - accepted[i]) * 1000 for i in ids)
    return {
        "gateway": name,
        "sessions": sessions,
        "messages": n,
        "msgs_per_s": n / (last - t0),
        "p50_ms": statistics.median(lat),
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--sessions", default="10,50")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sessions = [int(x) for x in args.sessions.split(",")]
    (REPO / "var").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-delivery-", dir=REPO / "var"))
    down = Downstream(work).start()
    kafka = LocalKafka(work / "kafka")
    pipeline: Pipeline | None = None
    postfix: Postfix | None = None
    rows: list[dict[str, object]] = []
    try:
        bootstrap = kafka.start()
        (work / "gw").mkdir()
        pipeline = Pipeline(
            work / "gw",
            bootstrap,
            down.port,
            extra_env={"MXGATE_LOG_LEVEL": "warning", "MXGATE_DELIVERER__BATCH_SIZE": "100"},
        )
        pipeline.start_all()
        postfix = Postfix(
            free_port(), ["example.test"], "relay", relay_to=("127.0.0.1", down.port)
        ).start()
        # Warm-up: the first messages pay for connections, imports and consumer group joins;
        # not part of any figure.
        measure("warm-mxgate", pipeline.receiver_port, down, 20, 2)
        measure("warm-postfix", postfix.port, down, 20, 2)
        for s in sessions:
            rows.append(measure("mxgate", pipeline.receiver_port, down, args.messages, s))
            rows.append(measure("postfix", postfix.port, down, args.messages, s))
    finally:
        if pipeline is not None:
            pipeline.stop_all()
        if postfix is not None:
            postfix.stop()
        kafka.stop()
        down.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'gateway':8} {'sessions':>8} {'msgs':>6} {'msgs/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(
            f"{r['gateway']:8} {r['sessions']:>8} {r['messages']:>6} {r['msgs_per_s']:>8.1f} "
            f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}"
        )
    for s in sessions:
        m, p = (next(r for r in rows if r["gateway"] == g and r["sessions"] == s)
                for g in ("mxgate", "postfix"))  # fmt: skip
        rate = m["msgs_per_s"] / p["msgs_per_s"]  # type: ignore[operator]
        # Postfix relays within about a millisecond, which is the driver's own resolution
        # (its event loop reads the 250 a little late, so single latencies can even be < 0):
        # a ratio against such a p50 says nothing.
        p50 = (
            f"{m['p50_ms'] / p['p50_ms']:.0f}x"  # type: ignore[operator]
            if p["p50_ms"] > 2  # type: ignore[operator]
            else f"n/a (postfix p50 {p['p50_ms']:.1f} ms is below the driver's resolution)"
        )
        print(
            f"mxgate/postfix at {s} sessions: rate {rate:.2f}x, p50 {p50}, "
            f"p99 {m['p99_ms'] / p['p99_ms']:.1f}x"  # type: ignore[operator]
        )


if __name__ == "__main__":
    main()
