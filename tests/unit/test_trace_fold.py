"""`mxgate trace`'s fold of events into one message's history, the CLI time parser, and the
scoreboard's pure counting (no Kafka needed: the events are built here)."""

from __future__ import annotations

import datetime as dt

import pytest
import typer

import schemas
from cli.common import parse_time
from ops.scoreboard import bucket, counter_keys, facts, summarize
from ops.trace import fold, render

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def verdict(
    engine: str, outcome: str, ms: float = 1.0, shadow: bool = False, **detail: str
) -> schemas.EngineVerdict:
    return schemas.EngineVerdict(
        engine=engine, kind="antivirus", engine_version="1", rules_version="r", outcome=outcome,
        duration_ms=ms, shadow=shadow, detail=detail,
    )  # fmt: skip


def received(mid: str) -> schemas.MessageReceived:
    return schemas.MessageReceived(
        message_id=mid, tenant="t", received_at=at(0), accepted_at=at(0), receiver="r",
        client_ip="1.2.3.4", helo="h", mail_from="a@x", rcpt_to=("b@y",), size=1,
        sha256="0" * 64, object_key="k",
    )  # fmt: skip


def quarantined(mid: str, action: str = "quarantine") -> schemas.MessageQuarantined:
    return schemas.MessageQuarantined(
        message_id=mid, tenant="t", quarantined_at=at(2), action=action,
        reasons=("virus:yara:EICAR",), mail_from="a@x", rcpt_to=("b@y",), object_key="k",
        size=1,
    )  # fmt: skip


def switched(seconds: float, enabled: bool) -> schemas.EngineControlled:
    return schemas.EngineControlled(engine="clam", enabled=enabled, at=at(seconds))


def events(mid: str = "M1") -> list[schemas.Event]:
    return [
        received(mid),
        schemas.MessageScanned(
            message_id=mid, tenant="t", scanned_at=at(1), scanner="s", action="quarantine",
            reasons=("virus:yara:EICAR",), policy_version="1",
            verdicts=(verdict("yara", "infected", rule="EICAR"),
                      verdict("clam", "clean", shadow=True)),
            mail_from="a@x", rcpt_to=("b@y",), object_key="k", sha256="0" * 64, size=1,
            received_at=at(0),
        ),
        quarantined(mid),
        # An engine switched off meanwhile (no message ID: a control event) ...
        switched(2.5, False),
        # ... and one long after this message's last event: not part of its story.
        switched(99, True),
        schemas.QuarantineReleased(
            message_id=mid, tenant="t", released_at=at(3), released_by="ops",
            reason="false positive", rcpt_to=("b@y",),
        ),
        # A work item: internal, never part of the story.
        schemas.DeliveryRetry.first(
            schemas.WorkKind.RELEASE, message_id=mid, tenant="t", reasons=(), mail_from="a@x",
            rcpt_to=("b@y",), object_key="k", received_at=at(0), now=at(3),
        ),
        schemas.DeliveryAttempted(
            message_id=mid, tenant="t", attempted_at=at(4), attempt=1, remote_host="mx",
            action="release",
            recipients=(schemas.RecipientOutcome(recipient="b@y", status="delivered",
                                                 reply_code=250, reply="ok"),),
        ),
        # A kind without a dedicated form of its own.
        schemas.TrainingLabelled(
            message_id=mid, tenant="t", labelled_at=at(5), label="ham", source="release",
            labelled_by="ops", reason="fp", object_key="k", action="quarantine",
        ),
        received("OTHER"),
    ]  # fmt: skip


def test_fold_keeps_the_old_keys_and_lists_every_event_in_time_order() -> None:
    h = fold(events(), "M1")
    assert h["outcome"] == "delivered"  # released, then delivered
    assert h["recipients"] == {"b@y": "delivered"}
    assert h["received"]["message_id"] == "M1" and h["scanned"]["action"] == "quarantine"
    assert h["quarantine"]["action"] == "quarantine" and len(h["deliveries"]) == 1
    assert [e["event"] for e in h["events"]] == [
        "MessageReceived", "MessageScanned", "MessageQuarantined", "EngineControlled",
        "QuarantineReleased", "DeliveryAttempted", "TrainingLabelled",
    ]  # fmt: skip
    assert h["events"][0]["received_at"] == at(0).isoformat()  # JSON-ready
    assert h["scanned"]["verdicts"][0]["detail"] == {"rule": "EICAR"}


def test_render_shows_each_kind_and_unknown_ones_generically() -> None:
    text = render(fold(events(), "M1"))
    assert text.splitlines()[0] == "message M1: delivered"
    assert "clam (shadow)" in text
    assert "yara 1 rules=r infected score=0 symbols=- 1.0ms detail: rule=EICAR" in text
    assert "released by ops to b@y: false positive" in text
    assert "EngineControlled  engine=clam enabled=False" in text
    assert "TrainingLabelled  labelled_at=" not in text  # its time leads the line
    assert "TrainingLabelled  label=ham source=release labelled_by=ops reason=fp" in text


@pytest.mark.parametrize(
    ("extra", "outcome"),
    [
        ([], "unknown"),
        ([received("M")], "received"),
        ([schemas.QuarantineDeleted(message_id="M", tenant="t", deleted_at=at(1),
                                    deleted_by="x", reason="r")], "deleted"),
        ([quarantined("M", "discard")], "discarded"),
    ],
)  # fmt: skip
def test_outcomes(extra: list[schemas.Event], outcome: str) -> None:
    assert fold(extra, "M")["outcome"] == outcome


def status(seconds: float, state: str) -> schemas.EngineStatus:
    return schemas.EngineStatus(
        scanner="s", engine="clam", kind="antivirus", version="1", rules_version="r",
        state=state, at=at(seconds),
    )  # fmt: skip


def test_a_healthy_engine_heartbeat_is_no_part_of_a_history() -> None:
    h = fold([*events(), status(0.5, "enabled"), status(0.6, "open")], "M1")
    kinds = [e["event"] for e in h["events"]]
    assert kinds.count("EngineStatus") == 1  # the circuit opening, not the heartbeat
    assert kinds[:2] == ["MessageReceived", "EngineStatus"]


def test_parse_time() -> None:
    now = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    assert parse_time("24h", now) == now - dt.timedelta(days=1)
    assert parse_time("90m", now) == now - dt.timedelta(minutes=90)
    assert parse_time("now", now) == now
    assert parse_time("2026-04-30T10:00:00", now) == dt.datetime(2026, 4, 30, 10, tzinfo=dt.UTC)
    with pytest.raises(typer.BadParameter):
        parse_time("yesterday", now)


def test_scoreboard_counts_unique_catches_disagreement_failures_and_latency() -> None:
    rec = schemas.MessageScanned(
        message_id="M", tenant="t", scanned_at=at(10), scanner="s", action="quarantine",
        reasons=(), policy_version="1", mail_from="", rcpt_to=(), object_key="k", sha256="h",
        size=1, received_at=at(9), verdicts=(
            verdict("yara", "infected", ms=2.0), verdict("clam", "clean", ms=50.0),
            verdict("sophos", "clean", ms=5.0), verdict("slow", "timeout", ms=20000.0),
            verdict("shadowy", "infected", ms=1.0, shadow=True)),
    )  # fmt: skip
    fs = {f["engine"]: f for f in facts(rec, window=3600)}
    # yara alone (of the counted engines) saw it; the shadow engine does not take that away.
    assert fs["yara"]["unique"] and fs["yara"]["disagree"]
    assert not fs["clam"]["disagree"] and not fs["clam"]["unique"]
    assert fs["shadowy"]["shadow"] and not fs["shadowy"]["unique"]
    assert fs["slow"]["timeout"] and not fs["slow"]["answered"]
    counters: dict[str, int] = {}
    for _ in range(3):
        for f in fs.values():
            for k in counter_keys(f):
                counters[k] = counters.get(k, 0) + 1
    board = summarize(counters.items())["engines"]
    window = dt.datetime.fromtimestamp(int(at(10).timestamp()) // 3600 * 3600, dt.UTC)
    y = board["yara"][window.isoformat()]
    assert y["messages"] == 3 and y["detection_rate"] == 1.0 and y["unique_catches"] == 3
    assert y["disagreement_rate"] == 1.0 and not y["shadow"]
    assert board["slow"][window.isoformat()]["timeout_rate"] == 1.0
    assert board["shadowy"][window.isoformat()]["shadow"] is True
    p50 = board["clam"][window.isoformat()]["latency_ms"]["p50"]
    assert 50.0 <= p50 <= 50.0 * 1.12
    assert bucket(0.01) == 0 and bucket(1.0) < bucket(2.0)


def test_scoreboard_does_not_count_disabled_or_unscannable_as_answers() -> None:
    rec = schemas.MessageScanned(
        message_id="M", tenant="t", scanned_at=at(10), scanner="s", action="quarantine",
        reasons=(), policy_version="1", mail_from="", rcpt_to=(), object_key="k", sha256="h",
        size=1, received_at=at(9), verdicts=(
            verdict("mime", "unscannable"), verdict("clam", "disabled"),
            verdict("yara", "infected")),
    )  # fmt: skip
    fs = {f["engine"]: f for f in facts(rec, window=3600)}
    assert not fs["mime"]["answered"] and not fs["clam"]["answered"]
    # Neither stands against yara's detection: it is still unique and undisputed.
    assert fs["yara"]["unique"] and not fs["yara"]["disagree"]
