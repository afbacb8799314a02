"""Teach every learning engine at once: ``mxgate train --ham DIR --spam DIR``.

Learners: the in-process Bayes (always; its rocksdict store is opened for writing) and the
enabled external engines that can learn (SpamAssassin through spamd's TELL, rspamd through its
controller's ``/learnspam`` and ``/learnham``). Release and report-as-spam events are meant to
feed :func:`learn_messages` too.

A learner may decline a message without failing (rspamd: already learnt, or too few words to
learn from); those are counted as ``skipped``, apart from ``errors``, which fail the command.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mxgate.settings import ScannerSettings
from scanner import mime
from scanner.bayes_store import BayesStore
from scanner.combiner import (
    FPR_TARGETS,
    MODEL_ENGINES,
    Row,
    SpamModel,
    features,
    fit_logistic,
    fold_of,
    threshold_for_fpr,
)
from scanner.engines.bayes import BayesEngine, tokenize
from scanner.engines.common import Finding, ParsedMessage
from scanner.evaluate import Labelled, roc

__all__ = ["learn_messages", "out_of_fold_bayes", "score_messages", "train_combiner"]

_LEARNERS = ("spamassassin", "rspamd")


async def learn_messages(
    settings: ScannerSettings,
    messages: Sequence[Labelled],
    *,
    engines: Sequence[str] | None = None,
    progress: Callable[[], None] | None = None,
    concurrency: int = 4,
    bulk: bool = True,
) -> dict[str, Any]:
    """Learn ``messages`` into the Bayes store and each external learner; returns counts.

    ``bulk`` (a corpus, as ``mxgate train`` gives): rspamd learns every message, not only
    those its Bayes does not already classify; single corrections (release, report-as-spam)
    pass ``bulk=False`` so rspamd skips what it already knows.
    """
    from scanner.engines.registry import ENGINES

    wanted = list(engines if engines is not None else settings.engines)
    externals = [ENGINES[n].build(settings) for n in _LEARNERS if n in wanted]
    errors: dict[str, int] = {e.name: 0 for e in externals}
    skipped: dict[str, int] = {e.name: 0 for e in externals}
    first_error: dict[str, str] = {}
    parsed = []
    for i, m in enumerate(messages):
        parsed.append((mime.parse(m.raw, message_id=f"train-{i}", tenant="train"), m.is_spam))
    store = BayesStore(settings.spam.bayes_path)
    try:
        learnt = store.learn((list(tokenize(p)), s) for p, s in parsed)
        totals = store.totals()
    finally:
        store.close()
    sem = asyncio.Semaphore(concurrency)

    async def one(p: ParsedMessage, is_spam: bool) -> None:
        async with sem:
            for e in externals:
                try:
                    if e.name == "rspamd":  # the one learner with a bulk mode
                        took = await e.learn(p, is_spam, bulk=bulk)  # type: ignore[attr-defined]
                    else:
                        took = await e.learn(p, is_spam)  # type: ignore[attr-defined]
                except Exception as exc:
                    errors[e.name] += 1
                    # One example is enough to tell a down daemon from a bad password.
                    first_error.setdefault(e.name, repr(exc)[:300])
                else:
                    # None: a learner that does not say (spamd's TELL), so it learnt.
                    skipped[e.name] += took is False
            if progress is not None:
                progress()

    try:
        await asyncio.gather(*(one(p, s) for p, s in parsed))
    finally:
        for e in externals:
            await e.aclose()
    return {
        "bayes": {"learnt": learnt, "spam_total": totals[0], "ham_total": totals[1]},
        **{
            n: {
                "learnt": len(parsed) - errors[n] - skipped[n],
                "skipped": skipped[n],
                "errors": errors[n],
                **({"first_error": first_error[n]} if n in first_error else {}),
            }
            for n in errors
        },
    }


async def score_messages(
    settings: ScannerSettings,
    messages: Sequence[Labelled],
    engines: Sequence[str],
    *,
    concurrency: int = 4,
    progress: Callable[[], None] | None = None,
) -> list[dict[str, Finding]]:
    """Each message's findings by ``engines`` (spamd, rspamd), for :func:`train_combiner`.

    ``mxgate train`` calls it *before* teaching the daemons the corpus, so the combiner
    learns from scores they give mail they have not been taught (in-sample, a daemon's Bayes
    would look nearly infallible). A daemon that fails on a message gives an ``error``
    finding: the combiner learns it as missing.
    """
    from scanner.engines.common import failure
    from scanner.engines.registry import ENGINES

    built = [ENGINES[n].build(settings) for n in engines]
    sem = asyncio.Semaphore(concurrency)
    out: list[dict[str, Finding]] = [{} for _ in messages]

    async def one(i: int, m: Labelled) -> None:
        async with sem:
            p = mime.parse(m.raw, message_id=f"train-{i}", tenant="train")
            for e in built:
                try:
                    out[i][e.name] = await e.check(p)
                except Exception as exc:
                    out[i][e.name] = failure(e, "error", repr(exc)[:300], 0.0)
            if progress is not None:
                progress()

    try:
        await asyncio.gather(*(one(i, m) for i, m in enumerate(messages)))
    finally:
        for e in built:
            await e.aclose()
    return out


class _Counts:
    """Token counts in memory, shaped like :class:`BayesStore` for :class:`BayesEngine`."""

    def __init__(self, spam: Counter[str], ham: Counter[str], nspam: int, nham: int) -> None:
        self._spam, self._ham, self._n = spam, ham, (nspam, nham)

    def totals(self) -> tuple[int, int]:
        return self._n

    def counts(self, tokens: list[str]) -> list[tuple[int, int]]:
        return [(self._spam[t], self._ham[t]) for t in tokens]

    def close(self) -> None:
        pass


class _FoldBayes(BayesEngine):
    """The real Bayes engine over in-memory counts (one cross-validation fold's training)."""

    def __init__(self, counts: _Counts, min_trained: int) -> None:  # no rocksdict
        self._store = counts  # type: ignore[assignment]
        self._min = min_trained


async def out_of_fold_bayes(
    parsed: Sequence[ParsedMessage],
    labels: Sequence[bool],
    folds: Sequence[int],
    k: int,
    min_trained: int,
) -> list[Finding]:
    """Each message's Bayes finding from a Bayes trained on the other ``k - 1`` folds only.

    A combiner learnt on the Bayes scores of messages Bayes was trained on would learn an
    over-confident Bayes (in-sample it is nearly always right); out of fold, its scores look
    like the ones it gives new mail.
    """
    tokens = [set(tokenize(p)) for p in parsed]
    spam_all: Counter[str] = Counter()
    ham_all: Counter[str] = Counter()
    by_fold = [(Counter[str](), Counter[str]()) for _ in range(k)]
    n = [[0, 0] for _ in range(k)]
    for t, is_spam, f in zip(tokens, labels, folds, strict=True):
        (spam_all if is_spam else ham_all).update(t)
        by_fold[f][0 if is_spam else 1].update(t)
        n[f][0 if is_spam else 1] += 1
    out: list[Finding | None] = [None] * len(parsed)
    nspam, nham = sum(labels), len(labels) - sum(labels)
    for f in range(k):
        counts = _Counts(
            spam_all - by_fold[f][0], ham_all - by_fold[f][1], nspam - n[f][0], nham - n[f][1]
        )
        engine = _FoldBayes(counts, min_trained)
        for i, p in enumerate(parsed):
            if folds[i] == f:
                out[i] = await engine.check(p)
    return [x for x in out if x is not None]


@dataclass
class _Sample:
    name: str
    is_spam: bool
    hard: bool
    fold: int
    feats: dict[str, float]
    findings: list[Finding]


def _labelled(s: _Sample) -> Labelled:
    return Labelled(s.name, b"", s.is_spam, s.hard)


def _weight(s: _Sample, hard_weight: float) -> float:
    return hard_weight if s.hard else 1.0


def _masked(feats: dict[str, float], engine: str) -> dict[str, float]:
    return {k: v for k, v in feats.items() if not k.startswith(f"{engine}:")}


def _fit(
    samples: Sequence[_Sample],
    names: Sequence[str],
    engines: Sequence[str],
    *,
    hard_weight: float,
    l2: float,
    dropout: float,
) -> tuple[float, list[float]]:
    """Fit on ``samples`` plus, per engine, a copy of each with that engine missing (weight
    ``dropout / len(engines)``), so the model learns what a missing engine means."""
    index = {n: i for i, n in enumerate(names)}
    rows: list[Row] = []
    labels: list[bool] = []
    weights: list[float] = []

    def add(feats: dict[str, float], s: _Sample, w: float) -> None:
        rows.append(sorted((index[k], v) for k, v in feats.items() if k in index))
        labels.append(s.is_spam)
        weights.append(w)

    for s in samples:
        w = _weight(s, hard_weight)
        add(s.feats, s, w)
        for e in engines:
            if len(engines) > 1 and dropout > 0:
                add(_masked(s.feats, e), s, w * dropout / len(engines))
    return fit_logistic(rows, labels, weights, len(names), l2=l2 * sum(weights) / 1000.0)


def _prob(
    bias: float, beta: Sequence[float], names: Sequence[str], feats: dict[str, float]
) -> float:
    index = {n: i for i, n in enumerate(names)}
    z = bias + sum(beta[index[k]] * v for k, v in feats.items() if k in index)
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


def _rates(flags: Sequence[tuple[_Sample, bool]]) -> dict[str, Any]:
    spam = [f for s, f in flags if s.is_spam]
    easy = [f for s, f in flags if not s.is_spam and not s.hard]
    hard = [f for s, f in flags if s.hard]

    def rate(v: list[bool]) -> float | None:
        return round(sum(v) / len(v), 5) if v else None

    return {
        "spam_caught": rate(spam),
        "easy_ham_fpr": rate(easy),
        "hard_ham_fpr": rate(hard),
        "caught": sum(spam),
        "easy_ham_flagged": sum(easy),
        "hard_ham_flagged": sum(hard),
        "spam": len(spam),
        "easy_ham": len(easy),
        "hard_ham": len(hard),
    }


def _oof(
    samples: Sequence[_Sample],
    folds: Sequence[int],
    k: int,
    names: Sequence[str],
    engines: Sequence[str],
    **fit: Any,
) -> list[float]:
    """Each sample's combiner probability from a model fitted on the other folds."""
    out = [0.0] * len(samples)
    for f in range(k):
        train = [s for s, g in zip(samples, folds, strict=True) if g != f]
        bias, beta = _fit(train, names, engines, **fit)
        for i, s in enumerate(samples):
            if folds[i] == f:
                out[i] = _prob(bias, beta, names, s.feats)
    return out


def _thresholds(
    samples: Sequence[_Sample], probs: Sequence[float], hard_weight: float
) -> dict[float, float]:
    ham = [
        (p, _weight(s, hard_weight)) for s, p in zip(samples, probs, strict=True) if not s.is_spam
    ]
    return {t: threshold_for_fpr(ham, t) for t in FPR_TARGETS}


def _vocabulary(samples: Sequence[_Sample], engines: Sequence[str], max_symbols: int) -> list[str]:
    """Per engine its answered/score features, plus the symbols common enough to learn from
    (in at least 2% of the messages, the most frequent ``max_symbols``)."""
    support: Counter[str] = Counter()
    for s in samples:
        support.update(k for k in s.feats if ":sym:" in k)
    floor = max(10, len(samples) // 50)
    syms = [k for k, c in support.most_common() if c >= floor][:max_symbols]
    seen = {k for s in samples for k in s.feats}
    base = [f"{e}:{what}" for e in engines for what in ("answered", "score", "logit")]
    return [b for b in base if b in seen] + sorted(syms)


async def train_combiner(
    settings: ScannerSettings,
    messages: Sequence[Labelled],
    *,
    engines: Sequence[str] | None = None,
    k: int = 5,
    hard_ham_weight: float = 10.0,
    l2: float = 1.0,
    dropout: float = 0.5,
    max_symbols: int = 40,
    progress: Callable[[str], None] | None = None,
    findings: Sequence[Mapping[str, Finding]] | None = None,
    abstaining: Sequence[str] = (),
) -> SpamModel:
    """Learn the spam combiner over the in-process antispam engines, by ``k``-fold CV.

    Bayes' features are out of fold (:func:`out_of_fold_bayes`); heuristics learn nothing, so
    their findings are used as they are. spamd and rspamd join only through ``findings``
    (each message's findings by engine, scored before this corpus taught them: a daemon's
    in-sample score would be over-confident); without them they are left out.
    ``abstaining``: engines the model lists with no feature, because they abstain on every
    training message (an untaught Bayes in the packaged default model): their findings then
    neither count in the model nor fall back to the score rule. The probability thresholds
    for :data:`FPR_TARGETS` are taken from out-of-fold combiner probabilities on ham, a hard
    ham counting ``hard_ham_weight`` easy ones. ``summary["cv"]`` holds nested
    cross-validated figures (thresholds chosen without the fold they are measured on), per
    engine and combined.
    """
    from scanner.engines.registry import ENGINES

    say = progress or (lambda _msg: None)
    wanted = list(engines if engines is not None else settings.engines)
    given = set(findings[0]) if findings else set()
    usable = {*_INPROCESS, *given}
    model_engines = [
        e for e in MODEL_ENGINES if e in wanted and e in usable and e not in abstaining
    ]
    if not model_engines:
        raise ValueError(f"no engine for the combiner: enable one of {list(_INPROCESS)}")
    others = [e for e in _INPROCESS_REPORTED if e in wanted]
    built = {
        n: ENGINES[n].build(settings)
        for n in [*model_engines, *others]
        if n != "bayes" and n not in given
    }
    say("parsing")
    parsed = [
        mime.parse(m.raw, message_id=f"train-{i}", tenant="train") for i, m in enumerate(messages)
    ]
    labels = [m.is_spam for m in messages]
    folds = [fold_of(m.name, k) for m in messages]
    found: list[dict[str, Finding]] = (
        [dict(d) for d in findings] if findings else [{} for _ in messages]
    )
    if "bayes" in model_engines:
        say("bayes out of fold")
        oof = await out_of_fold_bayes(parsed, labels, folds, k, settings.spam.bayes_min_trained)
        for d, f in zip(found, oof, strict=True):
            d["bayes"] = f
    say("other engines")
    for name, engine in built.items():
        for d, p in zip(found, parsed, strict=True):
            d[name] = await engine.check(p)
        await engine.aclose()
    samples = [
        _Sample(
            m.name, m.is_spam, m.hard, g,
            features([d[e] for e in model_engines if e in d], model_engines),
            list(d.values()),
        )
        for m, g, d in zip(messages, folds, found, strict=True)
    ]  # fmt: skip
    names = _vocabulary(samples, model_engines, max_symbols)
    fit = {"hard_weight": hard_ham_weight, "l2": l2, "dropout": dropout}
    say("cross-validating the combiner")
    probs = _oof(samples, folds, k, names, model_engines, **fit)
    thresholds = _thresholds(samples, probs, hard_ham_weight)
    say("nested cross-validation")
    cv = _nested_cv(samples, folds, k, names, model_engines, fit, hard_ham_weight)
    say("final fit")
    bias, beta = _fit(samples, names, model_engines, **fit)
    return SpamModel(
        engines=(*model_engines, *(e for e in abstaining if e not in model_engines)),
        feature_names=tuple(names),
        bias=bias,
        weights=tuple(beta),
        thresholds=thresholds,
        summary={
            "messages": len(samples),
            "spam": sum(labels),
            "easy_ham": sum(1 for s in samples if not s.is_spam and not s.hard),
            "hard_ham": sum(1 for s in samples if s.hard),
            "folds": k,
            "hard_ham_weight": hard_ham_weight,
            "l2": l2,
            "dropout": dropout,
            "bayes_features": "out of fold",
            "cv": cv,
        },
    )


_INPROCESS = ("bayes", "heuristics")
_INPROCESS_REPORTED = ("content",)


def _nested_cv(
    samples: Sequence[_Sample],
    folds: Sequence[int],
    k: int,
    names: Sequence[str],
    engines: Sequence[str],
    fit: dict[str, Any],
    hard_weight: float,
) -> dict[str, Any]:
    """Figures measured on each fold with a model *and thresholds* chosen without it."""
    from mxgate.tenants import Policy
    from scanner.policy import decide

    per_target: dict[float, list[tuple[_Sample, bool]]] = {t: [] for t in FPR_TARGETS}
    missing: dict[str, dict[float, list[tuple[_Sample, bool]]]] = {
        e: {t: [] for t in FPR_TARGETS} for e in engines
    }
    combined_p: list[tuple[_Sample, float]] = []
    for f in range(k):
        inner = [s for s in samples if s.fold != f]
        inner_folds = [fold_of("inner:" + s.name, k) for s in inner]
        thresholds = _thresholds(
            inner, _oof(inner, inner_folds, k, names, engines, **fit), hard_weight
        )
        bias, beta = _fit(inner, names, engines, **fit)
        for s in samples:
            if s.fold != f:
                continue
            p = _prob(bias, beta, names, s.feats)
            combined_p.append((s, p))
            for t, thr in thresholds.items():
                per_target[t].append((s, p >= thr))
                for e in engines:
                    pm = _prob(bias, beta, names, _masked(s.feats, e))
                    missing[e][t].append((s, pm >= thr))
    policy = Policy()
    own: dict[str, list[tuple[_Sample, bool]]] = {}
    for s in samples:
        for fnd in s.findings:
            own.setdefault(fnd.engine, []).append((s, fnd.outcome == "spam"))
        own.setdefault("score-sum", []).append((s, decide(s.findings, policy).action != "deliver"))
    return {
        "combined": {repr(t): _rates(v) for t, v in per_target.items()},
        "combined_engine_missing": {
            e: {repr(t): _rates(v) for t, v in by.items()} for e, by in missing.items()
        },
        "engines_own_verdict": {e: _rates(v) for e, v in own.items()},
        "roc": {
            "combined": roc([(_labelled(s), p) for s, p in combined_p]),
            **{
                e: roc(
                    [(_labelled(s), f.score) for s in samples for f in s.findings if f.engine == e]
                )
                for e in own
                if e != "score-sum"
            },
        },
    }
