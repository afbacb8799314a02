"""decide(): antivirus failure modes (deliver / tag / hold / quarantine), attachment and office
symbols judged against the tenant's lists, sandbox scores."""

from __future__ import annotations

import pytest

from mxgate.tenants import Policy
from scanner.engines.common import Finding
from scanner.policy import decide


def av(engine: str, outcome: str, *symbols: str) -> Finding:
    return Finding(engine, "1", "r", outcome, symbols=symbols, kind="antivirus")  # type: ignore[arg-type]


def pol(engine: str, outcome: str, *symbols: str, score: float = 0.0) -> Finding:
    return Finding(engine, "1", "r", outcome, symbols=symbols, kind="policy", score=score)  # type: ignore[arg-type]


def test_partial_failure_modes() -> None:
    f = [av("clamav", "error"), av("yara", "clean")]
    d = decide(f, Policy())  # fail closed by default
    assert (d.action, d.reasons) == ("quarantine", ("av-degraded", "av-missing:clamav:error"))
    d = decide(f, Policy(on_av_partial_failure="tag"))
    assert (d.action, d.reasons) == (
        "tag",
        ("av-degraded", "av-missing:clamav:error", "allowed:on_av_partial_failure=tag"),
    )
    d = decide(f, Policy(on_av_partial_failure="deliver"))
    assert d.action == "deliver" and "allowed:on_av_partial_failure=deliver" in d.reasons


def test_total_failure_modes() -> None:
    f = [av("clamav", "timeout"), av("yara", "error")]
    assert decide(f, Policy(on_engine_error="tag")).action == "tag"
    assert decide(f, Policy(on_engine_error="quarantine")).reasons == (
        "av-unavailable",
        "av-missing:clamav:timeout",
        "av-missing:yara:error",
    )
    assert decide(f, Policy()).action == "quarantine"  # the default fails closed


def test_hold_asks_for_a_rescan_then_applies_the_expiry_action() -> None:
    f = [av("clamav", "error"), av("yara", "error")]
    p = Policy(on_engine_error="hold", on_hold_expired="quarantine")
    first = decide(f, p, final=False)
    assert first.rescan == ("clamav", "yara") and first.action == "deliver"
    last = decide(f, p, final=True)
    assert last.rescan == () and last.action == "quarantine"
    assert last.reasons == (
        "av-unavailable",
        "av-missing:clamav:error",
        "av-missing:yara:error",
        "av-hold-expired",
    )
    # An expiry that lets the message through names that rule.
    lenient = decide(f, p.model_copy(update={"on_hold_expired": "deliver"}), final=True)
    assert lenient.action == "deliver"
    assert lenient.reasons[-1] == "allowed:on_hold_expired=deliver"
    # Once an engine answers, there is nothing to hold for.
    assert decide([av("clamav", "clean")], p, final=False).rescan == ()


def test_attachment_symbols_act_only_when_the_tenant_lists_them() -> None:
    f = [pol("attachments", "match", "attachment:type:pdf", "attachment:archive-limit:ratio")]
    d = decide(f, Policy())
    assert d.action == "quarantine"
    assert d.reasons == ("attachment:attachments:archive-limit:ratio",)
    assert decide(f, Policy(blocked_attachments=("type:executable",))).action == "deliver"
    assert decide(f, Policy(blocked_attachments=("type:pdf",))).reasons == (
        "attachment:attachments:type:pdf",
    )


@pytest.mark.parametrize("what", ["archive-encrypted", "archive-corrupt", "archive-unsupported"])
def test_an_archive_the_unpacker_could_not_open_is_held_by_default(what: str) -> None:
    """Its inside was never scanned, yet the recipient's tools may open it (a password in the
    body, a lenient unzipper, a method we lack): fail closed unless the tenant opts out."""
    f = [pol("attachments", "match", "attachment:type:archive", f"attachment:{what}")]
    d = decide(f, Policy())
    assert (d.action, d.reasons) == ("quarantine", (f"attachment:attachments:{what}",))
    lenient = tuple(b for b in Policy().blocked_attachments if b != what)
    assert decide(f, Policy(blocked_attachments=lenient)).action == "deliver"


def test_office_symbols() -> None:
    f = [pol("office", "match", "office:vba-autoexec", "office:encrypted")]
    assert decide(f, Policy()).reasons == ("office:office:vba-autoexec", "office:office:encrypted")
    assert decide(f, Policy(blocked_office=())).action == "deliver"


def test_suspicious_macros_are_held_without_an_auto_exec_entry_point() -> None:
    """Issue 13: a macro that calls Shell or CreateObject runs on one click; only a plain
    macro (office:vba-macro) goes through by default, and a tenant can loosen the list."""
    f = [pol("office", "match", "office:vba-suspicious")]
    assert (decide(f, Policy()).action, decide(f, Policy()).reasons) == (
        "quarantine",
        ("office:office:vba-suspicious",),
    )
    lenient = tuple(b for b in Policy().blocked_office if b != "vba-suspicious")
    assert decide(f, Policy(blocked_office=lenient)).action == "deliver"
    assert decide([pol("office", "match", "office:vba-macro")], Policy()).action == "deliver"


def test_sandbox_score_threshold_and_timeout() -> None:
    hi = [pol("sandbox", "clean", "ransomware", score=8.0)]
    assert decide(hi, Policy()).reasons == ("sandbox:sandbox:ransomware",)
    assert decide(hi, Policy(sandbox_malicious=9.0)).action == "deliver"
    to = [Finding("sandbox", "1", "r", "timeout", kind="policy")]
    assert decide(to, Policy(on_sandbox_timeout="quarantine")).action == "quarantine"


@pytest.mark.parametrize(
    ("symbol", "field"),
    [
        ("DMARC_POLICY_REJECT", "on_dmarc_reject"),
        ("DMARC_POLICY_QUARANTINE", "on_dmarc_quarantine"),
        ("BACKSCATTER", "on_backscatter"),
    ],
)
def test_auth_findings_follow_their_own_policy_fields(symbol: str, field: str) -> None:
    f = Finding("dmarc", "1", "1", "match", symbols=(symbol, "DMARC_FAIL"), kind="auth")
    for action in ("deliver", "tag", "discard"):
        d = decide([f], Policy(**{field: action}))
        assert d.action == action, (symbol, action, d)
        assert f"auth:dmarc:{symbol}" in d.reasons
