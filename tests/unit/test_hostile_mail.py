"""Hostile mail never walks past the engines (issue 11): parse + real engines + default policy.

Each case of the generated corpus (:mod:`support.hostile`) hides EICAR behind a parser trick.
It goes through :func:`scanner.mime.parse`, the real ``yara`` and ``attachments`` engines and
the default tenant policy, and must be held back with a reason: either an engine saw the
payload, or the parse says it could not see everything (``unscannable``). Bounded time is
proven without clocks: a budget that runs out is a recorded ``budget:time`` verdict, and the
unpacking work is counted.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import itertools
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import factories, hostile, quines, samples

import schemas
from mxgate.blobstore import FsBlobStore
from mxgate.tenants import Policy, Route, Tenant, Tenants
from mxgate.timeutil import utcnow
from ops.trace import fold, render
from scanner import mime
from scanner.engines.attachments import AttachmentsEngine
from scanner.engines.common import Finding, ParsedMessage
from scanner.engines.yara_engine import YaraEngine
from scanner.mime import RAW_PATH, UnpackLimits, parse, scan_finding
from scanner.policy import decide
from scanner.runner import EngineRunner
from scanner.service import Scanner

EICAR_RULE = "virus:yara:EICAR_Test_File"
# What holds each case back: every listed reason must be in the decision.
EXPECTED: dict[str, tuple[str, ...]] = {
    # The deep branch is one opaque part, and its sibling is still parsed and unpacked.
    "deep-nesting-1200": ("unscannable:mime:mime-limit:depth", EICAR_RULE),
    "parts-10000": ("unscannable:mime:mime-limit:parts",),
    "zip-bomb": ("unscannable:mime:archive-limit:ratio", EICAR_RULE),
    "gzip-bomb": ("unscannable:mime:archive-limit:ratio",),
    "concatenated-gzip": (EICAR_RULE,),
    "malformed-base64": (EICAR_RULE,),
    "malformed-qp": (EICAR_RULE,),
    "broken-boundary": ("unscannable:mime:mime:StartBoundaryNotFoundDefect",),
    "unclosed-boundary": (EICAR_RULE,),
    "nul-8bit-headers": (EICAR_RULE,),
    "rfc2231-filename": (EICAR_RULE,),
    "duplicate-content-type": ("unscannable:mime:mime-ambiguous:content-type",),
    "zip-nested-too-deep": ("unscannable:mime:archive-limit:depth",),
    # EICAR sits past the member allowance; the bomb is the reason, not a detection.
    "tar-bomb": ("unscannable:mime:archive-limit:members",),
    # The high-ratio member is skipped, its sibling still extracted and detected.
    "7z-bomb": ("unscannable:mime:archive-limit:ratio", EICAR_RULE),
    # Uuencoded blocks in text parts are decoded into parts of their own.
    "uuencode": (EICAR_RULE,),
    "uuencode-broken-lines": (EICAR_RULE,),
    "uuencode-bad-mode": (EICAR_RULE,),
    # The sparse member is skipped on its ratio; the EICAR after it is still unpacked.
    "tar-sparse-bomb": ("unscannable:mime:archive-limit:ratio", EICAR_RULE),
    "tar-huge-declared": ("unscannable:mime:archive-limit:bytes",),
    "7z-eicar": (EICAR_RULE,),
    "bzip2-bomb": ("unscannable:mime:archive-limit:ratio",),
    "xz-bomb": ("unscannable:mime:archive-limit:ratio",),
    # Stand-ins for zip/gzip quines (support.quines): only the depth limit ends them.
    # Encrypted archives whose password is in the body: tried with it, unpacked and scanned.
    "7z-encrypted": (EICAR_RULE,),
    "zip-zipcrypto-password-in-body": (EICAR_RULE,),
    "zip-aes-password-in-body": (EICAR_RULE,),
    # Archives the unpacker cannot open, though the recipient's tools may: held by the default
    # blocked_attachments, never delivered unscanned.
    "zip-wrong-password-in-body": ("attachment:attachments:archive-encrypted",),
    "zip-unsupported-method": ("attachment:attachments:archive-unsupported",),
    "zip-without-directory": ("attachment:attachments:archive-corrupt",),
    "zip-recursive-1000": ("unscannable:mime:archive-limit:depth",),
    "gzip-recursive-1000": ("unscannable:mime:archive-limit:depth",),
    # True quines (support.quines): every level unpacks to the same archive, so only the depth
    # limit ends the walk; the zipped EICAR beside the quine is still unpacked and detected.
    "zip-quine": ("unscannable:mime:archive-limit:depth", EICAR_RULE),
    "gzip-quine": ("unscannable:mime:archive-limit:depth", EICAR_RULE),
}


@functools.cache
def _shared_yara() -> YaraEngine:
    """One compiled rule set for the whole module (compiling costs ~100 ms)."""
    return YaraEngine()


@pytest.fixture
def yara() -> YaraEngine:
    return _shared_yara()


def _parse(raw: bytes, **kw: Any) -> ParsedMessage:
    return parse(raw, message_id="m1", tenant="t1", **kw)


def _findings(msg: ParsedMessage, yara: YaraEngine) -> list[Finding]:
    unscannable = scan_finding(msg)
    engines = asyncio.run(_engines(msg, yara))
    return [*([unscannable] if unscannable else []), *engines]


async def _engines(msg: ParsedMessage, yara: YaraEngine) -> list[Finding]:
    return [await yara.check(msg), await AttachmentsEngine().check(msg)]


def test_every_case_has_an_expectation() -> None:
    assert set(EXPECTED) == set(hostile.CASES)


@pytest.mark.parametrize("case", sorted(hostile.CASES))
def test_hostile_case_is_held_back_with_a_reason(case: str, yara: YaraEngine) -> None:
    raw = hostile.CASES[case]()
    msg = _parse(raw)  # never raises
    assert msg.parts[-1].path == RAW_PATH and msg.parts[-1].data == raw
    assert not any(d.startswith("mime-error:") for d in msg.defects), msg.defects
    decision = decide(_findings(msg, yara), Policy())
    assert decision.action == "quarantine", (case, decision, msg.defects)
    for reason in EXPECTED[case]:
        assert reason in decision.reasons, (case, decision.reasons)


@pytest.mark.parametrize(
    "case", ["7z-encrypted", "zip-zipcrypto-password-in-body", "zip-aes-password-in-body"]
)
def test_the_password_in_the_body_opens_the_archive_and_says_so(case: str) -> None:
    msg = _parse(hostile.CASES[case]())
    assert "archive-password:found" in msg.defects
    assert "archive-encrypted" not in msg.defects
    assert any(p.data == samples.eicar() and p.depth == 1 for p in msg.parts)
    assert "attachment:archive-password-in-body" in AttachmentsEngine().inspect(msg).symbols


@pytest.mark.parametrize("levels", [1200, 5000])
def test_deep_nesting_never_recurses_out(levels: int) -> None:
    # Parts allowed generously: each level is two delimiter lines, and this is about depth.
    msg = _parse(hostile.deep_nesting(levels), limits=UnpackLimits(max_parts=4 * levels))
    assert "mime-limit:depth" in msg.defects
    assert not any(d.startswith("mime-error:") for d in msg.defects)
    # The zipped EICAR beside the deep branch was decoded and unpacked.
    assert any(p.data == samples.eicar() and p.depth == 1 for p in msg.parts)


def test_deep_message_rfc822_nesting_is_bounded_too() -> None:
    raw = b"Subject: x\r\n\r\nhello\r\n"
    for _ in range(3000):
        raw = b"Content-Type: message/rfc822\r\n\r\n" + raw
    msg = _parse(raw)
    assert "mime-limit:depth" in msg.defects
    assert not any(d.startswith("mime-error:") for d in msg.defects)
    assert scan_finding(msg) is not None


def _ticking_clock(step: float = 1.0) -> Iterator[float]:
    return (i * step for i in itertools.count())


@pytest.mark.parametrize("case", ["parts-10000", "concatenated-gzip", "zip-bomb"])
def test_a_spent_parse_budget_is_an_unscannable_verdict(case: str, yara: YaraEngine) -> None:
    # Every deadline check advances this clock by a second: the budget runs out part-way.
    clock = _ticking_clock()
    msg = _parse(
        hostile.CASES[case](), limits=UnpackLimits(max_seconds=3.0), clock=lambda: next(clock)
    )
    assert "budget:time" in msg.defects
    assert msg.parts[-1].path == RAW_PATH
    unscannable = scan_finding(msg)
    assert unscannable is not None and unscannable.outcome == "unscannable"
    assert "budget:time" in unscannable.symbols
    decision = decide(_findings(msg, yara), Policy())
    assert decision.action == "quarantine"
    assert "unscannable:mime:budget:time" in decision.reasons


@pytest.mark.parametrize(
    "case", ["tar-bomb", "7z-bomb", "zip-recursive-1000", "zip-quine", "gzip-quine"]
)
def test_archive_cases_stop_on_a_spent_budget_too(case: str) -> None:
    clock = _ticking_clock()
    msg = _parse(
        hostile.CASES[case](), limits=UnpackLimits(max_seconds=3.0), clock=lambda: next(clock)
    )
    assert "budget:time" in msg.defects
    assert msg.parts[-1].path == RAW_PATH


@pytest.mark.parametrize("max_depth", [1, 5, 20])
@pytest.mark.parametrize(
    ("build", "name"), [(quines.zip_quine, "r.zip"), (quines.gzip_quine, "r.gz")]
)
def test_a_true_quine_unpacks_to_itself_until_the_depth_limit(
    build: Callable[[], bytes], name: str, max_depth: int
) -> None:
    quine = build()
    msg = _parse(
        samples.with_attachments((name, quine, "application/octet-stream")),
        limits=UnpackLimits(max_depth=max_depth),
    )
    assert "archive-limit:depth" in msg.defects
    # The attachment and one level per allowed depth, each the same bytes: nothing else ends it.
    levels = [p for p in msg.parts if p.path != RAW_PATH and p.data == quine]
    assert [p.depth for p in levels] == list(range(max_depth + 1))


def test_a_uuencoded_block_with_a_bad_mode_is_decoded_and_recorded() -> None:
    msg = _parse(hostile.uuencoded_bad_mode())
    assert "uuencode-broken" in msg.defects
    assert any(p.filename == "invoice.zip" and p.depth == 0 for p in msg.parts)
    assert any(p.data == samples.eicar() for p in msg.parts)
    # Prose that starts with "begin" opens no block.
    prose = _parse(b"Subject: x\r\n\r\nbegin the meeting at ten\r\nM...\r\n")
    assert not any("#uu" in p.path for p in prose.parts) and not prose.defects


def test_a_budget_that_holds_leaves_no_defect() -> None:
    clock = _ticking_clock(step=0.0)
    msg = _parse(samples.eicar_zip(), clock=lambda: next(clock))
    assert not msg.defects and scan_finding(msg) is None


class _Counting:
    """Wraps a zlib decompressor; counts calls and the compressed bytes handed to it."""

    calls = 0
    fed = 0

    def __init__(self) -> None:
        self._d = zlib.decompressobj(wbits=31)

    def decompress(self, data: Any, max_length: int = 0) -> bytes:
        _Counting.calls += 1
        _Counting.fed += len(data)
        return self._d.decompress(data, max_length)

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data


@pytest.mark.parametrize("members", [1000, 4000, 16000])
def test_concatenated_gzip_work_is_linear_in_members(
    members: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, magic, suffixes = mime._STREAMS["gzip"]
    monkeypatch.setitem(mime._STREAMS, "gzip", (_Counting, magic, suffixes))
    monkeypatch.setattr(_Counting, "calls", 0)
    monkeypatch.setattr(_Counting, "fed", 0)
    payload = b"last member\n"
    data = hostile.concatenated_gzip(members, payload=payload)
    msg = _parse(samples.with_attachments(("data.gz", data, "application/gzip")))
    (member,) = [p for p in msg.parts if p.depth == 1]
    assert member.data == payload
    # One call per tiny member (plus a few while the step grows), and each member is handed
    # at most one first step beyond itself: O(members), where re-feeding the rest was O(n^2).
    assert _Counting.calls <= members + 16
    assert _Counting.fed <= len(data) + members * mime._FIRST_STEP


def test_a_disabled_antivirus_engine_is_a_verdict_and_the_default_policy_holds(
    yara: YaraEngine,
) -> None:
    class Off:
        def disabled_reason(self, engine: str) -> str | None:
            return "FP storm" if engine == "yara" else None

    runner = EngineRunner([yara, AttachmentsEngine()], timeout=20, controls=Off())
    msg = _parse(samples.eicar_plain())
    result = asyncio.run(runner.run(msg))
    off = result.findings[0]
    assert (off.engine, off.outcome, off.error) == ("yara", "disabled", "disabled: FP storm")
    assert result.active == ["attachments"]
    decision = decide(result.findings, Policy())
    assert decision.action == "quarantine"
    assert decision.reasons == ("av-unavailable", "av-missing:yara:disabled")
    # A tenant that chooses to let it through gets the rule on record.
    lenient = decide(result.findings, Policy(on_engine_error="deliver"))
    assert lenient.action == "deliver"
    assert "allowed:on_engine_error=deliver" in lenient.reasons


def test_unscannable_policy_is_the_tenants_and_says_so() -> None:
    msg = _parse(hostile.broken_boundary())
    f = scan_finding(msg)
    assert f is not None
    d = decide([f], Policy(on_unscannable="tag"))
    assert d.action == "tag" and "allowed:on_unscannable=tag" in d.reasons


# --- structure-aware generation ------------------------------------------------------------

_BOUNDARY = st.sampled_from(["b", "b1", "=_x", "a b", "--", "b" * 70, ""])
_CTE = st.sampled_from(["7bit", "base64", "quoted-printable", "BASE64 (x)", "x-uuencode", "bogus"])
_BODY = st.one_of(
    st.binary(max_size=200),
    st.just(samples.eicar()),
    st.just(samples.zip_bytes({"eicar.com": samples.eicar()})),
    st.just(b"=ZZ\r\n=\r\n!!!\r\n"),
)
_NOISE = st.sampled_from(
    [
        b"",
        b"X-Null: a\x00b\r\n",
        b"Subject: caf\xe9\r\n",
        b"Content-Type: text/plain\r\n",  # a duplicate, when the part already has one
        b"Content-Disposition: attachment; filename*0*=utf-8''a%2E; filename*1=\"exe\"\r\n",
        b"Content-Type: multipart/mixed\r\n",  # no boundary at all
    ]
)


@st.composite
def _leaf(draw: st.DrawFn) -> bytes:
    cte = draw(_CTE)
    body = draw(_BODY)
    if cte.lower().startswith("base64"):
        body = _b64(body, draw(st.booleans()))
    head = b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: %s\r\n" % (
        cte.encode()
    )
    return head + draw(_NOISE) + b"\r\n" + body


def _b64(body: bytes, damage: bool) -> bytes:
    text = base64.encodebytes(body)
    return text.replace(b"A", b"*") if damage else text


def _extend(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    @st.composite
    def node(draw: st.DrawFn) -> bytes:
        kind = draw(st.sampled_from(["multipart", "multipart", "rfc822"]))
        if kind == "rfc822":
            return b"Content-Type: message/rfc822\r\n\r\n" + draw(children)
        boundary = draw(_BOUNDARY).encode()
        parts = draw(st.lists(children, max_size=5))
        closed = draw(st.booleans())
        used = boundary if draw(st.integers(0, 9)) else b"other"  # sometimes the wrong one
        body = b"".join(b"--" + used + b"\r\n" + p + b"\r\n" for p in parts)
        if closed:
            body += b"--" + used + b"--\r\n"
        head = b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n'
        return head + draw(_NOISE) + b"\r\n" + body

    return node()


_MESSAGES = st.recursive(_leaf(), _extend, max_leaves=30)
_LIMITS = st.builds(
    UnpackLimits,
    max_parts=st.sampled_from([3, 5000]),
    max_mime_depth=st.sampled_from([2, 50]),
    max_depth=st.sampled_from([1, 5]),
)


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(_MESSAGES, _LIMITS)
def test_generated_mime_structures_never_raise_and_never_deliver_eicar(
    raw: bytes, limits: UnpackLimits
) -> None:
    yara = _shared_yara()
    msg = _parse(b"From: a@b.test\r\n" + raw, limits=limits)
    assert msg.parts[-1].path == RAW_PATH
    findings = _findings(msg, yara)
    decision = decide(findings, Policy())
    # If a plain EICAR part reached the engines decoded, it is detected; whatever the parse
    # could not open is unscannable. Either way a detection or a defect holds it back.
    if any(p.data == samples.eicar() for p in msg.parts):
        assert decision.action == "quarantine", (decision, msg.defects)
        assert EICAR_RULE in decision.reasons


# --- through the scanner service and the trace ---------------------------------------------


def _scanned(
    tmp_path: Path, raw: bytes, policy: Policy, controls: Any = None
) -> tuple[schemas.MessageReceived, schemas.MessageScanned]:
    """``raw`` stored in a real fs store and decided by :class:`Scanner` (no Kafka needed)."""

    async def run() -> tuple[schemas.MessageReceived, schemas.MessageScanned]:
        store = FsBlobStore(tmp_path / "store")
        ref = await store.put(raw)
        tenant = Tenant(name="t", domains=("example.test",), route=Route(host="h"), policy=policy)
        scanner = Scanner(
            factories.settings(tmp_path),
            Tenants([tenant]),
            store,
            [_shared_yara(), AttachmentsEngine()],
            controls=controls,
        )
        received = schemas.MessageReceived(
            message_id="M1", tenant="t", received_at=utcnow(), accepted_at=utcnow(),
            receiver="r", client_ip="192.0.2.1", helo="h", mail_from="a@evil.test",
            rcpt_to=("c@example.test",), size=ref.size, sha256=ref.sha256, object_key=ref.key,
        )  # fmt: skip
        return received, await scanner.scan(received)

    return asyncio.run(run())


def test_the_scanner_records_the_unscannable_verdict_and_quarantines(tmp_path: Path) -> None:
    received, scanned = _scanned(tmp_path, hostile.many_parts(), Policy())
    assert scanned.action == "quarantine"
    (mime_verdict,) = [v for v in scanned.verdicts if v.engine == "mime"]
    assert mime_verdict.outcome == "unscannable" and "mime-limit:parts" in mime_verdict.symbols
    assert "unscannable:mime:mime-limit:parts" in scanned.reasons
    assert "mime-limit:parts" in scanned.defects
    text = render(fold([received, scanned], "M1"))
    assert "verdict   mime" in text and "unscannable" in text


def test_the_trace_names_the_rule_that_delivered_an_unscanned_message(tmp_path: Path) -> None:
    class Off:
        def disabled_reason(self, engine: str) -> str | None:
            return "FP storm" if engine == "yara" else None

    lenient = Policy(on_engine_error="deliver")
    received, scanned = _scanned(tmp_path, samples.clean_message(1), lenient, controls=Off())
    assert scanned.action == "deliver"
    assert "allowed:on_engine_error=deliver" in scanned.reasons
    text = render(fold([received, scanned], "M1"))
    assert "yara" in text and " disabled " in text and "error=disabled: FP storm" in text
    assert "allowed:on_engine_error=deliver" in text
    # The same message under the default policy is held back.
    _, held = _scanned(tmp_path, samples.clean_message(1), Policy(), controls=Off())
    assert held.action == "quarantine"
    assert held.reasons == ("av-unavailable", "av-missing:yara:disabled")
