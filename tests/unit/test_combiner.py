"""The spam combiner: the hand-written logistic regression, missing engines, FPR thresholds,
the model file, the policy's use of it, and training with out-of-fold Bayes."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import pytest

from mxgate.settings import ScannerSettings
from mxgate.tenants import Policy
from scanner.combiner import (
    DEFAULT_MODEL,
    FPR_TARGETS,
    SpamModel,
    features,
    fit_logistic,
    fold_of,
    threshold_for_fpr,
)
from scanner.engines.common import Finding
from scanner.evaluate import Labelled
from scanner.policy import decide
from scanner.train import train_combiner


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def spamf(engine: str, outcome: str = "clean", score: float = 0.0, *symbols: str) -> Finding:
    return Finding(engine, "1", "r", outcome, score=score, symbols=symbols, kind="antispam")  # type: ignore[arg-type]


# -- logistic regression ---------------------------------------------------------------------


def test_bias_only_fit_is_the_log_odds_of_the_weighted_mean() -> None:
    labels = [True, False, False, True, False]
    weights = [1.0, 1.0, 2.0, 3.0, 1.0]  # weighted spam share 4/8
    bias, beta = fit_logistic([[]] * 5, labels, weights, 0, l2=0.0)
    assert beta == []
    assert bias == pytest.approx(logit(4 / 8), abs=1e-9)
    bias, _ = fit_logistic([[]] * 4, [True, False, False, False], [1.0] * 4, 0, l2=0.0)
    assert bias == pytest.approx(logit(1 / 4), abs=1e-9)


def test_one_binary_feature_matches_the_closed_form() -> None:
    # x=0: 1 spam of 4; x=1: 6 spam of 8. Unpenalised MLE: b = logit(1/4), b + w = logit(6/8).
    rows = [[]] * 4 + [[(0, 1.0)]] * 8
    labels = [True, False, False, False] + [True] * 6 + [False] * 2
    bias, (w,) = fit_logistic(rows, labels, [1.0] * 12, 1, l2=0.0)
    assert bias == pytest.approx(logit(1 / 4), abs=1e-8)
    assert bias + w == pytest.approx(logit(6 / 8), abs=1e-8)


def test_l2_solution_has_zero_penalised_gradient_and_shrinks() -> None:
    rng = random.Random(7)
    rows, labels = [], []
    for _ in range(200):
        x1, x2 = rng.gauss(0, 1), rng.gauss(0, 1)
        rows.append([(0, x1), (1, x2)])
        labels.append(rng.random() < 1 / (1 + math.exp(-(0.5 + 2 * x1 - x2))))
    weights = [1.0] * 200
    b0, w0 = fit_logistic(rows, labels, weights, 2, l2=0.0)
    lam = 20.0
    b, w = fit_logistic(rows, labels, weights, 2, l2=lam)
    # Optimality: sum (p - y) x_j + lam * w_j = 0 for every feature, sum (p - y) = 0 for the bias.
    grad = [0.0, 0.0, 0.0]
    for row, y in zip(rows, labels, strict=True):
        p = 1 / (1 + math.exp(-(b + sum(w[j] * v for j, v in row))))
        grad[0] += p - y
        for j, v in row:
            grad[j + 1] += (p - y) * v
    assert abs(grad[0]) < 1e-7
    assert abs(grad[1] + lam * w[0]) < 1e-7 and abs(grad[2] + lam * w[1]) < 1e-7
    assert abs(w[0]) < abs(w0[0]) and abs(w[1]) < abs(w0[1])
    assert w0[0] > 1.0 and w0[1] < -0.3  # it found the generating signs
    assert b0 == pytest.approx(0.5, abs=0.5)


def test_weights_act_as_repeats() -> None:
    rows = [[(0, 1.0)], [(0, -1.0)], [(0, 0.5)], [(0, 2.0)]]
    labels = [True, False, False, True]
    b1, w1 = fit_logistic(rows, labels, [2.0, 1.0, 3.0, 1.0], 1, l2=1.0)
    rep = [rows[0]] * 2 + [rows[1]] + [rows[2]] * 3 + [rows[3]]
    b2, w2 = fit_logistic(rep, [True, True, False, False, False, False, True], [1.0] * 7, 1, l2=1.0)
    assert b1 == pytest.approx(b2) and w1[0] == pytest.approx(w2[0])


# -- features and missing engines -------------------------------------------------------------


MODEL = SpamModel(
    engines=("bayes", "heuristics"),
    feature_names=("bayes:answered", "bayes:score", "heuristics:answered", "heuristics:score"),
    bias=-1.0,
    # An answered Bayes lowers the odds: its score has to earn the spam verdict.
    weights=(-3.0, 2.0, 0.0, 1.0),
    thresholds={0.001: 0.99, 0.01: 0.9, 0.0002: 0.999},
)


def test_a_missing_engine_is_a_feature_not_a_zero_score() -> None:
    heur = spamf("heuristics", "clean", 3.0)
    timed_out = Finding("bayes", "1", "r", "timeout", kind="antispam", detail={"missing": "x"})
    skipped = spamf("bayes", "skipped")
    zero = spamf("bayes", "clean", 0.0)
    assert features([heur, timed_out], MODEL.engines) == features([heur], MODEL.engines)
    assert features([heur, skipped], MODEL.engines) == features([heur], MODEL.engines)
    assert features([heur, zero], MODEL.engines)["bayes:answered"] == 1.0
    missing = MODEL.probability([heur, timed_out])
    answered_zero = MODEL.probability([heur, zero])
    assert missing == pytest.approx(1 / (1 + math.exp(-(-1.0 + math.log1p(3.0)))))
    assert answered_zero < missing  # "Bayes says nothing" is not "Bayes says ham"


def test_features_squash_scores_and_keep_symbols_and_probability() -> None:
    f = spamf("bayes", "spam", 7.0, "BAYES_99")
    f.detail["probability"] = "0.9990"
    got = features([f, spamf("content", "spam", 1000.0, "GTUBE")], ("bayes",))
    assert got["bayes:score"] == pytest.approx(math.log1p(7.0))
    assert got["bayes:sym:BAYES_99"] == 1.0
    assert got["bayes:logit"] == pytest.approx(logit(0.999) / 5, abs=1e-6)
    assert not any(k.startswith("content:") for k in got)  # not a model engine


# -- thresholds from a target FPR -------------------------------------------------------------


def test_threshold_for_fpr_flags_at_most_the_target_weight() -> None:
    ham = [(0.1, 1.0)] * 90 + [(0.7, 1.0)] * 5 + [(0.8, 1.0), (0.95, 1.0)] + [(0.9, 3.0)]
    total = 100.0
    assert threshold_for_fpr(ham, 0.0) == pytest.approx(math.nextafter(0.95, 1))
    assert threshold_for_fpr(ham, 0.01) == pytest.approx(math.nextafter(0.9, 1))  # 0.95 only
    # The weight-3 (hard) ham at 0.9 spends 3% of the budget: 4% lets it and 0.95 through.
    t = threshold_for_fpr(ham, 0.04)
    assert t == pytest.approx(math.nextafter(0.8, 1))
    assert sum(w for p, w in ham if p >= t) <= 0.04 * total
    assert threshold_for_fpr(ham, 0.5) == 0.5  # never below the floor


def test_model_picks_the_nearest_stored_target_not_above_the_tenants() -> None:
    assert MODEL.threshold(0.001) == (0.001, 0.99)
    assert MODEL.threshold(0.005) == (0.001, 0.99)
    assert MODEL.threshold(0.5) == (0.01, 0.9)
    assert MODEL.threshold(0.00001) == (0.0002, 0.999)  # stricter than all: the strictest


def test_policy_tags_and_quarantines_by_the_tenants_target() -> None:
    policy = Policy(spam_target_fpr=0.01, spam_quarantine_fpr=0.0002)
    z = logit(0.95)  # between the 0.01 (0.9) and 0.0002 (0.999) thresholds
    score = math.expm1((z + 1.0 + 3.0) / 2.0)
    bayes = spamf("bayes", "spam", score, "BAYES_99")
    d = decide([bayes], policy, spam_model=MODEL)
    assert d.action == "tag"
    assert d.spam_probability == pytest.approx(0.95)
    assert d.spam_model == MODEL.version
    assert f"spam-model:{MODEL.version}" in d.reasons and "spam:bayes:BAYES_99" in d.reasons
    assert decide([bayes], Policy(spam_target_fpr=0.001), spam_model=MODEL).action == "deliver"
    # The same score with the score rule (no model) would be judged on the sum alone.
    assert decide([bayes], policy).spam_probability is None


def test_engines_the_model_does_not_know_keep_the_score_rule() -> None:
    gtube = spamf("content", "spam", 1000.0, "GTUBE")
    d = decide([gtube, spamf("bayes", "clean", -6.0)], Policy(), spam_model=MODEL)
    assert d.action == "quarantine"
    assert "spam:content:GTUBE" in d.reasons
    assert d.spam_model == MODEL.version


def test_a_model_none_of_whose_engines_answered_stays_out() -> None:
    # A scanner running none of the model's engines (or all of them timed out): the bias
    # alone would judge every message; a bias this high would tag all mail.
    eager = dataclasses.replace(MODEL, bias=12.0)
    clean = [spamf("content", "clean"), Finding("bayes", "1", "r", "timeout", kind="antispam")]
    d = decide(clean, Policy(), spam_model=eager)
    assert d.action == "deliver" and d.spam_probability is None and d.spam_model == ""
    # One answering engine and the model judges again.
    assert decide([spamf("heuristics", "clean")], Policy(), spam_model=eager).action != "deliver"


# -- the model file ---------------------------------------------------------------------------


def test_model_file_round_trip_and_tamper_check(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    MODEL.save(path)
    again = SpamModel.load(path)
    assert again == MODEL and again is not None and again.version == MODEL.version
    assert SpamModel.load(tmp_path / "none.json") is None
    data = json.loads(path.read_text())
    assert {"format", "version", "engines", "features", "thresholds", "summary"} <= set(data)
    data["features"][1]["weight"] = 9.0
    with pytest.raises(ValueError, match="does not match"):
        SpamModel.from_json(data)


# -- training ---------------------------------------------------------------------------------

SPAMMY = "free money cash offer click viagra winner prize credit loan".split()
HAMMY = "meeting patch review kernel thanks lunch build release notes agenda".split()
SHARED = "the and you for with this that have from about".split()


def synthetic(n_ham: int, n_hard: int, n_spam: int, seed: int = 3) -> list[Labelled]:
    """Messages whose words tell the class, with noise; hard ham borrows spam words."""
    rng = random.Random(seed)
    out = []

    def msg(words: list[str], subject: str) -> bytes:
        body = " ".join(words)
        return f"From: a@b.test\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode()

    for i in range(n_ham):
        w = rng.choices(HAMMY, k=30) + rng.choices(SHARED, k=20) + rng.choices(SPAMMY, k=2)
        out.append(Labelled(f"ham/{i}", msg(w, "notes"), False))
    for i in range(n_hard):
        w = rng.choices(HAMMY, k=12) + rng.choices(SHARED, k=20) + rng.choices(SPAMMY, k=10)
        out.append(Labelled(f"hard_ham/{i}", msg(w, "newsletter"), False, True))
    for i in range(n_spam):
        w = rng.choices(SPAMMY, k=25) + rng.choices(SHARED, k=20) + rng.choices(HAMMY, k=3)
        out.append(Labelled(f"spam/{i}", msg(w, "FREE CASH NOW!!!"), True))
    return out


async def test_train_combiner_learns_with_out_of_fold_bayes(tmp_path: Path) -> None:
    messages = synthetic(60, 15, 30)
    settings = ScannerSettings(
        engines=("bayes", "heuristics", "content"),
        spam={"bayes_path": tmp_path / "bayes", "bayes_min_trained": 5},  # type: ignore[arg-type]
    )
    model = await train_combiner(settings, messages, k=3)
    assert model.engines == ("bayes", "heuristics")
    assert {"bayes:answered", "bayes:score", "heuristics:answered"} <= set(model.feature_names)
    assert sorted(model.thresholds) == sorted(FPR_TARGETS)
    assert all(0.5 <= p <= 1.0 for p in model.thresholds.values())
    cv = model.summary["cv"]
    assert model.summary["bayes_features"] == "out of fold"
    assert set(cv["engines_own_verdict"]) >= {"bayes", "heuristics", "content", "score-sum"}
    at = cv["combined"]["0.05"]
    assert at["spam"] == 30 and at["hard_ham"] == 15 and at["easy_ham"] == 60
    assert at["spam_caught"] > 0.5
    assert set(cv["combined_engine_missing"]) == {"bayes", "heuristics"}
    assert cv["roc"]["combined"][-1]["tpr"] == 1.0
    # The file it writes reads back as the same model.
    model.save(tmp_path / "m.json")
    assert SpamModel.load(tmp_path / "m.json") == model


def test_folds_are_deterministic_and_spread() -> None:
    folds = [fold_of(f"ham/{i}", 5) for i in range(500)]
    assert folds == [fold_of(f"ham/{i}", 5) for i in range(500)]
    assert all(70 < folds.count(f) < 130 for f in range(5))


# -- mxgate evaluate --------------------------------------------------------------------------


def _folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    msgs = synthetic(6, 2, 4)
    dirs = {"ham": tmp_path / "ham", "hard_ham": tmp_path / "hard", "spam": tmp_path / "spam"}
    for d in dirs.values():
        d.mkdir()
    for m in msgs:
        kind, _, name = m.name.partition("/")
        # Corpus files start with an mbox "From " line (hard ham does not).
        head = b"" if m.hard else b"From someone  Mon Jan  1 00:00:00 2002\n"
        (dirs[kind] / name).write_bytes(head + m.raw)
    return dirs["ham"], dirs["hard_ham"], dirs["spam"]


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.chdir(tmp_path)  # no live `mxgate up` lends its settings here
    monkeypatch.setenv("MXGATE_SCANNER__SPAM__BAYES_PATH", str(tmp_path / "bayes"))
    monkeypatch.setenv("MXGATE_SCANNER__SPAM__MODEL_PATH", str(tmp_path / "model.json"))
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_evaluate_holdout_0_judges_every_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ham, hard, spam = _folders(tmp_path)
    code, out, err = _run(
        tmp_path, monkeypatch, "evaluate", "--ham", str(ham), "--spam", str(spam),
        "--hard-ham", str(hard), "--holdout", "0", "--engines", "heuristics,content", "--json",
        "--chart", str(tmp_path / "c.html"),
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["combined"]["spam"] == 4 and report["combined"]["ham"] == 8
    assert report["combined"]["hard_ham"] == 2
    assert report["heuristics"]["easy_ham_fpr"] is not None
    # No trained model: the packaged default one judges (heuristics is one of its engines).
    default = SpamModel.load(DEFAULT_MODEL)
    assert default is not None and report["heuristics"]["roc"]
    assert report["combined"].get("spam_model") == default.version
    assert "ROC: hard ham" in (tmp_path / "c.html").read_text()


def test_evaluate_an_empty_selection_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ham").mkdir()
    (tmp_path / "spam").mkdir()
    code, _, err = _run(
        tmp_path, monkeypatch, "evaluate", "--ham", str(tmp_path / "ham"),
        "--spam", str(tmp_path / "spam"), "--holdout", "0", "--engines", "heuristics",
    )  # fmt: skip
    assert code == 2
    assert "nothing to evaluate" in err
