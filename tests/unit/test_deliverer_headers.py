"""Outgoing headers: verdict headers for tag actions and the optional subject tag."""

from __future__ import annotations

import datetime as dt

from deliverer.headers import tag_subject, trace_headers


def test_tag_action_adds_x_spam_headers() -> None:
    h = trace_headers(
        message_id="ID1", action="tag", reasons=["spam:5.5"], spam_score=5.5, helo="x",
        client_ip="192.0.2.1", hostname="gw.test", recipients=["b@example.test"],
        received_at=dt.datetime(2026, 11, 28, tzinfo=dt.UTC),
    )  # fmt: skip
    assert b"X-Spam-Flag: YES\r\n" in h
    assert b"X-Spam-Status: Yes, score=5.50 tests=spam:5.5\r\n" in h


def test_deliver_action_has_no_spam_flag() -> None:
    h = trace_headers(
        message_id="ID1", action="deliver", reasons=[], spam_score=0.0, helo="x",
        client_ip="192.0.2.1", hostname="gw.test", recipients=["b@example.test"],
        received_at=dt.datetime(2026, 11, 28, tzinfo=dt.UTC),
    )  # fmt: skip
    assert b"X-Spam" not in h


def test_subject_tag_is_prefixed_and_the_rest_is_untouched() -> None:
    raw = b"From: a@b\r\nSubject:  Hello\r\n there\r\nTo: c@d\r\n\r\nSubject: body line\r\n"
    out = tag_subject(raw, "[SPAM]")
    assert out == raw.replace(b"Subject:  Hello", b"Subject: [SPAM] Hello", 1)
    assert tag_subject(out, "[SPAM]") == out  # idempotent


def test_subject_tag_added_when_missing_and_lf_only_input() -> None:
    assert tag_subject(b"From: a@b\n\nbody\n", "[SPAM]") == b"Subject: [SPAM]\nFrom: a@b\n\nbody\n"
    assert tag_subject(b"subject: x\n\nb\n", "") == b"subject: x\n\nb\n"
    # A tag cannot inject a header.
    assert b"\r\nBcc" not in tag_subject(b"Subject: x\r\n\r\n", "[S]\r\nBcc: evil@x")


def test_forged_authentication_results_in_our_name_are_dropped() -> None:
    from deliverer.headers import drop_forged_authres

    raw = (
        b"Authentication-Results: MXGATE.local; dmarc=pass\r\n\theader.from=bank.test\r\n"
        b"Authentication-Results: mx.other.test; spf=pass\r\n"
        b"Subject: s\r\n\r\nAuthentication-Results: mxgate.local; in the body stays\r\n"
    )
    out = drop_forged_authres(raw, "mxgate.local")
    assert out == (
        b"Authentication-Results: mx.other.test; spf=pass\r\n"
        b"Subject: s\r\n\r\nAuthentication-Results: mxgate.local; in the body stays\r\n"
    )
    clean = b"Subject: s\r\n\r\nbody\r\n"
    assert drop_forged_authres(clean, "mxgate.local") is clean
    assert drop_forged_authres(raw, "") is raw


def _trace(reasons: list[str], action: str = "tag") -> bytes:
    return trace_headers(
        message_id="01JABCDEFGHJKMNPQRSTVWXYZ0", action=action, reasons=reasons,
        spam_score=9.0, helo="x", client_ip="192.0.2.1", hostname="gw.test",
        recipients=["b@example.test"], received_at=dt.datetime(2026, 11, 28, tzinfo=dt.UTC),
    )  # fmt: skip


def test_long_reasons_are_folded_under_998_and_capped_with_a_count() -> None:
    from email import message_from_bytes
    from email.policy import compat32

    from support.sink import mxgate_id

    reasons = [f"engine{i}:{'x' * 150}" for i in range(300)]
    h = _trace(reasons)
    lines = h.split(b"\r\n")
    assert lines[-1] == b"" and all(len(line) <= 998 for line in lines)
    assert all(len(line) <= 78 or b" " not in line.strip() for line in lines)
    assert mxgate_id(h + b"\r\n") == "01JABCDEFGHJKMNPQRSTVWXYZ0"  # id stays on the first line
    msg = message_from_bytes(h + b"\r\nbody\r\n", policy=compat32)
    for name, prefix in (("X-MXGate", "reasons="), ("X-Spam-Status", "tests=")):
        value = " ".join(str(msg[name]).split())
        listed = value.split(prefix, 1)[1].split(", ")
        more = listed.pop()
        assert listed == reasons[: len(listed)] and len(listed) >= 5
        assert more == f"{reasons[len(listed)]}, (+{300 - len(listed) - 1} more)" or (
            more == f"(+{300 - len(listed)} more)"
        )


def test_short_reasons_stay_on_one_line() -> None:
    h = _trace(["spam:5.5", "dnsbl:zen"], action="deliver")
    assert b"X-MXGate: action=deliver; id=01JABCDEFGHJKMNPQRSTVWXYZ0; score=9.00;" in h
    assert b"reasons=spam:5.5, dnsbl:zen\r\n" in h
    assert b"reasons=none\r\n" in _trace([], action="deliver")


def test_forged_verdict_headers_are_removed_and_other_hosts_authres_stay() -> None:
    from deliverer.headers import drop_forged_headers

    keep_ar = b"Authentication-Results: mx.other.test; spf=pass\r\n"
    raw = (
        b"X-MXGate: action=deliver; id=X; score=0.00; reasons=none\r\n"
        b"x-mxgate-queue-id: X\r\n"
        b"X-Spam-Status: No, score=0.0\r\n\ttests=none\r\n"
        b"X-Spam-Flag : NO\r\n"  # obsolete whitespace before the colon
        b"X-Spam-Level: \xff\xfe\r\n"  # 8-bit
        b"Authentication-Results: GW.test 1; dmarc=pass\r\n"  # our hostname, a version
        b"Authentication-Results:\r\n\tmxgate.local; dkim=pass\r\n"  # id on the folded line
        b"Authentication-Results: (forged) (a (nested) one) mxgate.local;\r\n dkim=pass\r\n"
        b"Authentication-Results: mxgate.local\t; spf=pass \xc3\xa9\r\n"
        + keep_ar
        + b"Authentication-Results: mxgate.local.evil.test; spf=pass\r\n"
        b"Subject: caf\xc3\xa9\r\n\r\n"
        b"X-MXGate: action=deliver in the body stays\r\n"
    )
    out = drop_forged_headers(raw, "mxgate.local", "gw.test")
    assert out == (
        keep_ar + b"Authentication-Results: mxgate.local.evil.test; spf=pass\r\n"
        b"Subject: caf\xc3\xa9\r\n\r\nX-MXGate: action=deliver in the body stays\r\n"
    )


def test_forged_headers_lf_only_and_headers_only_messages() -> None:
    from deliverer.headers import drop_forged_headers

    raw = b"From: a@b\nX-Spam-Status: No\n\tmore\nX-MXGate: action=deliver\n"
    assert drop_forged_headers(raw, "mxgate.local") == b"From: a@b\n"
    lf = b"X-Spam-Flag: NO\nSubject: s\n\nX-Spam-Flag: body\n"
    assert drop_forged_headers(lf, "mxgate.local") == b"Subject: s\n\nX-Spam-Flag: body\n"
    # Lookalikes are not ours; a message with nothing to remove is returned as it is.
    clean = b"X-Spammer: 1\r\nX-MXGateway: 2\r\nno colon line\r\n\r\nb\r\n"
    assert drop_forged_headers(clean, "mxgate.local") is clean
