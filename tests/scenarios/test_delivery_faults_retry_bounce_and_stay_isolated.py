"""Delivery against real SMTP servers that misbehave: 4xx, 5xx, a connection dropped mid-DATA,
a server that stalls. One scenario on one pipeline, each fault in turn:

* 451 once, then accepted: delivered exactly once, on the retry;
* dropped mid-DATA once: deferred, then delivered exactly once, the resend recorded
  "in doubt" (the message had been sent when the line dropped);
* 550 for a recipient verified at RCPT time: bounced, and the envelope sender gets one RFC 3464
  DSN (through the gateway's own delivery path, to the outbound route), while a bounce of
  null-sender mail gets none, nor does one for an unverified recipient from an unauthenticated
  sender (backscatter);
* one tenant's server stalls: another tenant's mail is delivered meanwhile, and the stalled
  message is recorded as deferred when the batch deadline passes.
"""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

import pytest
from support import samples
from support.pipeline import Pipeline, queued_id, wait_for
from support.sink import SinkThread, mxgate_id

import schemas
from mxgate.kafka import read_events

pytestmark = pytest.mark.integration


def test_faults_retries_bounces_dsns_and_isolation(kafka, tmp_path: Path) -> None:
    sink = SinkThread().start()  # tenant "example"'s server
    stalled = SinkThread().start()  # tenant "other"'s server
    outside = SinkThread().start()  # the Internet, for DSNs to outside senders
    p = Pipeline(
        tmp_path,
        kafka,
        sink.port,
        extra_env={
            "MXGATE_DELIVERER__OUTBOUND_ROUTE": f"127.0.0.1:{outside.port}",
            "MXGATE_DELIVERER__BATCH_DEADLINE": "3",
            "MXGATE_DELIVERER__COMMAND_TIMEOUT": "60",
        },
    )
    listed = ", ".join(f'"t{i}@example.test"' for i in range(1, 8))
    (tmp_path / "tenants.toml").write_text(
        "[tenants.example]\n"
        'domains = ["example.test"]\n'
        f'route = {{ hops = [{{ host = "127.0.0.1", port = {sink.port} }}] }}\n'
        # Recipients verified at RCPT time: a bounce for one of them may be reported.
        f'recipients = {{ mode = "static", addresses = [{listed}] }}\n'
        "[tenants.other]\n"
        'domains = ["other.test"]\n'
        f'route = {{ host = "127.0.0.1", port = {stalled.port} }}\n'
        # Opted out of verification: any address is accepted, so a bounce may be backscatter.
        'recipients = { mode = "none" }\n'
    )

    def attempts(mid: str) -> list[schemas.DeliveryAttempted]:
        return [
            e for e in read_events(p.settings, {mid}) if isinstance(e, schemas.DeliveryAttempted)
        ]

    def statuses(mid: str) -> list[str]:
        return [e.recipients[0].status for e in attempts(mid)]

    def copies(s: SinkThread, mid: str) -> int:
        return sum(1 for m in s.messages if mxgate_id(m.data) == mid)

    def send(i: int, rcpt: str, sender: str = "alice@sender.test") -> str:
        code, text = p.send(samples.clean_message(i, sender=sender or "x@y.test"), [rcpt], sender)
        assert code == 250, text
        return queued_id(text)

    try:
        p.start_all()

        # 451 once, then the retry tier delivers it.
        sink.handler.fault, sink.handler.fault_count = "tempfail", 1
        mid = send(1, "t1@example.test")
        wait_for(lambda: statuses(mid)[-1:] == ["delivered"], 120, "delivery after a 451")
        assert statuses(mid) == ["deferred", "delivered"]
        assert attempts(mid)[0].recipients[0].reply_code == 451
        assert copies(sink, mid) == 1

        # Connection dropped in the middle of DATA: deferred (no 250 seen), then delivered.
        sink.handler.fault, sink.handler.fault_count = "drop", 1
        mid = send(2, "t2@example.test")
        wait_for(lambda: statuses(mid)[-1:] == ["delivered"], 120, "delivery after a drop")
        assert statuses(mid) == ["deferred", "delivered"]
        # The whole message had gone out when the line dropped: the resend is marked in doubt.
        assert "in doubt" in attempts(mid)[1].recipients[0].reply
        assert copies(sink, mid) == 1

        # 550: bounced, and a DSN to the sender through the gateway's delivery path.
        sink.handler.fault, sink.handler.fault_count = "reject", 1
        mid = reported = send(3, "t3@example.test")
        dsn = wait_for(lambda: outside.messages, 120, "the DSN")
        assert statuses(mid) == ["bounced"]
        assert len(dsn) == 1
        assert dsn[0].mail_from in ("", "<>")  # the null sender, as aiosmtpd records it
        assert dsn[0].rcpt_to == ("alice@sender.test",)
        report = email.message_from_bytes(dsn[0].data, policy=policy.default)
        assert report.get_content_type() == "multipart/report"
        status = next(x for x in report.walk() if x.get_content_type() == "message/delivery-status")
        per_rcpt = status.get_payload()[1]
        assert per_rcpt["Final-Recipient"] == "rfc822; t3@example.test"
        assert per_rcpt["Status"] == "5.7.1"
        assert per_rcpt["Diagnostic-Code"].startswith("smtp; 550")
        assert mid in dsn[0].data.decode()
        # The DSN is a work item with its own delivery record.
        dsn_id = mxgate_id(dsn[0].data)
        assert statuses(dsn_id) == ["delivered"] and attempts(dsn_id)[0].action == "dsn"

        # A bounce of null-sender mail produces no DSN (backscatter loops).
        sink.handler.fault, sink.handler.fault_count = "reject", 1
        mid = send(4, "t4@example.test", sender="")
        wait_for(lambda: statuses(mid) == ["bounced"], 120, "the null-sender bounce")
        # No backscatter: tenant "other" opted out of verification and the sender is not
        # authenticated (no SPF pass, no DKIM), so its bounce is recorded but not reported.
        stalled.handler.fault, stalled.handler.fault_count = "reject", 1
        forged = send(8, "s8@other.test", sender="victim@forged.test")
        wait_for(lambda: statuses(forged) == ["bounced"], 120, "the unverified bounce")
        # A DSN would be a submit item written in the bounce's own transaction: none is.
        dsn_items = [
            e
            for e in read_events(p.settings)
            if isinstance(e, schemas.DeliveryRetry) and e.kind is schemas.WorkKind.DSN
        ]
        assert [e.reasons for e in dsn_items] == [(f"dsn-for:{reported}",)]
        # A fifth message, delivered after the bounces were committed, shows the deliverer has
        # moved past them; still only the one DSN.
        mid5 = send(5, "t5@example.test")
        wait_for(lambda: copies(sink, mid5) == 1, 120, "the fifth message")
        assert len(outside.messages) == 1

        # Tenant "other"'s server stalls; tenant "example" is served meanwhile.
        stalled.handler.fault = "stall"
        stuck = send(6, "s6@other.test")
        fine = send(7, "t7@example.test")
        wait_for(lambda: copies(sink, fine) == 1, 120, "delivery while another server stalls")
        wait_for(lambda: statuses(stuck)[:1] == ["deferred"], 60, "the stalled attempt deferred")
        assert "still running" in attempts(stuck)[0].recipients[0].reply
        assert stalled.messages == []
    finally:
        p.stop_all()
        sink.stop()
        stalled.stop()
        outside.stop()
