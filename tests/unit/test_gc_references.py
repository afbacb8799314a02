"""What gc counts as a reference to a body: every event's object_key, a dead letter's original
record included (`mxgate deadletter retry` needs its body), quarantine only while held."""

from __future__ import annotations

import datetime as dt

import schemas
from ops.gc import _note

AT = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)


def received(mid: str, key: str) -> schemas.MessageReceived:
    return schemas.MessageReceived(
        message_id=mid, tenant="t", received_at=AT, accepted_at=AT, receiver="r",
        client_ip="127.0.0.1", helo="h", mail_from="a@x", rcpt_to=("b@y",),
        object_key=key, sha256="0" * 64, size=1,
    )  # fmt: skip


def dead(value: bytes) -> schemas.DeadLettered:
    return schemas.DeadLettered(
        topic="mxgate.received.v1", partition=0, offset=7, key="M1", value=value,
        cause="handler", error="boom", attempts=3, group="g", dead_lettered_at=AT,
    )  # fmt: skip


def test_a_dead_lettered_record_keeps_its_body() -> None:
    referenced: set[str] = set()
    _note(dead(schemas.encode_event(received("M1", "sha256/ab/cd/x"))), False, referenced, {})
    assert referenced == {"sha256/ab/cd/x"}


def test_an_undecodable_dead_letter_names_no_body() -> None:
    referenced: set[str] = set()
    _note(dead(b"not an event"), False, referenced, {})
    assert referenced == set()
