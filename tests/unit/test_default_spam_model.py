"""The packaged default spam model: it loads, its version is what a decision records, a plain
hand-typed message (the findings spamd and rspamd really gave it, as `mxgate up` starts them)
is delivered untagged, and a daemon missing moves the probability by the model's own
``answered`` feature."""

from __future__ import annotations

import json
from pathlib import Path

from mxgate.tenants import Policy
from scanner.combiner import DEFAULT_MODEL, SpamModel
from scanner.engines.common import Finding
from scanner.policy import decide


def _f(engine: str, outcome: str, score: float, *symbols: str, **detail: str) -> Finding:
    return Finding(
        engine, "1", "r", outcome, score=score, symbols=symbols, kind="antispam", detail=detail
    )  # type: ignore[arg-type]


# What `smtplib.SMTP().sendmail(..., "From: ...\r\nTo: ...\r\n\r\nhello\r\n")` got under
# `mxgate up` (private spamd and rspamd, offline, untaught): no Subject, no Date, no Message-ID,
# so every engine counts the same missing headers (7.40 by the old score sum: tagged).
PLAIN = [
    _f("content", "clean", 0.0),
    _f("heuristics", "clean", 2.0, "NO_DATE", "NO_MESSAGE_ID"),
    _f(
        "spamassassin", "clean", 3.3,
        "MISSING_DATE", "MISSING_MID", "MISSING_SUBJECT", "NO_RECEIVED", "NO_RELAYS",
    ),
    _f(
        "rspamd", "clean", 5.4,
        "FROM_EQ_ENVFROM", "FROM_NO_DN", "MIME_GOOD", "MIME_TRACE", "MISSING_DATE",
        "MISSING_MID", "MISSING_SUBJECT", "RCPT_COUNT_ONE", "RCVD_COUNT_ZERO", "TO_DN_NONE",
        "TO_MATCH_ENVRCPT_ALL",
        action="greylist", required_score="15",
    ),
    _f("bayes", "skipped", 0.0, "UNTRAINED"),
]  # fmt: skip


def test_the_packaged_model_loads_with_its_version() -> None:
    model = SpamModel.load(DEFAULT_MODEL)
    assert model is not None
    data = json.loads(DEFAULT_MODEL.read_text())
    assert model.version == data["version"] and model.version.startswith("c-")
    # Learnt from what a fresh `up` runs; Bayes is listed but abstains (no feature of its own).
    assert set(model.engines) == {"heuristics", "spamassassin", "rspamd", "bayes"}
    assert not any(n.startswith("bayes:") for n in model.feature_names)
    assert data["summary"]["regenerate"].startswith("python bench/default_spam_model.py")


def test_a_trained_model_wins_over_the_default(tmp_path: Path) -> None:
    default = SpamModel.load(DEFAULT_MODEL)
    assert SpamModel.load_or_default(tmp_path / "none.json") == default
    trained = SpamModel(("heuristics",), ("heuristics:score",), -1.0, (1.0,), {0.001: 0.9})
    trained.save(tmp_path / "m.json")
    assert SpamModel.load_or_default(tmp_path / "m.json") == trained


def test_a_plain_message_is_delivered_untagged_and_the_decision_records_the_model() -> None:
    model = SpamModel.load(DEFAULT_MODEL)
    assert model is not None
    policy = Policy()
    assert decide(PLAIN, policy).action != "deliver"  # the old score sum: the bug
    d = decide(PLAIN, policy, spam_model=model)
    assert d.action == "deliver", d
    assert d.spam_model == model.version and d.spam_probability is not None
    _, tag_at = model.threshold(policy.spam_target_fpr)
    assert d.spam_probability < tag_at


def test_rspamd_missing_moves_the_probability_by_the_model_not_as_a_zero_score() -> None:
    model = SpamModel.load(DEFAULT_MODEL)
    assert model is not None
    off = [
        f if f.engine != "rspamd" else _f("rspamd", "disabled", 0.0, missing="disabled")
        for f in PLAIN
    ]
    without = [f for f in PLAIN if f.engine != "rspamd"]
    p_off = model.probability(off)
    # A disabled rspamd is the same as no rspamd finding at all: its answered feature is 0.
    assert p_off == model.probability(without)
    assert p_off != model.probability(PLAIN)
    # ... and an answering rspamd that said 0 is not the same thing as one that is missing.
    zero = [f if f.engine != "rspamd" else _f("rspamd", "clean", 0.0) for f in PLAIN]
    assert model.probability(zero) != p_off
    d = decide(off, Policy(), spam_model=model)
    assert d.action == "deliver" and d.spam_model == model.version
