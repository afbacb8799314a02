"""decide(): findings + policy -> one action, pure, deterministic and monotone."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxgate.tenants import Policy
from scanner.engines.common import Finding
from scanner.policy import SEVERITY, Decision, decide

POLICY = Policy(
    version="p1",
    on_virus="quarantine",
    on_content_match="tag",
    spam_tag=5.0,
    spam_quarantine=10.0,
    spam_discard=25.0,
    on_engine_error="quarantine",
)


def av(outcome: str = "clean", *symbols: str, engine: str = "yara") -> Finding:
    return Finding(engine, "1", "r1", outcome, symbols=symbols, kind="antivirus")  # type: ignore[arg-type]


def spam(score: float, *symbols: str, engine: str = "content", outcome: str = "spam") -> Finding:
    return Finding(
        engine,
        "1",
        "r1",
        outcome,
        score=score,
        symbols=symbols,  # type: ignore[arg-type]
        kind="antispam",
    )


def test_all_clean_delivers() -> None:
    d = decide([av(), spam(0.0, outcome="clean")], POLICY)
    assert d == Decision("deliver", (), 0.0, "p1")


def test_no_findings_delivers() -> None:
    assert decide([], Policy()).action == "deliver"


def test_virus() -> None:
    d = decide([av("infected", "EICAR_Test_File"), spam(0.0, outcome="clean")], POLICY)
    assert (d.action, d.reasons) == ("quarantine", ("virus:yara:EICAR_Test_File",))


def test_virus_action_comes_from_policy() -> None:
    d = decide([av("infected", "X")], POLICY.model_copy(update={"on_virus": "discard"}))
    assert d.action == "discard"


def test_content_match() -> None:
    d = decide([av("match", "Executable_PE")], POLICY)
    assert (d.action, d.reasons) == ("tag", ("content:yara:Executable_PE",))


@pytest.mark.parametrize(
    ("score", "action"),
    [
        (4.99, "deliver"),
        (5.0, "tag"),
        (9.9, "tag"),
        (10.0, "quarantine"),
        (25.0, "discard"),
        (1000.0, "discard"),
    ],
)
def test_spam_thresholds(score: float, action: str) -> None:
    d = decide([av(), spam(score, "GTUBE")], POLICY)
    assert d.action == action
    assert d.spam_score == score
    if action != "deliver":
        assert d.reasons == (f"spam-score:{score:.2f}", "spam:content:GTUBE")


def test_gtube_with_default_policy_is_quarantined() -> None:
    # The default policy never discards (spam_discard is infinite): spam waits in quarantine.
    d = decide([av(), spam(1000.0, "GTUBE")], Policy())
    assert d.action == "quarantine"


def test_engine_weights() -> None:
    findings = [spam(4.0, "A", engine="a"), spam(4.0, "B", engine="b")]
    assert decide(findings, POLICY).spam_score == 8.0
    weighted = POLICY.model_copy(update={"engine_weights": {"a": 2.0, "b": 0.5}})
    d = decide(findings, weighted)
    assert (d.spam_score, d.action) == (10.0, "quarantine")


def test_antivirus_unavailable() -> None:
    failed = Finding("yara", "1", "r1", "timeout", kind="antivirus", error="slow")
    d = decide([failed, spam(0.0, outcome="clean")], POLICY)
    assert (d.action, d.reasons) == ("quarantine", ("av-unavailable", "av-missing:yara:timeout"))
    # A policy that lets the message through says so: the rule is on record.
    open_policy = POLICY.model_copy(update={"on_engine_error": "deliver"})
    assert decide([failed], open_policy) == Decision(
        "deliver",
        ("av-unavailable", "av-missing:yara:timeout", "allowed:on_engine_error=deliver"),
        0.0,
        "p1",
    )


def test_one_antivirus_answer_is_enough_only_when_the_tenant_says_so() -> None:
    failed = Finding("clamav", "1", "r1", "error", kind="antivirus", error="boom")
    # Fail closed by default: one engine's clean does not stand in for the missing one.
    assert decide([failed, av()], POLICY).action == "quarantine"
    lenient = POLICY.model_copy(update={"on_av_partial_failure": "deliver"})
    d = decide([failed, av()], lenient)
    assert d.action == "deliver"
    assert d.reasons == (
        "av-degraded",
        "av-missing:clamav:error",
        "allowed:on_av_partial_failure=deliver",
    )


def test_failed_antispam_is_not_av_unavailable() -> None:
    failed = Finding("content", "1", "r1", "error", kind="antispam", error="boom")
    assert decide([av(), failed], POLICY) == Decision("deliver", (), 0.0, "p1")


def test_most_severe_wins_and_all_reasons_are_kept() -> None:
    d = decide([av("infected", "V"), spam(30.0, "S"), av("match", "M", engine="x")], POLICY)
    assert d.action == "discard"
    assert d.reasons == ("virus:yara:V", "content:x:M", "spam-score:30.00", "spam:content:S")


def test_non_finite_scores_do_not_break_the_sum() -> None:
    d = decide([spam(math.inf), spam(-math.inf, engine="b"), spam(math.nan, engine="c")], POLICY)
    assert math.isfinite(d.spam_score)


# --- properties ----------------------------------------------------------------------------

OUTCOMES = [
    "clean",
    "infected",
    "spam",
    "match",
    "error",
    "timeout",
    "skipped",
    "disabled",
    "unscannable",
]
ACTIONS = list(SEVERITY)

findings_st = st.builds(
    Finding,
    engine=st.sampled_from(["yara", "clamav", "content", "rspamd"]),
    engine_version=st.just("1"),
    rules_version=st.just("r"),
    outcome=st.sampled_from(OUTCOMES),
    score=st.floats(-50, 2000, allow_nan=False),
    symbols=st.lists(st.sampled_from(["A", "B", "C"]), max_size=2).map(tuple),
    kind=st.sampled_from(["antivirus", "antispam", "auth", "policy"]),
)
detection_st = st.one_of(
    st.builds(
        Finding,
        engine=st.sampled_from(["yara", "clamav", "x"]),
        engine_version=st.just("1"),
        rules_version=st.just("r"),
        outcome=st.sampled_from(["infected", "match"]),
        symbols=st.just(("D",)),
        kind=st.sampled_from(["antivirus", "antispam", "auth", "policy"]),
    ),
    st.builds(
        Finding,
        engine=st.sampled_from(["content", "rspamd"]),
        engine_version=st.just("1"),
        rules_version=st.just("r"),
        outcome=st.just("spam"),
        score=st.floats(0, 2000),
        symbols=st.just(("S",)),
        kind=st.just("antispam"),
    ),
)
policy_st = st.builds(
    Policy,
    version=st.text(max_size=5),
    on_virus=st.sampled_from(ACTIONS),
    on_content_match=st.sampled_from(ACTIONS),
    spam_tag=st.floats(0, 100),
    spam_quarantine=st.floats(0, 500),
    spam_discard=st.floats(0, 2000),
    on_engine_error=st.sampled_from(["deliver", "quarantine"]),
    engine_weights=st.dictionaries(st.sampled_from(["content", "rspamd"]), st.floats(0, 5)),
)
PROPS = settings(deadline=None, max_examples=300)


@PROPS
@given(st.lists(findings_st, max_size=6), policy_st)
def test_deterministic(findings: list[Finding], policy: Policy) -> None:
    first = decide(findings, policy)
    assert decide(list(findings), Policy(**policy.model_dump())) == first
    assert first.policy_version == policy.version


@PROPS
@given(st.lists(findings_st, max_size=6), policy_st, st.randoms(use_true_random=False))
def test_engine_order_does_not_change_the_action(
    findings: list[Finding], policy: Policy, rnd
) -> None:  # type: ignore[no-untyped-def]
    shuffled = list(findings)
    rnd.shuffle(shuffled)
    a, b = decide(findings, policy), decide(shuffled, policy)
    assert (a.action, a.spam_score, set(a.reasons)) == (b.action, b.spam_score, set(b.reasons))


@PROPS
@given(st.lists(findings_st, max_size=6), detection_st, st.integers(0, 6), policy_st)
def test_monotone(findings: list[Finding], detection: Finding, at: int, policy: Policy) -> None:
    before = decide(findings, policy)
    more = [*findings[:at], detection, *findings[at:]]
    after = decide(more, policy)
    assert SEVERITY[after.action] >= SEVERITY[before.action]
    assert (
        set(before.reasons) <= set(after.reasons)
        or before.action == "deliver"
        or any(r.startswith("spam-score:") for r in before.reasons)
    )
