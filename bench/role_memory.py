"""Peak RSS of each role (receiver, scanner, deliverer) with a backlog of large messages.

The whole pipeline runs as processes (``mxgate run receiver|scanner|deliverer``, the same
harness as the integration tests: ``tests/support/pipeline.py``) on a local Kafka broker
(``devstack.kafka.LocalKafka``) with the filesystem store, delivering to an aiosmtpd server in
its own process (``bench/delivery.py``'s ``Downstream``). Each round, per budget:

1. only the receiver runs; ``--messages`` concurrent SMTP sessions each send a distinct
   ``--mb`` MB message (every ``--zip-every``-th carries a zip whose four members decode to
   about 4 x ``--mb`` MB, the rest one random binary attachment);
2. then the scanner starts on that backlog (so a batch can take all of it) and decides it;
3. then the deliverer starts on the backlog of decisions and delivers them.

Each role's peak resident set (``VmHWM`` from /proc, the role's own process; the scanner's
isolated engine workers are reported apart, as the largest worker) is read when its phase has
ended. ``--budgets`` lists the byte budgets to compare, in MiB (``none``: no byte budget, the
batch bounded by its count alone, ``batch_size`` 50, as before issue 11); each sets
``scanner.batch_bytes``, ``scanner.decoded_bytes`` and ``deliverer.batch_bytes``. Reported per
role and budget: the median, min and max over ``--rounds``.

    PYTHONPATH=. .venv/bin/python bench/role_memory.py [--messages 50] [--mb 20] \\
        [--budgets 256,none] [--rounds 3] [--json]

Needs the Kafka jars (``make fetch``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from delivery import Downstream  # noqa: E402
from rawsmtp import hwm_kib, send  # noqa: E402
from support.pipeline import Pipeline  # noqa: E402

import schemas  # noqa: E402
from devstack.kafka import LocalKafka  # noqa: E402
from mxgate import catalog  # noqa: E402
from mxgate.kafka import read_events  # noqa: E402

MIB = 1024 * 1024
ROLES = ("receiver", "scanner", "deliverer")


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` alive now."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return out
    for t in tasks:
        try:
            kids = [int(k) for k in (t / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        for k in kids:
            out += [k, *_children(k)]
    return out


def _attachment(mb: int) -> bytes:
    """Base64 lines of random bytes, about ``mb`` MB once encoded."""
    raw = os.urandom(mb * MIB * 3 // 4)
    return base64.encodebytes(raw).replace(b"\n", b"\r\n")


def _zip(mb: int) -> bytes:
    """Base64 of a zip of four members of random 'a'/'b' text (about 6x compressible, under
    the unpacker's ratio limit) that decode to about 4 x ``mb`` MB in all: the message is
    about ``mb`` MB."""
    to_ab = bytes(97 + (i & 1) for i in range(256))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for n in range(4):
            z.writestr(f"member{n}.txt", os.urandom(mb * MIB).translate(to_ab))
    return base64.encodebytes(buf.getvalue()).replace(b"\n", b"\r\n")


def _head(i: int, run: str, filename: str, ctype: str) -> bytes:
    return (
        f"X-Bench-Id: {run}-{i}\r\nFrom: alice@sender.test\r\nTo: u{i}@example.test\r\n"
        f"Subject: large message {run} {i}\r\nMessage-ID: <{run}-{i}@sender.test>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b0und"\r\n\r\n'
        "--b0und\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n"
        f"--b0und\r\nContent-Type: {ctype}\r\n"
        f'Content-Disposition: attachment; filename="{filename}"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()


def _send(port: int, head: bytes, body: bytes) -> Awaitable[str]:
    chunks = [head, *(body[at : at + MIB] for at in range(0, len(body), MIB)), b"\r\n--b0und--\r\n"]
    return send(port, b"b@example.test", chunks)


def _events(p: Pipeline, topic: str) -> list[schemas.Event]:
    full = catalog.name(topic, p.settings.kafka.topic_prefix)
    return list(read_events(p.settings, topics=[full]))


def _wait(cond: Any, timeout: float, what: str, p: Pipeline) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        p.assert_alive()
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s: {what}")
        time.sleep(1.0)


def one_round(
    kafka: str, down: Downstream, work: Path, budget: int | None, args: Any, bodies: Any, r: int
) -> dict[str, Any]:
    """One round for one budget: each role's peak RSS (MiB) and what happened."""
    run = f"b{budget or 'none'}r{r}"
    big = str(budget * MIB) if budget else str(2**50)
    env = {
        "MXGATE_LOG_LEVEL": "warning",
        "MXGATE_SCANNER__BATCH_BYTES": big,
        "MXGATE_SCANNER__DECODED_BYTES": big,
        "MXGATE_DELIVERER__BATCH_BYTES": big,
        "MXGATE_SCANNER__BATCH_SIZE": "50",
        "MXGATE_DELIVERER__BATCH_SIZE": "50",
        # Every session from 127.0.0.1, each body in flight at once.
        "MXGATE_RECEIVER__MAX_CONNECTIONS_PER_IP": str(args.messages + 10),
        "MXGATE_RECEIVER__MAX_INFLIGHT_PER_IP": str(args.messages + 10),
        "MXGATE_RECEIVER__MAX_INFLIGHT": str(args.messages + 10),
        # The receiver's own byte budget (512 MiB) would turn part of the load away with 451.
        # (Never below the largest message it must take, which the settings check.)
        "MXGATE_RECEIVER__MAX_INFLIGHT_BYTES": str(
            max((args.messages + 1) * (args.mb + 1) * MIB, 50 * MIB)
        ),
        # Memory is measured, not time: let a big batch take as long as it needs.
        "MXGATE_KAFKA__TRANSACTION_TIMEOUT_MS": "900000",
        "MXGATE_SCANNER__HOLD_DEADLINE": "600",
        "MXGATE_DELIVERER__BATCH_DEADLINE": "600",
        "MXGATE_SCANNER__ENGINE_TIMEOUT": "300",
        "MXGATE_SCANNER__ISOLATION_QUEUE_TIMEOUT": "600",
        "MXGATE_DELIVERER__COMMAND_TIMEOUT": "300",
    }
    folder = work / run
    folder.mkdir()
    p = Pipeline(folder, kafka, down.port, extra_env=env)
    out: dict[str, Any] = {"budget_mib": budget, "round": r}
    try:
        t0 = time.monotonic()
        rec = p.start("receiver")

        async def send_all() -> list[str]:
            return await asyncio.gather(
                *(_send(p.receiver_port, _head(i, run, *bodies.kind(i)), bodies.body(i))
                  for i in range(args.messages))
            )  # fmt: skip

        answers = asyncio.run(send_all())
        out["accepted"] = sum(a.startswith("250") for a in answers)
        out["receiver"] = hwm_kib(rec.pid) / 1024
        out["receive_s"] = time.monotonic() - t0

        t1 = time.monotonic()
        scan = p.start("scanner")
        workers: dict[int, int] = {}

        def scanned() -> list[schemas.MessageScanned]:
            for c in _children(scan.pid):
                try:
                    workers[c] = max(workers.get(c, 0), hwm_kib(c))
                except (FileNotFoundError, ProcessLookupError):
                    pass
            evs = [e for e in _events(p, catalog.SCANNED) if isinstance(e, schemas.MessageScanned)]
            return evs if len(evs) >= out["accepted"] else []

        decisions = _wait(scanned, 3600, "every message decided", p)
        out["scanner"] = hwm_kib(scan.pid) / 1024
        out["scanner_worker_max"] = max(workers.values(), default=0) / 1024
        out["scan_s"] = time.monotonic() - t1
        actions: dict[str, int] = {}
        for d in decisions:
            actions[d.action] = actions.get(d.action, 0) + 1
        out["actions"] = actions

        t2 = time.monotonic()
        deliv = p.start("deliverer")
        want = {f"{run}-{i}" for i in range(args.messages)}
        deliverable = sum(actions.get(a, 0) for a in ("deliver", "tag"))

        def delivered() -> bool:
            attempts = [e for e in _events(p, catalog.DELIVERY)
                        if isinstance(e, schemas.DeliveryAttempted)]  # fmt: skip
            arrived = len(want & set(down.arrivals))
            return arrived >= deliverable and len(attempts) >= deliverable

        _wait(delivered, 3600, "every deliverable message delivered", p)
        out["deliverer"] = hwm_kib(deliv.pid) / 1024
        out["deliver_s"] = time.monotonic() - t2
        out["arrived"] = len(want & set(down.arrivals))
    finally:
        p.stop_all()
        shutil.rmtree(folder / "store", ignore_errors=True)
    return out


class Bodies:
    """The attachments, made once: random binary, and the zip of large members."""

    def __init__(self, mb: int, zip_every: int) -> None:
        self.zip_every = zip_every
        self.plain = _attachment(mb)
        self.zipped = _zip(mb) if zip_every else b""

    def is_zip(self, i: int) -> bool:
        return bool(self.zip_every) and i % self.zip_every == 0

    def kind(self, i: int) -> tuple[str, str]:
        if self.is_zip(i):
            return "members.zip", "application/zip"
        return "data.bin", "application/octet-stream"

    def body(self, i: int) -> bytes:
        return self.zipped if self.is_zip(i) else self.plain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=50)
    ap.add_argument("--mb", type=int, default=20)
    ap.add_argument("--zip-every", type=int, default=5, help="0: no zip messages")
    ap.add_argument("--budgets", default="256,none", help="MiB, comma-separated; none: count only")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    budgets = [None if b == "none" else int(b) for b in args.budgets.split(",")]
    bodies = Bodies(args.mb, args.zip_every)
    (REPO / "var").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-memory-", dir=REPO / "var"))
    down = Downstream(work).start()
    kafka = LocalKafka(work / "kafka")
    rounds: list[dict[str, Any]] = []
    try:
        bootstrap = kafka.start()
        for r in range(args.rounds):
            for b in budgets:
                res = one_round(bootstrap, down, work, b, args, bodies, r)
                rounds.append(res)
                print(json.dumps(res), file=sys.stderr, flush=True)
    finally:
        kafka.stop()
        down.stop()
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for b in budgets:
        mine = [x for x in rounds if x["budget_mib"] == b]
        row: dict[str, Any] = {"budget_mib": b, "rounds": len(mine)}
        for k in (*ROLES, "scanner_worker_max"):
            vals = [x[k] for x in mine]
            row[k] = {"median": round(statistics.median(vals), 1),
                      "min": round(min(vals), 1), "max": round(max(vals), 1)}  # fmt: skip
        row["accepted"] = [x["accepted"] for x in mine]
        row["arrived"] = [x["arrived"] for x in mine]
        row["actions"] = mine[-1]["actions"]
        row["seconds"] = {k: round(statistics.median(x[k] for x in mine), 1)
                          for k in ("receive_s", "scan_s", "deliver_s")}  # fmt: skip
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{args.messages} messages of {args.mb} MB (every {args.zip_every}th a zip of "
          f"4 x {args.mb} MB members), {args.rounds} round(s); "
          "peak RSS MiB, median (min-max)")  # fmt: skip
    print(f"{'budget':>10} {'receiver':>22} {'scanner':>22} {'scan worker':>22} {'deliverer':>22}")
    for row in rows:
        cells = [
            f"{row[k]['median']:.0f} ({row[k]['min']:.0f}-{row[k]['max']:.0f})"
            for k in ("receiver", "scanner", "scanner_worker_max", "deliverer")
        ]
        label = f"{row['budget_mib']} MiB" if row["budget_mib"] else "count only"
        print(f"{label:>10} " + " ".join(f"{c:>22}" for c in cells))
    for row in rows:
        print(f"budget {row['budget_mib']}: accepted {row['accepted']}, arrived {row['arrived']}, "
              f"actions {row['actions']}, seconds {row['seconds']}")  # fmt: skip


if __name__ == "__main__":
    main()
