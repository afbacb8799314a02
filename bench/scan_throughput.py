"""Scan throughput: all antivirus engines vs clamdscan alone, on one mixed corpus, same run.

    .venv/bin/python bench/scan_throughput.py [--messages 60] [--json]

Builds a mixed corpus (plain text, HTML, attachments from 10 KB to 5 MB, some EICAR), starts
a real clamd on the project-built database (devstack/clamd.py), then measures in turn:

1. ``mxgate``: parse + every antivirus engine (clamav, yara isolated, reputation) through the
   scanner's EngineRunner, one message at a time (cache off), so messages/s is per scanner core
   (clamd's own thread and the YARA worker run alongside);
2. ``clamdscan``: Debian's clamdscan --stream over the same messages, one at a time.

It reports both rates, their ratio and each engine's p50/p99, from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from devstack.clamd import EICAR, Clamd  # noqa: E402
from mxgate.settings import ScannerSettings  # noqa: E402
from scanner.engines.registry import build_engines  # noqa: E402
from scanner.mime import parse  # noqa: E402
from scanner.runner import EngineRunner  # noqa: E402


def corpus(n: int, seed: int = 7) -> list[bytes]:
    """``n`` messages: a third text, a third HTML, a third with a 10 KB-5 MB attachment."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        m = EmailMessage()
        m["From"], m["To"], m["Subject"] = "a@x.test", "b@example.test", f"bench {i}"
        words = " ".join(
            rnd.choice(["alpha", "beta", "invoice", "meeting", "report"]) for _ in range(300)
        )
        kind = i % 3
        if kind == 0:
            m.set_content(words)
        elif kind == 1:
            m.set_content(words)
            m.add_alternative(
                f"<html><body><p>{words}</p><a href='http://x.test'>x</a></body></html>",
                subtype="html",
            )
        else:
            m.set_content(words)
            size = int(10_000 * (500 ** rnd.random()))  # log-uniform 10 KB .. 5 MB
            data = rnd.randbytes(size)
            if i % 9 == 2:
                data = data[: size // 2] + EICAR + data[size // 2 :]
            m.add_attachment(
                data, maintype="application", subtype="octet-stream", filename=f"file{i}.bin"
            )
        out.append(m.as_bytes())
    return out


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] if v else 0.0


async def run_mxgate(msgs: list[bytes], clamd: Clamd, work: Path) -> dict:
    rep = work / "bad.txt"
    rep.write_text("")
    s = ScannerSettings(
        engines=("clamav", "yara", "reputation"),
        clamav_socket=clamd.socket,
        clamav_db_dir=clamd.db,
        reputation_file=rep,
        isolated=("yara",),
        isolation_workers=1,
        cache_entries=0,
        engine_timeout=60,
    )
    engines = build_engines(s)
    for e in engines:
        await e.start()
    runner = EngineRunner(engines, timeout=60, cache_entries=0)
    times: dict[str, list[float]] = {e.name: [] for e in engines}
    detected = 0
    try:
        t0 = time.perf_counter()
        for i, raw in enumerate(msgs):
            parsed = await asyncio.to_thread(parse, raw, message_id=str(i), tenant="t")
            res = await runner.run(parsed)
            for f in res.findings:
                times[f.engine].append(f.duration_ms)
                assert f.outcome not in ("error", "timeout"), f
            detected += any(f.outcome == "infected" for f in res.findings)
        elapsed = time.perf_counter() - t0
    finally:
        for e in engines:
            await e.aclose()
    return {
        "messages": len(msgs),
        "seconds": elapsed,
        "msgs_per_s": len(msgs) / elapsed,
        "detected": detected,
        "engines": {k: {"p50_ms": pct(v, 0.5), "p99_ms": pct(v, 0.99)} for k, v in times.items()},
    }


def run_clamdscan(msgs: list[bytes], clamd: Clamd, work: Path) -> dict:
    files = []
    for i, raw in enumerate(msgs):
        p = work / f"m{i}.eml"
        p.write_bytes(raw)
        files.append(p)
    detected = 0
    times = []
    t0 = time.perf_counter()
    for p in files:
        t = time.perf_counter()
        r = subprocess.run(
            ["clamdscan", "-c", str(clamd.conf), "--stream", "--no-summary", str(p)],
            capture_output=True,
            check=False,
        )
        times.append((time.perf_counter() - t) * 1000)
        if r.returncode == 2:
            raise RuntimeError(r.stdout.decode() + r.stderr.decode())
        detected += r.returncode == 1
    elapsed = time.perf_counter() - t0
    return {
        "messages": len(msgs),
        "seconds": elapsed,
        "msgs_per_s": len(msgs) / elapsed,
        "detected": detected,
        "p50_ms": pct(times, 0.5),
        "p99_ms": pct(times, 0.99),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=60)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    msgs = corpus(args.messages)
    with tempfile.TemporaryDirectory(prefix="mxgate-bench-") as tmp:
        work = Path(tmp)
        (work / "clamd").mkdir(exist_ok=True)
        clamd = Clamd(work / "clamd").start()
        try:
            mx = asyncio.run(run_mxgate(msgs, clamd, work))
            cs = run_clamdscan(msgs, clamd, work)
        finally:
            clamd.stop()
    result = {
        "corpus_bytes": sum(map(len, msgs)),
        "mxgate_all_av": mx,
        "clamdscan_alone": cs,
        "ratio_mxgate_over_clamdscan": mx["msgs_per_s"] / cs["msgs_per_s"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"corpus: {len(msgs)} messages, {result['corpus_bytes'] / 1e6:.1f} MB")
    print(f"mxgate, all AV engines : {mx['msgs_per_s']:8.1f} msg/s  ({mx['detected']} detected)")
    print(f"clamdscan alone        : {cs['msgs_per_s']:8.1f} msg/s  ({cs['detected']} detected)")
    print(f"ratio mxgate/clamdscan : {result['ratio_mxgate_over_clamdscan']:.2f}")
    for name, t in mx["engines"].items():
        print(f"  {name:12} p50 {t['p50_ms']:8.1f} ms   p99 {t['p99_ms']:8.1f} ms")
    print(f"  {'clamdscan':12} p50 {cs['p50_ms']:8.1f} ms   p99 {cs['p99_ms']:8.1f} ms")


if __name__ == "__main__":
    main()
