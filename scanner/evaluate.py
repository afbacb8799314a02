"""Judge engines on labelled mail: ``mxgate evaluate --ham DIR --spam DIR``.

Every message is parsed once and given to every engine, as the scanner does. Per engine and
for the combined verdict (the policy's weighted spam score against its tag threshold) it
reports detection rate, false-positive rate, precision, errors, p50/p99 time and the spam
only that engine caught. In-process engines are also timed in CPU (thread time; they do their
work without yielding), which is how the 10 ms/message budget is checked.

Folders are maildirs or one file per message; an mbox ``From `` first line is dropped.
:func:`split` holds part of a corpus out by a hash of each file's name, so ``mxgate train`` and
``mxgate evaluate`` agree on which messages are for training and which for testing.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mxgate.tenants import Policy
from scanner import mime
from scanner.combiner import SpamModel
from scanner.engines.common import Engine, Finding, ParsedMessage, failure
from scanner.policy import decide

__all__ = [
    "EXTERNAL_ENGINES",
    "Labelled",
    "Report",
    "evaluate",
    "html_chart",
    "load_corpus",
    "split",
]

EXTERNAL_ENGINES = frozenset({"spamassassin", "rspamd"})
"""Engines that are other processes (not counted as in-process)."""


@dataclass(frozen=True, slots=True)
class Labelled:
    """One corpus message."""

    name: str
    raw: bytes
    is_spam: bool
    hard: bool = False
    """Hard ham: legitimate mail that looks like spam (newsletters, offers), counted apart."""


def read_message(path: Path) -> bytes:
    """The message in ``path`` without an mbox ``From `` first line."""
    data = path.read_bytes()
    if data.startswith(b"From "):
        _, _, data = data.partition(b"\n")
    return data


def _files(folder: Path) -> Iterator[Path]:
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts):
            if p.name in ("cmds",):  # the SpamAssassin corpus's index file
                continue
            yield p


def in_holdout(name: str, percent: int) -> bool:
    """Whether ``name`` belongs to the held-out ``percent`` (deterministic)."""
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") % 100
    return h < percent


def load_corpus(ham: Path, spam: Path, hard_ham: Path | None = None) -> list[Labelled]:
    """Every message of the folders: ham, then hard ham (if given), then spam."""
    out = [Labelled(f"ham/{p.name}", read_message(p), False) for p in _files(ham)]
    if hard_ham is not None:
        out += [
            Labelled(f"hard_ham/{p.name}", read_message(p), False, True) for p in _files(hard_ham)
        ]
    out += [Labelled(f"spam/{p.name}", read_message(p), True) for p in _files(spam)]
    return out


def split(corpus: Sequence[Labelled], holdout: int) -> tuple[list[Labelled], list[Labelled]]:
    """(training part, held-out part), by a hash of each message's name.

    ``holdout=0`` means no split: both parts are the whole corpus (``train`` learns
    everything, ``evaluate`` judges everything).
    """
    if holdout == 0:
        return list(corpus), list(corpus)
    train = [m for m in corpus if not in_holdout(m.name, holdout)]
    test = [m for m in corpus if in_holdout(m.name, holdout)]
    return train, test


@dataclass
class _Stats:
    ham: int = 0
    spam: int = 0
    caught: int = 0
    flagged_ham: int = 0
    hard_ham: int = 0
    flagged_hard: int = 0
    errors: int = 0
    skipped: int = 0
    times_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    only: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float | None:
            if not values:
                return None
            s = sorted(values)
            return round(s[min(len(s) - 1, int(q * len(s)))], 3)

        flagged = self.caught + self.flagged_ham
        easy = self.ham - self.hard_ham
        out: dict[str, Any] = {
            "detection_rate": round(self.caught / self.spam, 4) if self.spam else None,
            "false_positive_rate": round(self.flagged_ham / self.ham, 4) if self.ham else None,
            "easy_ham_fpr": (
                round((self.flagged_ham - self.flagged_hard) / easy, 5) if easy else None
            ),
            "hard_ham_fpr": (
                round(self.flagged_hard / self.hard_ham, 5) if self.hard_ham else None
            ),
            "precision": round(self.caught / flagged, 4) if flagged else None,
            "spam": self.spam,
            "ham": self.ham,
            "caught": self.caught,
            "false_positives": self.flagged_ham,
            "hard_ham": self.hard_ham,
            "hard_false_positives": self.flagged_hard,
            "errors": self.errors,
            "skipped": self.skipped,
            "p50_ms": pct(self.times_ms, 0.50),
            "p99_ms": pct(self.times_ms, 0.99),
            "only_caught": len(self.only),
            "only_caught_examples": self.only[:10],
        }
        if self.cpu_ms:
            out["cpu_ms_mean"] = round(statistics.fmean(self.cpu_ms), 3)
            out["cpu_ms_p99"] = pct(self.cpu_ms, 0.99)
        return out


Report = dict[str, dict[str, Any]]


async def _timed(engine: Engine, msg: ParsedMessage, timeout: float) -> tuple[Finding, float]:
    """The engine's finding, and the CPU (ms) it used on this thread."""
    cpu0, t0 = time.thread_time(), time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            f = await engine.check(msg)
    except TimeoutError:
        f = failure(
            engine, "timeout", f"no answer within {timeout:g}s", (time.perf_counter() - t0) * 1000
        )
    except Exception as e:
        f = failure(engine, "error", repr(e), (time.perf_counter() - t0) * 1000)
    cpu = (time.thread_time() - cpu0) * 1000
    return f.__class__(**{**_fields(f), "duration_ms": (time.perf_counter() - t0) * 1000}), cpu


def _fields(f: Finding) -> dict[str, Any]:
    return {k: getattr(f, k) for k in f.__slots__}


async def evaluate(
    engines: Sequence[Engine],
    messages: Sequence[Labelled],
    policy: Policy,
    *,
    timeout: float = 20.0,
    concurrency: int = 4,
    progress: Callable[[], None] | None = None,
    spam_model: SpamModel | None = None,
    missing: Sequence[str] = (),
) -> Report:
    """Run ``engines`` on ``messages``; per-engine and combined statistics.

    ``combined`` is the policy's spam verdict: the ``spam_model`` combiner at the policy's
    ``spam_target_fpr`` when one is given (then ``combined_score_sum`` shows the fallback
    score rule too), else the score rule. For each engine in ``missing`` a row
    ``combined_without_<engine>`` judges the same mail as if that engine had timed out.
    Every row also has ``roc``: (threshold, spam caught, easy-ham FPR, hard-ham FPR) points
    of its score (the combiner: its probability). An empty ``messages`` is a ValueError.
    """
    if not messages:
        raise ValueError("no messages to evaluate")
    names = [e.name for e in engines]
    inproc = [e for e in engines if e.name not in EXTERNAL_ENGINES]
    external = [e for e in engines if e.name in EXTERNAL_ENGINES]
    stats = {n: _Stats() for n in names}
    combined = _Stats()
    combined_in = _Stats()
    summed = _Stats()
    without = {n: _Stats() for n in missing}
    scored: dict[str, list[tuple[Labelled, float]]] = {n: [] for n in [*names, "combined"]}
    by_name = {e.name: e for e in engines}
    sem = asyncio.Semaphore(concurrency)

    def verdict(fs: list[Finding]) -> tuple[bool, float]:
        d = decide(fs, policy, spam_model=spam_model)
        score = d.spam_probability if d.spam_probability is not None else d.spam_score
        return d.action != "deliver", score

    async def one(i: int, m: Labelled) -> None:
        async with sem:
            msg = mime.parse(m.raw, message_id=f"eval-{i}", tenant="evaluate")
            findings: dict[str, Finding] = {}
            cpu: dict[str, float] = {}
            ext = asyncio.gather(*(_timed(e, msg, timeout) for e in external))
            # In-process engines one after another on this thread, so their CPU is their own.
            for e in inproc:
                findings[e.name], cpu[e.name] = await _timed(e, msg, timeout)
            for e, (f, _) in zip(external, await ext, strict=True):
                findings[e.name] = f
            caught_by = []
            for n in names:
                f, s = findings[n], stats[n]
                s.times_ms.append(f.duration_ms)
                if n in cpu:
                    s.cpu_ms.append(cpu[n])
                if f.outcome in ("error", "timeout"):
                    s.errors += 1
                elif f.outcome == "skipped":
                    s.skipped += 1
                hit = f.outcome in ("spam", "match", "infected")
                _count(s, m, hit)
                scored[n].append((m, f.score))
                if hit and m.is_spam:
                    caught_by.append(n)
            if len(caught_by) == 1:
                stats[caught_by[0]].only.append(m.name)
            all_f = [findings[n] for n in names]
            cpu0 = time.thread_time()
            flagged, score = verdict(all_f)
            decide_ms = (time.thread_time() - cpu0) * 1000
            _count(combined, m, flagged)
            scored["combined"].append((m, score))
            combined.cpu_ms.append(sum(cpu.values()) + decide_ms)
            combined.times_ms.append(decide_ms)
            if spam_model is not None:
                _count(summed, m, decide(all_f, policy).action != "deliver")
            for gone, st in without.items():
                lost = failure(by_name[gone], "timeout", "evaluate: simulated outage", 0.0)
                _count(st, m, verdict([lost if f.engine == gone else f for f in all_f])[0])
            if external:
                in_f = [findings[e.name] for e in inproc]
                _count(combined_in, m, verdict(in_f)[0])
                combined_in.cpu_ms.append(sum(cpu.values()))
            if progress is not None:
                progress()

    await asyncio.gather(*(one(i, m) for i, m in enumerate(messages)))
    report: Report = {n: {**stats[n].as_dict(), "roc": roc(scored[n])} for n in names}
    report["combined"] = {**combined.as_dict(), "roc": roc(scored["combined"])}
    if spam_model is not None:
        report["combined"]["spam_model"] = spam_model.version
        report["combined"]["operating_point"] = {
            "spam_target_fpr": policy.spam_target_fpr,
            "threshold": spam_model.threshold(policy.spam_target_fpr)[1],
        }
        report["combined_score_sum"] = summed.as_dict()
    for gone, st in without.items():
        report[f"combined_without_{gone}"] = st.as_dict()
    if external:
        report["combined_inprocess"] = combined_in.as_dict()
    return report


def _count(s: _Stats, m: Labelled, hit: bool) -> None:
    if m.is_spam:
        s.spam += 1
        s.caught += hit
    else:
        s.ham += 1
        s.flagged_ham += hit
        if m.hard:
            s.hard_ham += 1
            s.flagged_hard += hit


def roc(scored: Sequence[tuple[Labelled, float]], points: int = 60) -> list[dict[str, float]]:
    """ROC points of a score: flagged at ``score >= threshold``, each point (threshold,
    spam caught, easy-ham FPR, hard-ham FPR); every point where few ham are flagged (where
    operating points lie), evenly spaced ones after, at most ``points`` of those."""
    by_score = sorted(scored, key=lambda t: -t[1])
    n_spam = sum(1 for m, _ in scored if m.is_spam) or 1
    n_easy = sum(1 for m, _ in scored if not m.is_spam and not m.hard) or 1
    n_hard = sum(1 for m, _ in scored if m.hard) or 1
    out: list[dict[str, float]] = []
    tp = fe = fh = 0
    step = max(1, len(by_score) // points)
    for i, (m, score) in enumerate(by_score):
        tp += m.is_spam
        fe += not m.is_spam and not m.hard
        fh += m.hard
        last = i == len(by_score) - 1
        corner = fe + fh < 30 and not last and not by_score[i + 1][0].is_spam
        if (i % step == 0 or last or corner) and (last or by_score[i + 1][1] != score):
            out.append(
                {
                    "threshold": round(score, 6),
                    "tpr": round(tp / n_spam, 5),
                    "easy_fpr": round(fe / n_easy, 5),
                    "hard_fpr": round(fh / n_hard, 5),
                }
            )
    return out


def table_rows(report: Report) -> list[list[str]]:
    """Rows for a text table: name, DR, FPR (all / easy / hard), precision, errors, p50, p99,
    CPU, only."""

    def f(v: Any, pct: bool = False) -> str:
        if v is None:
            return "-"
        return f"{v * 100:.2f}%" if pct else f"{v:g}"

    rows = []
    for name, r in report.items():
        rows.append(
            [
                name,
                f(r["detection_rate"], True),
                f(r["false_positive_rate"], True),
                f(r.get("easy_ham_fpr"), True),
                f(r.get("hard_ham_fpr"), True),
                f(r["precision"], True),
                str(r["errors"]),
                f(r["p50_ms"]),
                f(r["p99_ms"]),
                f(r.get("cpu_ms_mean")),
                str(r["only_caught"]),
            ]
        )
    return rows


TABLE_HEADER = [
    "engine",
    "detection",
    "FPR",
    "easy-ham FPR",
    "hard-ham FPR",
    "precision",
    "errors",
    "p50 ms",
    "p99 ms",
    "CPU ms/msg",
    "only it caught",
]

_COLOURS = ("#2b7bb9", "#d9534f", "#5cb85c", "#f0ad4e", "#8e44ad", "#555555", "#17a2b8")


def _roc_svg(report: Report, which: str) -> str:
    """ROC curves (spam caught against ``which`` FPR, log scale 1e-4..1) of every row."""
    left, top, w, h = 60, 20, 520, 320
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + w + 200}" height="{top + h + 50}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#999"/>',
    ]

    def x(fpr: float) -> float:
        return left + (math.log10(max(fpr, 1e-4)) + 4) / 4 * w

    def y(tpr: float) -> float:
        return top + (1 - tpr) * h

    for e in range(-4, 1):
        parts.append(
            f'<text x="{x(10.0**e) - 12:.1f}" y="{top + h + 16}">1e{e}</text>'
            f'<line x1="{x(10.0**e):.1f}" y1="{top}" x2="{x(10.0**e):.1f}" y2="{top + h}" '
            'stroke="#eee"/>'
        )
    for t in (0.0, 0.5, 1.0):
        parts.append(f'<text x="{left - 34}" y="{y(t) + 4:.1f}">{t * 100:.0f}%</text>')
    parts.append(
        f'<text x="{left + w / 2 - 60}" y="{top + h + 36}">{which} ham flagged (log)</text>'
    )
    curves = [(n, r["roc"]) for n, r in report.items() if r.get("roc")]
    for i, (name, points) in enumerate(curves):
        colour = _COLOURS[i % len(_COLOURS)]
        xy = " ".join(f"{x(p[f'{which}_fpr']):.1f},{y(p['tpr']):.1f}" for p in points)
        parts.append(f'<polyline points="{xy}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(
            f'<text x="{left + w + 10}" y="{top + 14 + 16 * i}" fill="{colour}">'
            f"{html.escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def html_chart(report: Report, title: str = "mxgate evaluate") -> str:
    """A self-contained HTML page: detection and false-positive rate bars per row, and ROC
    curves against easy-ham and hard-ham false-positive rates (SVG)."""
    rows = list(report.items())
    bar_h, gap, left, width = 14, 12, 170, 500
    height = len(rows) * (2 * bar_h + gap) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" '
        f'height="{height}" font-family="sans-serif" font-size="12">'
    ]
    y = 30
    for name, r in rows:
        dr = r["detection_rate"] or 0.0
        fpr = r["false_positive_rate"] or 0.0
        parts.append(f'<text x="0" y="{y + bar_h + 4}">{html.escape(name)}</text>')
        parts.append(
            f'<rect x="{left}" y="{y}" width="{dr * width:.1f}" height="{bar_h}" '
            f'fill="#2b7bb9"/><text x="{left + dr * width + 4:.1f}" y="{y + 11}">'
            f"detection {dr * 100:.1f}%</text>"
        )
        y2 = y + bar_h
        parts.append(
            f'<rect x="{left}" y="{y2}" width="{fpr * width:.1f}" height="{bar_h}" '
            f'fill="#d9534f"/><text x="{left + fpr * width + 4:.1f}" y="{y2 + 11}">'
            f"FPR {fpr * 100:.2f}%</text>"
        )
        y += 2 * bar_h + gap
    parts.append("</svg>")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"</head><body><h1>{html.escape(title)}</h1>{''.join(parts)}"
        f"<h2>ROC: easy ham</h2>{_roc_svg(report, 'easy')}"
        f"<h2>ROC: hard ham</h2>{_roc_svg(report, 'hard')}"
        f"<pre>{html.escape(json.dumps(report, indent=2))}</pre></body></html>"
    )
