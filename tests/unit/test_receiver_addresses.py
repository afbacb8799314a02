"""Envelope addresses: precise 553 replies for what aiosmtpd's parser lets through."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.addresses import address_problem


@pytest.mark.parametrize(
    "address",
    [
        "user@example.test",
        "first.last+tag@sub.example.test",
        "u@[192.0.2.1]",
        "x@xn--bcher-kva.test",
    ],
)
def test_good_addresses_pass(address: str) -> None:
    assert address_problem(address, smtputf8=False) is None


def test_null_sender_only_where_allowed() -> None:
    assert address_problem("<>", smtputf8=False, null_ok=True) is None
    assert address_problem("<>", smtputf8=False) == "553 5.1.3 Empty address not allowed here"


@pytest.mark.parametrize(
    ("address", "smtputf8", "code"),
    [
        ("user", False, "553 5.1.3"),
        ("@example.test", False, "553 5.1.3"),
        ("user@", False, "553 5.1.3"),
        ("a" * 65 + "@example.test", False, "553 5.1.3"),
        ("u@" + "a" * 260, False, "553 5.1.3"),
        ("u@exa_mple.test", False, "553 5.1.3"),
        ("u@-bad.test", False, "553 5.1.3"),
        ("u\x01x@example.test", False, "553 5.1.3"),
        ("u@[300.1]", False, "553 5.1.3"),
        ("jörg@example.test", False, "553 5.6.7"),
        ("u\udcff@example.test", True, "553 5.6.7"),
    ],
)
def test_bad_addresses_get_a_precise_reply(address: str, smtputf8: bool, code: str) -> None:
    reply = address_problem(address, smtputf8=smtputf8)
    assert reply is not None and reply.startswith(code), reply


def test_utf8_address_with_smtputf8_passes() -> None:
    assert address_problem("jörg@bücher.test", smtputf8=True) is None


@given(st.text(max_size=300), st.booleans(), st.booleans())
def test_never_raises_and_answers_553(address: str, smtputf8: bool, null_ok: bool) -> None:
    reply = address_problem(address, smtputf8=smtputf8, null_ok=null_ok)
    assert reply is None or reply.startswith("553 5.")
