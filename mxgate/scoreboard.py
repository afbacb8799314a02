"""The engine scoreboard: a faust-streaming app, tables in rocksdict, JSON over HTTP.

The design report's "constant eye on every engine's detection rate". The app consumes the
verdict stream (``mxgate.scanned.v1``) and keeps, per engine and tumbling time window
(``MXGATE_OPS__SCOREBOARD_WINDOW`` seconds, by ``scanned_at``):

- ``messages``: verdicts given; ``detections``: infected | spam | match;
  ``detection_rate`` = detections / answered (answered = not error/timeout/skipped);
- ``unique``: detections no other (non-shadow) engine of the same message made;
- ``disagreement``: verdicts whose detected / not-detected differs from the majority of the
  other engines that answered on the message (rate over answered);
- ``errors``, ``timeouts`` and their rates over messages;
- ``latency_ms`` p50 / p90 / p99 from a log-bucketed histogram (≤ 12 % bucket width).

Shadow engines are scored like the others (that is what they run for); they never count as
"another engine" for the unique and disagreement figures of production engines, but production
engines do for theirs.

Two agents: the first turns each decision into one fact per engine and forwards it keyed by
engine name to ``<app id>-facts`` (a repartition, so every engine's counters live in one
partition of the table, as faust tables require); the second adds the fact to the table.
The table is a faust ``Table`` in the ``rocksdb://`` store, which faust backs with rocksdict.
``GET /stats`` (``MXGATE_OPS__SCOREBOARD_PORT``) serves :func:`summarize` of the table.
The app uses ``exactly_once`` processing: it reads only committed decisions and each one is
counted once across crashes.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import faust
from faust.web import Request, Response, View

import schemas
from mxgate import catalog
from mxgate.settings import Settings

__all__ = ["bucket", "facts", "make_app", "summarize"]

DETECTED = frozenset({"infected", "spam", "match"})
FAILED = frozenset({"error", "timeout"})
_GROWTH = 1.12  # histogram bucket ratio: percentiles within about 12 %


def bucket(ms: float) -> int:
    """Histogram bucket of a latency in milliseconds (bucket 0 holds everything under 0.1)."""
    if ms < 0.1:
        return 0
    return 1 + int(math.log(ms / 0.1, _GROWTH))


def _bucket_upper(b: int) -> float:
    return 0.1 * _GROWTH**b


def facts(scanned: Mapping[str, Any], window: float) -> list[dict[str, Any]]:
    """One fact per verdict of a MessageScanned record: what to add to the engine's counters."""
    at: dt.datetime = scanned["scanned_at"]
    start = int(at.timestamp() // window * window)
    verdicts = scanned["verdicts"]
    out = []
    for i, v in enumerate(verdicts):
        others = [
            w
            for j, w in enumerate(verdicts)
            if j != i and not w.get("shadow", False) and w["outcome"] not in FAILED | {"skipped"}
        ]
        detected = v["outcome"] in DETECTED
        answered = v["outcome"] not in FAILED | {"skipped"}
        yes = sum(w["outcome"] in DETECTED for w in others)
        majority = yes * 2 > len(others)
        out.append(
            {
                "engine": v["engine"],
                "shadow": bool(v.get("shadow", False)),
                "window": start,
                "detected": detected,
                "answered": answered,
                "unique": detected and yes == 0,
                "disagree": answered and bool(others) and detected != majority,
                "error": v["outcome"] == "error",
                "timeout": v["outcome"] == "timeout",
                "bucket": bucket(float(v["duration_ms"])),
            }
        )
    return out


def counter_keys(f: Mapping[str, Any]) -> list[str]:
    """The table keys (``engine|window|counter``) one fact adds 1 to."""
    base = f"{f['engine']}|{f['window']}|"
    keys = [base + "messages", base + f"lat:{f['bucket']}"]
    for name in ("detected", "answered", "unique", "disagree", "error", "timeout"):
        if f[name]:
            keys.append(base + name)
    if f["shadow"]:
        keys.append(base + "shadow")
    return keys


def summarize(counters: Iterable[tuple[str, int]]) -> dict[str, Any]:
    """The scoreboard as JSON: ``{"engines": {engine: {window start ISO: figures}}}``."""
    raw: dict[str, dict[int, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for key, n in counters:
        engine, window, counter = key.split("|", 2)
        raw[engine][int(window)][counter] = int(n)
    out: dict[str, Any] = {}
    for engine, windows in sorted(raw.items()):
        rows = {}
        for start, c in sorted(windows.items()):
            msgs = c.get("messages", 0)
            answered = c.get("answered", 0)
            hist = sorted(
                (int(k[4:]), n) for k, n in c.items() if k.startswith("lat:")
            )
            rows[dt.datetime.fromtimestamp(start, dt.UTC).isoformat()] = {
                "messages": msgs,
                "shadow": c.get("shadow", 0) > 0,
                "detections": c.get("detected", 0),
                "detection_rate": _rate(c.get("detected", 0), answered),
                "unique_catches": c.get("unique", 0),
                "disagreements": c.get("disagree", 0),
                "disagreement_rate": _rate(c.get("disagree", 0), answered),
                "errors": c.get("error", 0),
                "timeouts": c.get("timeout", 0),
                "error_rate": _rate(c.get("error", 0), msgs),
                "timeout_rate": _rate(c.get("timeout", 0), msgs),
                "latency_ms": {f"p{q}": _percentile(hist, q / 100) for q in (50, 90, 99)},
            }
        out[engine] = rows
    return {"engines": out}


def _rate(n: int, d: int) -> float:
    return round(n / d, 6) if d else 0.0


def _percentile(hist: list[tuple[int, int]], q: float) -> float:
    total = sum(n for _, n in hist)
    if not total:
        return 0.0
    need = q * total
    seen = 0
    for b, n in hist:
        seen += n
        if seen >= need:
            return round(_bucket_upper(b), 3)  # upper bound: never flatters an engine
    return round(_bucket_upper(hist[-1][0]), 3)


def make_app(settings: Settings) -> faust.App:
    """The scoreboard app for ``settings`` (topic prefix, state path, port, window)."""
    k = settings.kafka
    app_id = f"{k.group_prefix}.{k.topic_prefix}scoreboard"
    datadir = settings.ops.state_path / "scoreboard"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=",".join(f"kafka://{b}" for b in k.bootstrap_servers.split(",")),
        store="rocksdb://",
        datadir=str(datadir),
        processing_guarantee="exactly_once",
        topic_partitions=k.partitions,
        topic_replication_factor=k.replication_factor,
        web_host=settings.ops.scoreboard_host,
        web_port=settings.ops.scoreboard_port,
        web_in_thread=False,
        consumer_auto_offset_reset="earliest",
        topic_disable_leader=True,
    )
    window = settings.ops.scoreboard_window
    scanned = app.topic(
        catalog.name(catalog.SCANNED, k.topic_prefix),
        value_serializer="raw",
        key_serializer="raw",
        acks=False,
        internal=False,
    )
    # internal=True: faust declares (creates) it; brokers here never auto-create topics.
    fact_topic = app.topic(
        f"{app_id}-facts",
        value_serializer="json",
        key_serializer="raw",
        internal=True,
        partitions=k.partitions,
    )
    table = app.Table("engine-counters", default=int, partitions=k.partitions)

    @app.agent(scanned)
    async def split(stream: faust.StreamT) -> None:
        async for value in stream:
            try:
                name, rec = schemas.decode(value)
            except schemas.SchemaError:
                continue  # not ours to judge: the scanner logs undecodable input
            if name != schemas.MESSAGE_SCANNED:
                continue
            for f in facts(rec, window):
                await fact_topic.send(key=f["engine"].encode(), value=f)

    @app.agent(fact_topic)
    async def count(stream: faust.StreamT) -> None:
        async for f in stream:
            for key in counter_keys(f):
                table[key] += 1

    @app.page("/stats")
    class Stats(View):
        async def get(self, request: Request) -> Response:
            return self.json(summarize(table.items()))

    app.scoreboard_table = table  # type: ignore[attr-defined]
    return app


def run(settings: Settings) -> None:
    """Run the scoreboard worker in the foreground (Ctrl-C / SIGTERM stop it)."""
    from faust.worker import Worker

    app = make_app(settings)
    Worker(app, loglevel=settings.log_level.upper()).execute_from_commandline()
