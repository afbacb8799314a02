"""The calibrated spam combiner: one spam probability from every antispam engine's finding.

Each engine's :class:`~scanner.engines.common.Finding` becomes a few features (:func:`features`):

- ``<engine>:answered``: 1 when the engine gave a verdict (``clean``/``spam``/``match``), 0 when
  it did not (timeout, error, disabled by ops, circuit open, ``skipped``). A missing engine is
  therefore a fact the model knows what to do with, not a score of 0 that reads as "clean";
- ``<engine>:score``: its score, squashed by ``sign(s)*log1p(|s|)`` so that one engine's
  extreme score (GTUBE's 1000) cannot dominate, and 0 when it did not answer;
- ``<engine>:logit``: for an engine that reports ``detail["probability"]`` (Bayes), its
  logit, clipped to +-10 and divided by 5;
- ``<engine>:sym:<SYMBOL>``: 1 for each symbol of a fixed vocabulary (chosen at training from
  the symbols frequent enough to learn from: Bayes' probability buckets, the heuristic rules).

A logistic regression over these (stacking) gives the probability; :class:`SpamModel` holds it
as data (a versioned JSON file: feature names, weights, probability thresholds for a few
false-positive-rate targets, and the training summary), and :func:`scanner.policy.decide`
applies it with the tenant's ``policy.spam_target_fpr``.

Why a hand-written regression: the feature vector is small (tens of features, thousands of
messages), Newton's method on it converges in a few iterations in pure Python, and mxgate then
needs neither numpy nor scikit-learn (hundreds of MB) in every scanner image for a dot product
at decision time. ``tests/unit/test_combiner.py`` checks it against closed-form solutions.

Model versions: ``version`` is a hash of everything that changes a decision (features, weights,
thresholds), so a decision that records it can be replayed against the same model.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scanner.engines.common import Finding

__all__ = [
    "ANSWERED",
    "DEFAULT_MODEL",
    "FPR_TARGETS",
    "MODEL_ENGINES",
    "SpamModel",
    "features",
    "fit_logistic",
    "fold_of",
    "threshold_for_fpr",
]

FORMAT = "mxgate-spam-combiner/1"
MODEL_ENGINES: tuple[str, ...] = ("bayes", "heuristics", "spamassassin", "rspamd")
"""Antispam engines the combiner learns about when they run. Others (content rules' GTUBE,
DNSBL listings) have no training data to learn from and keep the policy's score rule."""

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default-spam-model.json"
"""The packaged model, learnt by ``bench/default_spam_model.py`` on the shared corpus from the
engines a fresh ``mxgate up`` runs untaught (heuristics, content rules, spamd and rspamd
offline, Bayes abstaining). It judges until ``mxgate train`` writes ``scanner.spam.model_path``,
so a new gateway never sums raw daemon scores that are not on one scale."""

ANSWERED = ("clean", "spam", "match")
"""Outcomes that are a verdict; every other outcome means the engine did not answer."""

FPR_TARGETS: tuple[float, ...] = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
"""False-positive-rate targets a model stores thresholds for (weighted ham, see train)."""

Row = list[tuple[int, float]]
"""A sparse feature vector: (feature index, value) pairs."""


def squash(score: float) -> float:
    """``sign(s) * log1p(|s|)``; nan counts as 0."""
    if math.isnan(score):
        return 0.0
    return math.copysign(math.log1p(min(abs(score), 1e12)), score)


def features(findings: Iterable[Finding], engines: Sequence[str]) -> dict[str, float]:
    """The non-zero features of ``findings`` for the model's ``engines`` (others ignored).

    Every symbol a finding carries is returned as ``<engine>:sym:<SYMBOL>``; a model keeps only
    the ones in its vocabulary.
    """
    wanted = set(engines)
    out: dict[str, float] = {}
    for f in findings:
        if f.engine not in wanted or f.kind != "antispam" or f.outcome not in ANSWERED:
            continue
        out[f"{f.engine}:answered"] = 1.0
        s = squash(f.score)
        if s:
            out[f"{f.engine}:score"] = s
        prob = _probability(f.detail.get("probability"))
        if prob is not None:
            # A probability near 1 is where spam and hard ham part: its logit spreads what
            # the score (linear in p) squeezes together.
            out[f"{f.engine}:logit"] = max(-10.0, min(10.0, math.log(prob / (1.0 - prob)))) / 5.0
        for sym in f.symbols:
            out[f"{f.engine}:sym:{sym}"] = 1.0
    return out


def _probability(text: str | None) -> float | None:
    """A finding's ``detail["probability"]`` kept inside (0, 1), or None."""
    try:
        p = float(text) if text is not None else math.nan
    except ValueError:
        return None
    if not 0.0 <= p <= 1.0:
        return None
    return min(max(p, 1e-6), 1.0 - 1e-6)


def fold_of(name: str, k: int) -> int:
    """The cross-validation fold of a message named ``name`` (deterministic, by hash)."""
    return int.from_bytes(hashlib.sha256(f"fold:{name}".encode()).digest()[:4], "big") % k


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Solve ``a x = b`` (Gaussian elimination with partial pivoting; ``a`` is copied)."""
    n = len(b)
    m = [[*row, b[i]] for i, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        if abs(m[p][c]) < 1e-300:
            raise ArithmeticError("singular system")
        m[c], m[p] = m[p], m[c]
        piv = m[c][c]
        for r in range(c + 1, n):
            factor = m[r][c] / piv
            if factor:
                rr, rc = m[r], m[c]
                for j in range(c, n + 1):
                    rr[j] -= factor * rc[j]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][j] * x[j] for j in range(r + 1, n))) / m[r][r]
    return x


def fit_logistic(
    rows: Sequence[Row],
    labels: Sequence[bool],
    weights: Sequence[float],
    n_features: int,
    *,
    l2: float = 1.0,
    max_iter: int = 50,
    tol: float = 1e-9,
) -> tuple[float, list[float]]:
    """(bias, weights) of the L2-regularised weighted logistic regression, by Newton's method.

    Minimises ``sum_i w_i * logloss(y_i, sigmoid(b + x_i . beta)) + l2/2 * |beta|^2`` (the bias
    is not penalised). ``rows`` are sparse; the Hessian is ``(n_features+1)^2``, which is why
    this is only for small feature vectors.
    """
    d = n_features + 1  # index 0 is the bias
    theta = [0.0] * d
    for _ in range(max_iter):
        grad = [0.0] * d
        hess = [[0.0] * d for _ in range(d)]
        for row, y, w in zip(rows, labels, weights, strict=True):
            z = theta[0] + sum(theta[j + 1] * v for j, v in row)
            p = _sigmoid(z)
            g = w * (p - (1.0 if y else 0.0))
            h = w * p * (1.0 - p)
            idx = [(0, 1.0), *((j + 1, v) for j, v in row)]
            for a, va in idx:
                grad[a] += g * va
                ha = hess[a]
                hv = h * va
                for b, vb in idx:
                    ha[b] += hv * vb
        for j in range(1, d):
            grad[j] += l2 * theta[j]
            hess[j][j] += l2
        hess[0][0] += 1e-9  # a bias with all-one or all-zero labels stays finite
        step = _solve(hess, grad)
        theta = [t - s for t, s in zip(theta, step, strict=True)]
        if max(abs(s) for s in step) < tol:
            break
    return theta[0], theta[1:]


def threshold_for_fpr(
    ham: Sequence[tuple[float, float]], target: float, *, floor: float = 0.5
) -> float:
    """The lowest probability threshold that flags at most ``target`` of the ham weight.

    ``ham`` is (probability, weight) of each ham message, scored out of fold. A message is
    flagged at ``p >= threshold``; the threshold is never below ``floor``.
    """
    total = sum(w for _, w in ham)
    budget = target * total
    flagged = 0.0
    thr = floor
    for p, w in sorted(ham, key=lambda t: -t[0]):
        if flagged + w > budget + 1e-12:
            # This ham must stay below the threshold: just above its probability.
            thr = max(floor, math.nextafter(p, math.inf))
            break
        flagged += w
    return min(thr, 1.0)


@dataclass(frozen=True)
class SpamModel:
    """A trained combiner: data, applied by :meth:`probability` and :meth:`threshold`."""

    engines: tuple[str, ...]
    feature_names: tuple[str, ...]
    bias: float
    weights: tuple[float, ...]
    thresholds: dict[float, float]
    """FPR target -> probability threshold (measured by cross-validation on ham)."""
    summary: dict[str, Any] = field(default_factory=dict, compare=False)
    version: str = ""

    def __post_init__(self) -> None:
        if len(self.feature_names) != len(self.weights):
            raise ValueError("one weight per feature")
        if not self.thresholds:
            raise ValueError("a model needs at least one FPR threshold")
        if not self.version:
            object.__setattr__(self, "version", self.digest())
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(self.feature_names)})

    def digest(self) -> str:
        """Hash of what changes decisions (not the summary)."""
        core = json.dumps(
            [
                FORMAT,
                list(self.engines),
                list(self.feature_names),
                self.bias,
                list(self.weights),
                sorted(self.thresholds.items()),
            ],
            separators=(",", ":"),
        )
        return "c-" + hashlib.sha256(core.encode()).hexdigest()[:12]

    def row(self, feats: Mapping[str, float]) -> Row:
        """The sparse vector of ``feats`` in this model's feature order (unknown ones dropped)."""
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        return sorted((index[k], v) for k, v in feats.items() if k in index)

    def judges(self, findings: Iterable[Finding]) -> bool:
        """Whether any engine of the model answered: with none (a scanner that does not run
        them), the model would judge every message on its bias alone, so it stays out."""
        return any(
            f.engine in self.engines and f.kind == "antispam" and f.outcome in ANSWERED
            for f in findings
        )

    def probability(self, findings: Iterable[Finding]) -> float:
        """The spam probability of a message with these findings."""
        z = self.bias + sum(
            self.weights[j] * v for j, v in self.row(features(findings, self.engines))
        )
        return _sigmoid(z)

    def threshold(self, target_fpr: float) -> tuple[float, float]:
        """(stored target used, probability threshold) for a tenant's ``target_fpr``.

        The largest stored target not above the tenant's (never a looser one); below every
        stored target, the strictest.
        """
        targets = sorted(self.thresholds)
        usable = [t for t in targets if t <= target_fpr + 1e-15]
        t = usable[-1] if usable else targets[0]
        return t, self.thresholds[t]

    def to_json(self) -> dict[str, Any]:
        """The model file's content."""
        return {
            "format": FORMAT,
            "version": self.version,
            "engines": list(self.engines),
            "features": [
                {"name": n, "weight": w}
                for n, w in zip(self.feature_names, self.weights, strict=True)
            ],
            "bias": self.bias,
            "thresholds": {repr(t): p for t, p in sorted(self.thresholds.items())},
            "summary": self.summary,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SpamModel:
        """Read a model file's content; raises ValueError if it is not one or was altered."""
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} model")
        model = cls(
            engines=tuple(data["engines"]),
            feature_names=tuple(f["name"] for f in data["features"]),
            bias=float(data["bias"]),
            weights=tuple(float(f["weight"]) for f in data["features"]),
            thresholds={float(t): float(p) for t, p in data["thresholds"].items()},
            summary=dict(data.get("summary") or {}),
        )
        if data.get("version") != model.version:
            raise ValueError(f"model version {data.get('version')!r} does not match its content")
        return model

    def save(self, path: Path) -> None:
        """Write the model file atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> SpamModel | None:
        """The model at ``path``, or None when there is none (the policy's score rule then)."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return cls.from_json(json.loads(text))

    @classmethod
    def load_or_default(cls, path: Path, default: Path = DEFAULT_MODEL) -> SpamModel | None:
        """The trained model at ``path`` (it wins), else the packaged :data:`DEFAULT_MODEL`;
        None only when neither exists (the policy's score rule then)."""
        return cls.load(path) or cls.load(default)
