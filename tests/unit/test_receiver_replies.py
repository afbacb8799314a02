"""Every reply the receiver sends carries an RFC 3463 enhanced status code."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.replies import enhance, has_enhanced_code


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("250 OK", "250 2.0.0 OK"),
        ("221 Bye", "221 2.0.0 Bye"),
        ("500 Error: bad syntax", "500 5.5.2 Error: bad syntax"),
        ("501 Syntax: MAIL FROM: <address>", "501 5.5.4 Syntax: MAIL FROM: <address>"),
        ("503 Error: need MAIL command", "503 5.5.1 Error: need MAIL command"),
        ("503 Error: send HELO first", "503 5.5.1 Error: send HELO first"),
        (
            "552 Error: message size exceeds fixed maximum message size",
            "552 5.3.4 Error: message size exceeds fixed maximum message size",
        ),
        (
            "555 MAIL FROM parameters not recognized",
            "555 5.5.4 MAIL FROM parameters not recognized",
        ),
        ("220 Ready to start TLS", "220 2.0.0 Ready to start TLS"),
        ("454 TLS not available", "454 4.7.0 TLS not available"),
    ],
)
def test_aiosmtpd_texts_get_their_code(raw: str, expected: str) -> None:
    assert enhance(raw) == expected


def test_replies_with_a_code_and_intermediate_replies_pass_through() -> None:
    assert enhance("550 5.1.1 Recipient address rejected") == "550 5.1.1 Recipient address rejected"
    assert enhance("354 End data with <CR><LF>.<CR><LF>") == "354 End data with <CR><LF>.<CR><LF>"
    assert enhance("334 VXNlcm5hbWU6") == "334 VXNlcm5hbWU6"


def test_multiline_replies_are_enhanced_per_line() -> None:
    assert enhance("250-first\r\n250 last") == "250-2.0.0 first\r\n250 2.0.0 last"


@given(
    code=st.sampled_from([211, 214, 220, 221, 250, 251, 252, 421, 450, 451, 452, 454])
    | st.integers(500, 559),
    text=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)
def test_every_final_reply_ends_up_with_a_matching_class(code: int, text: str) -> None:
    out = enhance(f"{code} {text}")
    assert out.startswith(f"{code} {str(code)[0]}.")
    assert has_enhanced_code(out), out
