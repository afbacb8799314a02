"""Slow senders cannot hold what others need, and a body never sits whole in memory.

Each limit is driven through a real receiver session (GatewaySMTP + ReceiverHandler on a
loopback port, a real filesystem store) by raw-socket clients that trickle bytes: the body
slot is taken at the first body line (not at DATA), a minimum data rate cuts a trickling
client, each client IP has a cap on bodies in flight, and the bytes of all bodies in flight
have a budget. A 20 MB message goes through with a tracemalloc peak far below its size.
No assertion is about time: the tests wait for states (slots taken, bytes counted) instead.
"""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

import pytest
from support.loopback_receiver import receiver, wait_until

from mxgate.settings import ReceiverSettings
from receiver.limits import BodySlot, DataRate, InflightGate

LINE = b"x" * 98 + b"\r\n"  # 100 bytes, no leading dot


def _message(lines: int) -> bytes:
    return b"Subject: t\r\n\r\n" + LINE * lines


# -- the body slot ---------------------------------------------------------------------------


def test_slot_is_taken_at_the_first_body_line_not_at_data(tmp_path: Path) -> None:
    with receiver(tmp_path, max_inflight=1) as r:
        idle = r.client()
        assert idle.data().startswith("354 ")  # 354 without a slot: DATA alone holds nothing
        assert r.gateway.inflight.count == 0

        holder = r.client()
        assert holder.data().startswith("354 ")
        holder.sock.sendall(b"Subject: first line takes the slot\r\n")
        wait_until(lambda: r.gateway.inflight.count == 1, "the holder's slot")

        late = r.client()  # every slot is taken: refused at DATA, before any body
        assert late.data() == "451 4.3.2 System busy, try again later"

        idle.sock.sendall(b"Subject: too late\r\n")  # mid-body: answered, then closed
        assert idle.reply() == "451 4.3.2 System busy, try again later"
        assert idle.closed()

        holder.sock.sendall(b"\r\nbody\r\n.\r\n")
        assert holder.reply().startswith("250 2.0.0 Ok: queued as ")
        wait_until(lambda: r.gateway.inflight.count == 0, "the slot given back")
        assert late.cmd(b"DATA").startswith("354 ")  # the slot is free again
        late.sock.sendall(_message(3) + b".\r\n")
        assert late.reply().startswith("250 ")
        assert len(r.publisher.events) == 2
        assert r.rejections("inflight", "backpressure") == 2
        assert r.temp_files() == []


# -- the minimum data rate -------------------------------------------------------------------


def test_a_trickling_sender_is_cut_with_451_4_4_2(tmp_path: Path) -> None:
    with receiver(tmp_path, min_data_rate=1000, min_data_rate_window=1.0) as r:
        slow = r.client()
        assert slow.data().startswith("354 ")
        slow.sock.sendall(b"Subject: one line, then almost nothing\r\n")
        wait_until(lambda: r.gateway.inflight.count == 1, "the slow body's slot")
        slow.sock.sendall(b"x")  # a byte now and then is far below 1000 bytes/s
        assert (
            slow.reply() == "451 4.4.2 Data arriving slower than 1000 bytes/s, closing connection"
        )
        assert slow.closed()
        assert r.rejections("data_rate", "too_slow") == 1
        wait_until(lambda: r.gateway.inflight.count == 0, "the slot given back")
        assert r.gateway.inflight.bytes == 0
        wait_until(lambda: r.temp_files() == [], "the spooled part removed")
        assert r.publisher.events == []

        fast = r.client()  # the same limit lets a normal sender through
        assert fast.data().startswith("354 ")
        fast.sock.sendall(_message(10_000) + b".\r\n")
        assert fast.reply().startswith("250 ")
        assert r.rejections("data_rate", "too_slow") == 1


def test_data_rate_window_does_not_count_the_receivers_own_stalls() -> None:
    now = [0.0]
    rate = DataRate(1000, 10.0, clock=lambda: now[0])
    rate.feed(5000)
    now[0] = 10.0
    assert rate.check().accepted is False  # 500 B/s over the window
    rate.feed(5000)
    rate.stalled(5.0)  # 5 s writing to the store: the client had 5 s, sent 1000 B/s
    now[0] = 20.0
    assert rate.check().accepted
    rate.feed(0)
    now[0] = 30.0
    refused = rate.check()
    assert (refused.check, refused.reason, refused.reply[:9]) == (
        "data_rate",
        "too_slow",
        "451 4.4.2",
    )
    assert DataRate(0, 1.0).check().accepted  # 0: off


# -- per-IP cap ------------------------------------------------------------------------------


def test_one_ip_cannot_take_more_than_its_share_of_bodies(tmp_path: Path) -> None:
    with receiver(tmp_path, max_inflight=10, max_inflight_per_ip=2, proxy_protocol=True,
                  proxy_trusted=("127.0.0.0/8",)) as r:  # fmt: skip
        bad = "198.51.100.1"
        waiting = r.client(bad)
        assert waiting.data().startswith("354 ")
        holders = [r.client(bad) for _ in range(2)]
        for h in holders:
            assert h.data().startswith("354 ")
            h.sock.sendall(b"Subject: trickle\r\n")
        wait_until(lambda: r.gateway.inflight.per_ip.get(bad) == 2, "two bodies from one IP")

        third = r.client(bad)
        refusal = f"451 4.7.1 Too many messages in progress from {bad}, try again later"
        assert third.data() == refusal
        waiting.sock.sendall(b"Subject: mid-body\r\n")
        assert waiting.reply() == refusal and waiting.closed()

        other = r.client("198.51.100.2")  # another IP still gets a slot
        assert other.data().startswith("354 ")
        other.sock.sendall(_message(5) + b".\r\n")
        assert other.reply().startswith("250 ")
        assert r.rejections("inflight", "per_ip") == 2
        assert [e.client_ip for e in r.publisher.events] == ["198.51.100.2"]


# -- the byte budget -------------------------------------------------------------------------


def test_bytes_in_flight_have_a_budget_across_sessions(tmp_path: Path) -> None:
    budget = 100_000
    with receiver(tmp_path, max_message_size=budget, max_inflight_bytes=budget) as r:
        second = r.client()
        assert second.data().startswith("354 ")
        first = r.client()
        assert first.data().startswith("354 ")
        first.sock.sendall(LINE * (budget // len(LINE)))  # exactly the whole budget
        wait_until(lambda: r.gateway.inflight.bytes == budget, "the first body's bytes")

        full = "451 4.3.1 Insufficient system resources (mail in progress), try again later"
        third = r.client()
        assert third.data() == full  # refused at DATA: the budget is spent
        second.sock.sendall(LINE)  # a slot is free, but its bytes would pass the budget
        assert second.reply() == full and second.closed()

        first.sock.sendall(b".\r\n")
        assert first.reply().startswith("250 ")
        wait_until(lambda: r.gateway.inflight.bytes == 0, "the budget given back")
        assert third.cmd(b"DATA").startswith("354 ")
        third.sock.sendall(_message(500) + b".\r\n")
        assert third.reply().startswith("250 ")
        assert r.rejections("inflight", "byte_budget") == 2
        assert [e.size for e in r.publisher.events] == [budget, len(_message(500))]


def test_the_budget_must_hold_one_largest_message() -> None:
    with pytest.raises(ValueError, match="max_inflight_bytes"):
        ReceiverSettings(max_message_size=10_000_000, max_inflight_bytes=1_000_000)


def test_gate_counts_slots_ips_and_bytes() -> None:
    gate = InflightGate(3, per_ip=2, max_bytes=1000)
    a, b = gate.enter("1.1.1.1"), gate.enter("1.1.1.1")
    assert isinstance(a, BodySlot) and isinstance(b, BodySlot)
    assert gate.check("1.1.1.1").reason == "per_ip"
    assert gate.check("2.2.2.2").accepted
    assert a.grow(600).accepted
    assert b.grow(500).reason == "byte_budget"  # 1100 would pass the 1000-byte budget
    assert gate.check("2.2.2.2").accepted  # 600 of 1000 spent
    a.release()
    a.release()  # idempotent
    assert (gate.count, gate.bytes, gate.per_ip) == (1, 0, {"1.1.1.1": 1})


# -- bounded memory --------------------------------------------------------------------------


def test_a_20_mb_message_is_streamed_with_bounded_memory(tmp_path: Path) -> None:
    line = b"y" * 998 + b"\r\n"
    block = line * 1000  # 1 MB, built before tracing starts
    size = 20 * len(block)
    head = b"Message-ID: <big@sender.test>\r\nSubject: big\r\n\r\n"
    digest = hashlib.sha256(head + block * 20).hexdigest()
    with receiver(tmp_path, max_message_size=size + 1024) as r:
        c = r.client()
        assert c.data().startswith("354 ")
        tracemalloc.start()
        try:
            c.sock.sendall(head)
            for _ in range(size // len(block)):
                c.sock.sendall(block)
            c.sock.sendall(b".\r\n")
            reply = c.reply()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert reply.startswith("250 ")
        # The whole body is 20 MB; the receiver holds one 256 KiB chunk (plus its reader's
        # buffer) at a time. Joining the body in memory, as before, peaks above 40 MB.
        assert peak < 4 * 1024 * 1024, peak
        (event,) = r.publisher.events
        assert (event.sha256, event.size) == (digest, len(head) + size)
        assert event.header_message_id == "<big@sender.test>"
        path = r.store / event.object_key
        assert path.stat().st_size == len(head) + size
        assert r.temp_files() == []


def test_a_store_failing_mid_body_answers_451_after_the_dot(tmp_path: Path) -> None:
    """The client is mid-body when a write fails: the rest is read and dropped, the 451
    comes after the final dot, and the session goes on (nothing is read as a command)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    with receiver(tmp_path, store=blocker / "store") as r:
        c = r.client()
        assert c.data().startswith("354 ")
        c.sock.sendall(_message(20_000) + b".\r\n")  # 2 MB: many chunks after the failure
        assert c.reply() == "451 4.3.0 Temporary local problem (storage): please try again later"
        assert c.cmd(b"RSET") == "250 2.0.0 OK"
        assert c.cmd(b"QUIT").startswith("221 ")
        assert r.publisher.events == []
        wait_until(lambda: r.gateway.inflight.count == 0, "the slot given back")
