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
