"""The engine scoreboard: a faust-streaming app, tables in rocksdict, JSON over HTTP.

The design report's "constant eye on every engine's detection rate". The app consumes the
verdict stream (``mxgate.scanned.v1``) and keeps, per engine and tumbling time window (by
``scanned_at``; ``MXGATE_OPS__SCOREBOARD_WINDOW`` seconds, and one day):

- ``messages``: verdicts given; ``detections``: infected | spam | match;
  ``detection_rate`` = detections / answered (answered = not error/timeout/skipped);
- ``unique``: detections no other (non-shadow) engine of the same message made;
- ``disagreement``: verdicts whose detected / not-detected differs from the majority of the
  other engines that answered on the message (rate over answered);
- ``errors``, ``timeouts`` and their rates over messages;
- ``latency_ms`` p50 / p90 / p99 from a log-bucketed histogram (<= 12 % bucket width).

Shadow engines are scored like the others (that is what they run for); they never count as
"another engine" for the unique and disagreement figures of production engines, but production
engines do for theirs.

One agent reads the verdict stream and adds each decision's counters to one faust ``Table``
(store ``rocksdb://`` with the rocksdict driver), with ``exactly_once`` processing: the counter
updates (changelog records) and the input offsets commit in one Kafka transaction, and only
committed decisions are read. The table's keys carry the input partition, so that each
partition's counters live only in that partition's store and changelog: faust runs one
transactional producer per partition and commits a producer's transaction only with offsets of
that same partition. (A first version forwarded facts to a second, engine-keyed topic; those
records landed in another partition's transaction, which nothing committed, so a
read_committed consumer never saw them.) ``GET /stats`` sums the partitions and serves
:func:`board`; :func:`fetch_stats` is its client for ``mxgate engines stats``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import schemas
from mxgate import catalog
from mxgate.settings import KafkaSettings, Settings

if TYPE_CHECKING:
    import faust

__all__ = [
    "DAY",
    "ScoreboardUnavailable",
    "board",
    "bucket",
    "counter_keys",
    "facts",
    "fetch_stats",
    "make_app",
    "run",
    "summarize",
    "table_keys",
    "window_label",
    "window_sizes",
]

DAY = 86_400.0
DETECTED = frozenset({"infected", "spam", "match"})
FAILED = frozenset({"error", "timeout"})
# Verdicts that are no engine's answer: not applicable, switched off by ops, or the parser's own
# "could not scan all of it" (pseudo-engine mime). They neither answer nor disagree.
_NO_ANSWER = FAILED | {"skipped", "disabled", "unscannable"}
_GROWTH = 1.12  # histogram bucket ratio: percentiles within about 12 %


def bucket(ms: float) -> int:
    """Histogram bucket of a latency in milliseconds (bucket 0 holds everything under 0.1)."""
    if ms < 0.1:
        return 0
    return 1 + int(math.log(ms / 0.1, _GROWTH))


def _bucket_upper(b: int) -> float:
    return 0.1 * _GROWTH**b


def facts(scanned: schemas.MessageScanned, window: float) -> list[dict[str, Any]]:
    """One fact per verdict of a MessageScanned: what to add to the engine's counters."""
    start = int(scanned.scanned_at.timestamp() // window * window)
    verdicts = scanned.verdicts
    out = []
    for i, v in enumerate(verdicts):
        others = [
            w
            for j, w in enumerate(verdicts)
            if j != i and not w.shadow and w.outcome not in _NO_ANSWER
        ]
        detected = v.outcome in DETECTED
        answered = v.outcome not in _NO_ANSWER
        yes = sum(w.outcome in DETECTED for w in others)
        majority = yes * 2 > len(others)
        out.append(
            {
                "engine": v.engine,
                "shadow": v.shadow,
                "window": start,
                "detected": detected,
                "answered": answered,
                "unique": detected and yes == 0,
                "disagree": answered and bool(others) and detected != majority,
                "error": v.outcome == "error",
                "timeout": v.outcome == "timeout",
                "bucket": bucket(v.duration_ms),
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
            hist = sorted((int(k[4:]), n) for k, n in c.items() if k.startswith("lat:"))
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


def window_sizes(settings: Settings) -> tuple[float, ...]:
    """The window lengths counted: the configured one and a day (ops' daily figure)."""
    return tuple(sorted({float(settings.ops.scoreboard_window), DAY}))


def window_label(seconds: float) -> str:
    """``3600`` -> ``1h``, ``86400`` -> ``1d``, ``900`` -> ``15m``; else ``<n>s``."""
    for unit, n in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= n and seconds % n == 0:
            return f"{int(seconds // n)}{unit}"
    return f"{seconds:g}s"


def table_keys(
    scanned: schemas.MessageScanned, sizes: Sequence[float], partition: int
) -> list[str]:
    """The table keys (``size|engine|window|counter|partition``) one decision adds 1 to.

    The input partition ends the key so that no two partitions ever write the same key: faust
    keeps each partition's keys in that partition's store and changelog, and reads a key from
    whichever store has it, so a shared key would be read from one partition and written to
    another."""
    keys: list[str] = []
    for size in sizes:
        for f in facts(scanned, size):
            keys.extend(f"{size:g}|{k}|{partition}" for k in counter_keys(f))
    return keys


def board(items: Iterable[tuple[str, int]], sizes: Sequence[float]) -> dict[str, Any]:
    """The scoreboard as JSON, from the table's items (summed over partitions)::

        {"windows": {"1h": {"seconds": 3600.0, "engines": {engine: {window start: figures}}},
                     "1d": {...}}}

    Every counted window length is listed, with no engines until a decision arrives.
    """
    by_size: dict[str, Counter[str]] = defaultdict(Counter)
    for key, n in items:
        size_key, rest = key.split("|", 1)
        by_size[size_key][rest.rsplit("|", 1)[0]] += int(n)
    out: dict[str, Any] = {}
    for size in sizes:
        counters = by_size.get(f"{size:g}", Counter())
        out[window_label(size)] = {"seconds": size, **summarize(counters.items())}
    return {"windows": out}


class ScoreboardUnavailable(RuntimeError):
    """No scoreboard worker answered, or it answered with an error; the message says which."""


def fetch_stats(base_url: str, timeout: float = 10.0) -> dict[str, Any]:
    """``GET <base_url>/stats`` from a running scoreboard worker."""
    url = f"{base_url.rstrip('/')}/stats"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return dict(json.load(r))
    except urllib.error.HTTPError as e:  # before URLError: it is one
        body = e.read().decode(errors="replace")[:500]
        raise ScoreboardUnavailable(f"the scoreboard at {url} answered {e.code}: {body}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ScoreboardUnavailable(
            f"no scoreboard worker answers at {url} ({reason}): is `mxgate scoreboard run` "
            "running, with the same MXGATE_OPS__SCOREBOARD_HOST / _PORT (or _URL)?"
        ) from e
    except ValueError as e:
        raise ScoreboardUnavailable(f"the scoreboard at {url} sent no JSON: {e}") from e


def _credentials(k: KafkaSettings) -> Any:
    """The bus credentials of ``k`` as faust (aiokafka) takes them; None for PLAINTEXT."""
    import ssl

    import faust

    ctx = None
    if k.security_protocol.endswith("SSL"):
        ctx = ssl.create_default_context(
            cafile=str(k.ssl_ca_location) if k.ssl_ca_location else None
        )
        if k.ssl_certificate_location and k.ssl_key_location:
            ctx.load_cert_chain(k.ssl_certificate_location, k.ssl_key_location)
    if k.security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password.get_secret_value(),
            mechanism=k.sasl_mechanism,
            ssl_context=ctx,
        )
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None


def make_app(settings: Settings) -> faust.App:
    """The scoreboard app for ``settings`` (topic prefix, state path, port, window)."""
    # faust is imported here: `mxgate engines stats` and the pure helpers above need none of
    # its (slow) import.
    import faust
    from faust.web import Request, Response, View

    k = settings.kafka
    app_id = catalog.scoreboard_app(k.topic_prefix, k.group_prefix)  # its ACLs are named so
    datadir = settings.ops.state_path / "scoreboard"
    datadir.mkdir(parents=True, exist_ok=True)
    partitions = catalog.SCANNED.partitions or k.partitions
    app = faust.App(
        app_id,
        broker=",".join(f"kafka://{b}" for b in k.bootstrap_servers.split(",")),
        store="rocksdb://",
        datadir=str(datadir),
        # Counter updates and input offsets in one transaction; reads only committed input.
        processing_guarantee="exactly_once",
        topic_partitions=partitions,
        # faust creates its changelog topic itself (through the admin API, which works where
        # auto.create.topics.enable is off), with our replication factor.
        topic_replication_factor=k.replication_factor,
        broker_credentials=_credentials(k),
        # web_bind is the listening address; web_host only names the worker in URLs.
        web_bind=settings.ops.scoreboard_host,
        web_host=settings.ops.scoreboard_host,
        web_port=settings.ops.scoreboard_port,
        web_in_thread=False,
        consumer_auto_offset_reset="earliest",
        topic_disable_leader=True,
    )
    sizes = window_sizes(settings)
    scanned = app.topic(
        catalog.name(catalog.SCANNED, k.topic_prefix),
        # Our values are Avro single-object encoded: faust hands over the bytes, we decode.
        value_serializer="raw",
        key_serializer="raw",
        internal=False,
    )
    table = app.Table(
        "engine-counters",
        default=int,
        partitions=partitions,
        options={"driver": "rocksdict"},  # rocksdict is what we ship; python-rocksdb is not
    )

    @app.agent(scanned)
    async def count(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            try:
                decided = schemas.decode_event(event.value)
            except schemas.SchemaError:
                continue  # not ours to judge: the scanner logs undecodable input
            if not isinstance(decided, schemas.MessageScanned):
                continue
            for key in table_keys(decided, sizes, event.message.partition):
                table[key] += 1

    @app.page("/stats")
    class Stats(View):
        async def get(self, request: Request) -> Response:
            return self.json(board(table.items(), sizes))

    app.scoreboard_table = table  # type: ignore[attr-defined]
    return app


def run(settings: Settings) -> None:
    """Run the scoreboard worker in the foreground (Ctrl-C / SIGTERM stop it)."""
    from faust.worker import Worker

    app = make_app(settings)
    Worker(app, loglevel=settings.log_level.upper()).execute_from_commandline()
