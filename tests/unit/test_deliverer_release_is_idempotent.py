"""A quarantine release is idempotent: however many release items reach the deliverer (two
operators releasing at once, a release retried), the recipient gets exactly one copy.

Two release items for one message in one batch run one after the other, so the second finds
the first's 250 in the dedupe record; a release in a later batch finds it there too. The peer
is a real SMTP server (aiosmtpd) on loopback.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from support.sink import SinkThread

import schemas
from deliverer.dedupe import DeliveredLog
from deliverer.pool import Pool
from deliverer.service import Deliverer
from mxgate.blobstore import FsBlobStore
from mxgate.kafka import Incoming
from mxgate.settings import DelivererSettings
from mxgate.tenants import Tenants

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
MID = "01JRELEASE0000000000000000"


def _release(object_key: str, by: str) -> Incoming:
    item = schemas.DeliveryRetry.first(
        schemas.WorkKind.RELEASE, message_id=MID, tenant="example",
        reasons=["virus:clamav:Eicar", f"released by {by}"], mail_from="alice@sender.test",
        rcpt_to=["bob@example.test"], object_key=object_key, received_at=NOW, now=NOW,
    )  # fmt: skip
    return Incoming("t.mxgate.submit.v1", 0, 0, MID, item)


def _statuses(outputs: list) -> list[tuple[str, str]]:
    out = []
    for o in outputs:
        if isinstance(o.event, schemas.DeliveryAttempted):
            out += [(r.status, r.reply) for r in o.event.recipients]
    return out


async def test_two_releases_in_one_batch_and_one_later_give_one_copy(tmp_path: Path) -> None:
    sink = SinkThread().start()
    settings = DelivererSettings(state_path=tmp_path / "state", mta_sts_enabled=False)
    tenants = Tenants.from_mapping(
        {
            "tenants": {
                "example": {
                    "domains": ["example.test"],
                    "route": {"host": "127.0.0.1", "port": sink.port},
                }
            }
        }
    )
    store = FsBlobStore(tmp_path / "store")
    delivered = DeliveredLog(tmp_path / "delivered")
    d = Deliverer(settings, tenants, store, delivered, "t.", pool=Pool(settings))
    try:
        ref = await store.put(b"Subject: held\r\nFrom: alice@sender.test\r\n\r\nhello\r\n")
        first = await d.handle([_release(ref.key, "ops-a"), _release(ref.key, "ops-b")])
        later = await d.handle([_release(ref.key, "ops-c")])
        assert len(sink.messages) == 1
        assert [s for s, _ in _statuses(first)] == ["delivered", "delivered"]
        assert sum(reply == "accepted before (dedupe record)" for _, reply in _statuses(first)) == 1
        assert _statuses(later) == [("delivered", "accepted before (dedupe record)")]
    finally:
        await d.aclose()
        delivered.close()
        sink.stop()
