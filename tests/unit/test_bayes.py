"""The in-process Bayes: tokens, chi-square combining, rocksdict store, training state."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.bayes_store import BayesStore
from scanner.engines.bayes import BayesEngine, spam_probability, tokenize
from scanner.mime import parse

SPAM = [
    f"From: promo{i}@deals.test\nSubject: FREE money now {i}\n\nClick here for cheap viagra "
    f"and free money, act now! http://cheap{i}.pills.test/\n"
    for i in range(30)
]
HAM = [
    f"From: alice@work.test\nSubject: meeting notes {i}\n\nHi Bob, the build of release {i} "
    f"passed; see the patch in review and the meeting agenda.\n"
    for i in range(30)
]


def msg(text: str, i: int = 0):  # type: ignore[no-untyped-def]
    return parse(text.encode(), message_id=f"b{i}", tenant="t")


def train(path: Path) -> None:
    store = BayesStore(path)
    store.learn(
        [(list(tokenize(msg(t))), True) for t in SPAM]
        + [(list(tokenize(msg(t))), False) for t in HAM]
    )
    store.close()


async def test_untrained_is_skipped_then_trained_separates(tmp_path: Path) -> None:
    engine = BayesEngine(tmp_path / "b", min_trained=10)
    f = await engine.check(msg(SPAM[0]))
    assert f.outcome == "skipped"
    await engine.aclose()
    train(tmp_path / "b")
    engine = BayesEngine(tmp_path / "b", min_trained=10)  # read-only, as the scanner opens it
    spam = await engine.check(msg("Subject: free money\n\nclick here, cheap viagra, act now"))
    ham = await engine.check(msg("Subject: meeting\n\nHi Bob, the release build and the patch"))
    assert spam.outcome == "spam" and spam.score > 5 and spam.symbols == ("BAYES_99",)
    assert ham.outcome == "clean" and ham.score < 0
    assert engine.rules_version == "chi2/30s30h"
    await engine.aclose()


def test_tokens_cover_headers_body_html_and_links() -> None:
    m = parse(
        b"From: X <x@a.test>\r\nSubject: Hello There\r\nContent-Type: text/html\r\n\r\n"
        b"<font color=red>Buy</font> <a href='http://www.shop.example.com/x'>now</a>",
        message_id="t",
        tenant="t",
    )
    toks = set(tokenize(m))
    assert {
        "subject:hello",
        "from:dom:a.test",
        "meta:html",
        "tag:font",
        "buy",
        "url:example.com",
        "hdr:subject",
    } <= toks


def test_no_clues_is_undecided() -> None:
    assert spam_probability([(0, 0)], 10, 10) == (0.5, 0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)), max_size=300),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
)
def test_probability_is_always_a_probability(counts, nspam, nham) -> None:  # type: ignore[no-untyped-def]
    p, n = spam_probability(counts, nspam, nham)
    assert 0.0 <= p <= 1.0 and 0 <= n <= 150


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=3000))
def test_tokenizer_takes_any_bytes(raw: bytes) -> None:
    list(tokenize(parse(raw, message_id="f", tenant="t")))
