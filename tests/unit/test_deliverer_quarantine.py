"""The quarantine index (the quarantine topic folded by message ID), its filters and digests."""

from __future__ import annotations

import datetime as dt
import email
from email import policy

import schemas
from ops.quarantine import build_digest, fold, group_for_digest, matches, parse_when

T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def _q(
    mid: str,
    tenant: str,
    rcpts: list[str],
    at: dt.datetime,
    action: str = "quarantine",
    reasons: tuple[str, ...] = ("virus:clamav:Eicar",),
) -> schemas.MessageQuarantined:
    return schemas.MessageQuarantined(
        message_id=mid, tenant=tenant, quarantined_at=at, action=action, reasons=reasons,
        mail_from="alice@sender.test", rcpt_to=tuple(rcpts), object_key=f"sha256/{mid}",
        size=10,
    )  # fmt: skip


def _deleted(mid: str, reason: str) -> schemas.QuarantineDeleted:
    return schemas.QuarantineDeleted(
        message_id=mid, tenant="acme", deleted_at=T0, deleted_by="eve", reason=reason
    )


def _index() -> dict:
    events: list[schemas.Event] = [
        _q("A", "acme", ["bob@acme.test"], T0),
        _q(
            "B",
            "acme",
            ["carol@acme.test", "bob@acme.test"],
            T0 + dt.timedelta(hours=2),
            reasons=("spam:12.0",),
        ),
        _q("C", "other", ["x@other.test"], T0),
        _q("D", "acme", ["bob@acme.test"], T0, action="discard"),
        _q("E", "acme", ["dan@acme.test"], T0),
        schemas.QuarantineReleased(
            message_id="A", tenant="acme", released_at=T0, released_by="eve", reason="ok",
            rcpt_to=("bob@acme.test",),
        ),
        _deleted("E", "junk"),
        # An event for a message the index never saw is ignored.
        _deleted("Z", ""),
    ]  # fmt: skip
    return fold(iter(events))


def test_fold_tracks_state_and_history() -> None:
    idx = _index()
    assert {k: e.state for k, e in idx.items()} == {
        "A": "released", "B": "held", "C": "held", "D": "held", "E": "deleted",
    }  # fmt: skip
    assert idx["A"].history == [
        {
            "event": "released",
            "at": T0.isoformat(),
            "by": "eve",
            "reason": "ok",
            "rcpt_to": ["bob@acme.test"],
        }
    ]


def test_filters_are_per_tenant() -> None:
    idx = _index()

    def ids(**kw: object) -> set[str]:
        return {k for k, e in idx.items() if matches(e, **kw)}  # type: ignore[arg-type]

    assert ids(tenant="acme") == {"B", "D"}
    assert ids(tenant="acme", state="all") == {"A", "B", "D", "E"}
    assert ids(tenant="other") == {"C"}
    assert ids(tenant="acme", recipient="CAROL") == {"B"}
    assert ids(tenant="acme", reason="spam") == {"B"}
    assert ids(tenant="acme", sender="nobody@") == set()
    assert ids(tenant="acme", since=T0 + dt.timedelta(hours=1)) == {"B"}
    assert ids(tenant="acme", until=T0 + dt.timedelta(hours=1)) == {"D"}


def test_parse_when() -> None:
    assert parse_when("6h", T0) == T0 - dt.timedelta(hours=6)
    assert parse_when("2d", T0) == T0 - dt.timedelta(days=2)
    assert parse_when("2026-11-01T00:00:00", T0) == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def test_digest_lists_held_messages_per_recipient() -> None:
    idx = _index()
    groups = group_for_digest([e for e in idx.values() if e.tenant == "acme"])
    # Released, deleted and discarded messages are not offered.
    assert {r: [e.message_id for e in es] for r, es in groups.items()} == {
        "carol@acme.test": ["B"], "bob@acme.test": ["B"],
    }  # fmt: skip
    raw = build_digest(hostname="gw.test", tenant="acme", recipient="bob@acme.test",
                       entries=groups["bob@acme.test"], now=T0)  # fmt: skip
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg["To"] == "bob@acme.test" and msg["Auto-Submitted"] == "auto-generated"
    assert "1 message(s)" in msg["Subject"]
    body = msg.get_content()
    assert "id B" in body and "mxgate quarantine release <id> --tenant acme" in body
