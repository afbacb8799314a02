"""A tenant's ``hold`` policy never keeps a batch's Kafka transaction open past the deadline.

Hold rescans run while the batch's transaction is open; a transaction that outlives
``kafka.transaction_timeout_ms`` is aborted by the broker and the batch retried until it is
dead-lettered. The scanner therefore skips a rescan that could end past
``scanner.hold_deadline`` and decides then (``on_hold_expired``, reason ``av-hold-deadline``);
a configuration whose deadline does not fit the transaction is refused.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from pydantic import ValidationError
from support import factories

import schemas
from mxgate.blobstore import FsBlobStore
from mxgate.settings import DelivererSettings, KafkaSettings, ScannerSettings, Settings
from mxgate.tenants import Policy, Route, Tenant, Tenants
from mxgate.timeutil import utcnow
from scanner.engines.common import EngineBase, Finding, ParsedMessage
from scanner.service import Scanner


class BrokenAntivirus(EngineBase):
    """An antivirus engine that always fails, counting how often it was asked."""

    name = "brokenav"
    kind = "antivirus"

    def __init__(self) -> None:
        self.calls = 0

    @property
    def rules_version(self) -> str:
        """Fixed: the engine has no rules."""
        return "0"

    async def check(self, message: ParsedMessage) -> Finding:
        """Fail, as a crashed daemon would."""
        self.calls += 1
        raise ConnectionRefusedError("daemon down")


def _scan(tmp_path: Path, scanner_settings: ScannerSettings) -> tuple[int, schemas.MessageScanned]:
    policy = Policy(
        on_engine_error="hold", on_hold_expired="quarantine", hold_rescans=3, hold_rescan_delay=0
    )
    engine = BrokenAntivirus()

    async def run() -> schemas.MessageScanned:
        store = FsBlobStore(tmp_path / "store")
        ref = await store.put(b"From: a@evil.test\r\nSubject: hi\r\n\r\nhello\r\n")
        tenant = Tenant(name="t", domains=("example.test",), route=Route(host="h"), policy=policy)
        scanner = Scanner(
            factories.settings(tmp_path, scanner=scanner_settings),
            Tenants([tenant]),
            store,
            [engine],
        )
        received = schemas.MessageReceived(
            message_id="M1", tenant="t", received_at=utcnow(), accepted_at=utcnow(),
            receiver="r", client_ip="192.0.2.1", helo="h", mail_from="a@evil.test",
            rcpt_to=("c@example.test",), size=ref.size, sha256=ref.sha256, object_key=ref.key,
        )  # fmt: skip
        return await scanner.scan(received)

    scanned = asyncio.run(run())
    return engine.calls, scanned


def test_rescans_that_fit_the_deadline_are_made(tmp_path: Path) -> None:
    calls, scanned = _scan(
        tmp_path, ScannerSettings(engines=(), engine_timeout=1.0, hold_deadline=30.0)
    )
    assert calls == 4  # the scan and three rescans
    assert scanned.action == "quarantine"
    assert "av-hold-expired" in scanned.reasons
    assert "av-hold-deadline" not in scanned.reasons


def test_a_rescan_that_could_end_past_the_deadline_is_not_made(tmp_path: Path) -> None:
    # The engine's 20 s timeout cannot fit in a 5 s deadline: the first decision is final.
    calls, scanned = _scan(
        tmp_path, ScannerSettings(engines=(), engine_timeout=20.0, hold_deadline=5.0)
    )
    assert calls == 1
    assert scanned.action == "quarantine"
    assert "av-hold-expired" in scanned.reasons
    assert scanned.reasons[-1] == "av-hold-deadline"


@pytest.mark.parametrize(
    ("key", "section"),
    [
        ("scanner.hold_deadline", {"scanner": ScannerSettings(hold_deadline=25.0)}),
        ("deliverer.batch_deadline", {"deliverer": DelivererSettings(batch_deadline=25.0)}),
    ],
)
def test_a_deadline_that_does_not_fit_the_transaction_is_refused(
    key: str, section: dict[str, object]
) -> None:
    with pytest.raises(ValidationError, match=rf"{re.escape(key)}.*transaction_timeout_ms"):
        Settings(kafka=KafkaSettings(transaction_timeout_ms=30_000), **section)  # type: ignore[arg-type]
