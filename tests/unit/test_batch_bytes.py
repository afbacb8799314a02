"""Byte budgets for the scanner's and the deliverer's batches (issue 11).

The consume loop closes a batch before the record that would take it past ``batch_bytes``
(weighed by the role: the body size its event carries) and gives the rest back by rewinding
their partitions; a record heavier than the whole budget is a batch of its own. The loop runs
here against a consumer double that honours ``consume`` and ``seek`` like librdkafka's (the
records after a seek come again from that offset), so the batches it forms can be counted;
``tests/integration/test_batches_close_at_the_byte_budget.py`` does the same on a real broker.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from prometheus_client import REGISTRY
from pydantic import ValidationError

import schemas
from deliverer.service import work_bytes
from mxgate import kafka
from mxgate.kafka import Incoming, TransactionalLoop
from mxgate.settings import DelivererSettings, KafkaSettings, ScannerSettings, Settings
from scanner.budget import DecodedBudget
from scanner.engines.common import ParsedMessage, Part

NOW = dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.UTC)
TOPIC = "mxgate.received.v1"


def _received(mid: str, size: int) -> schemas.MessageReceived:
    return schemas.MessageReceived(
        message_id=mid, tenant="example", received_at=NOW, accepted_at=NOW, receiver="r",
        client_ip="192.0.2.1", helo="mx.sender.test", mail_from="a@sender.test",
        rcpt_to=("b@example.test",), size=size, sha256="00" * 32, object_key=f"k/{mid}",
    )  # fmt: skip


class _Record:
    """What the loop reads of a confluent_kafka.Message."""

    def __init__(self, partition: int, offset: int, key: str, value: bytes) -> None:
        self._p, self._o, self._k, self._v = partition, offset, key, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes:
        return self._k.encode()

    def value(self) -> bytes:
        return self._v


class _Log:
    """A consumer double over a fixed log: ``consume`` hands out the records at or past each
    partition's position in log order, ``seek`` moves a position back (or on)."""

    def __init__(self, records: Sequence[_Record]) -> None:
        self.records = list(records)
        self.pos: dict[int, int] = {}
        self.seeks: list[tuple[int, int]] = []

    def consume(self, n: int, timeout: float) -> list[_Record]:
        out = []
        for r in self.records:
            if len(out) == n:
                break
            if r.offset() == self.pos.get(r.partition(), 0):
                out.append(r)
                self.pos[r.partition()] = r.offset() + 1
        return out

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))
        self.pos[tp.partition] = tp.offset


def _log(sizes: Sequence[int], partitions: int = 1) -> _Log:
    """One record per size, spread round-robin over ``partitions``."""
    next_offset = [0] * partitions
    records = []
    for i, size in enumerate(sizes):
        p = i % partitions
        value = schemas.encode_event(_received(f"m{i}", size))
        records.append(_Record(p, next_offset[p], f"m{i}", value))
        next_offset[p] += 1
    return _Log(records)


def _loop(
    monkeypatch: pytest.MonkeyPatch, log: _Log, batch_bytes: int | None, batch_size: int = 50
) -> TransactionalLoop:
    monkeypatch.setattr(kafka, "Producer", lambda cfg: object())
    monkeypatch.setattr(kafka, "Consumer", lambda cfg: log)
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:9", group_prefix="budget")

    def weigh(i: Incoming) -> int:
        return i.event.size if isinstance(i.event, schemas.MessageReceived) else 0

    async def handle(batch: Sequence[Incoming]) -> list[kafka.Output]:
        return []

    return TransactionalLoop(
        settings, "scanner", [TOPIC], handle, batch_size, batch_bytes=batch_bytes, weigh=weigh
    )


def _batches(loop: TransactionalLoop, limit: int = 100) -> list[list[tuple[str, int]]]:
    """Form batches until the log is drained: each as [(message id, size)]."""
    out = []
    for _ in range(limit):
        items = loop._filter(loop._next_batch())
        if not items:
            return out
        batch = []
        for it in items:
            assert it.incoming is not None
            ev = it.incoming.event
            assert isinstance(ev, schemas.MessageReceived)
            batch.append((ev.message_id, ev.size))
        out.append(batch)
    raise AssertionError("the log never drained")


@pytest.mark.parametrize("partitions", [1, 3])
def test_a_batch_closes_before_the_message_that_would_pass_the_budget(
    monkeypatch: pytest.MonkeyPatch, partitions: int
) -> None:
    mb = 1024 * 1024
    sizes = [20 * mb] * 50  # the benchmark's load: 50 messages of 20 MB
    log = _log(sizes, partitions)
    loop = _loop(monkeypatch, log, batch_bytes=256 * mb)
    batches = _batches(loop)
    # Count-only batching would take all 50 (1,000 MB) at once; the budget takes 12 (240 MB).
    assert [len(b) for b in batches] == [12, 12, 12, 12, 2]
    assert all(sum(s for _, s in b) <= 256 * mb for b in batches)
    # Every record exactly once, each partition in order.
    taken = [mid for b in batches for mid, _ in b]
    assert sorted(taken) == sorted(f"m{i}" for i in range(50))
    for p in range(partitions):
        mine = [int(m[1:]) for m in taken if int(m[1:]) % partitions == p]
        assert mine == sorted(mine)
    assert log.seeks, "the records past the budget were given back by a seek"


def test_without_a_budget_batches_are_bounded_by_count_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = _log([20 * 1024 * 1024] * 50)
    batches = _batches(_loop(monkeypatch, log, batch_bytes=None))
    assert [len(b) for b in batches] == [50]
    assert not log.seeks


def test_a_message_bigger_than_the_budget_is_a_batch_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes = [10, 10, 1000, 10, 1000, 1000, 10]
    batches = _batches(_loop(monkeypatch, _log(sizes), batch_bytes=100))
    assert [[s for _, s in b] for b in batches] == [[10, 10], [1000], [10], [1000], [1000], [10]]


def test_sizes_that_meet_the_budget_exactly_stay_in_one_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batches = _batches(_loop(monkeypatch, _log([25, 25, 25, 25, 1]), batch_bytes=100))
    assert [[s for _, s in b] for b in batches] == [[25, 25, 25, 25], [1]]


def test_the_count_still_bounds_a_batch_of_small_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batches = _batches(_loop(monkeypatch, _log([1] * 25), batch_bytes=10**9, batch_size=10))
    assert [len(b) for b in batches] == [10, 10, 5]


def test_batch_bytes_are_observed_per_group(monkeypatch: pytest.MonkeyPatch) -> None:
    labels = {"group": "budget.scanner"}

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = sample("mxgate_kafka_batch_bytes_sum"), sample("mxgate_kafka_batch_bytes_count")
    cut = sample("mxgate_kafka_batches_cut_by_bytes_total")
    _batches(_loop(monkeypatch, _log([60, 60, 60]), batch_bytes=100))
    assert sample("mxgate_kafka_batch_bytes_sum") - before[0] == 180
    assert sample("mxgate_kafka_batch_bytes_count") - before[1] == 3
    assert sample("mxgate_kafka_batches_cut_by_bytes_total") - cut == 2


def test_the_loop_refuses_a_budget_below_one(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="batch_bytes"):
        _loop(monkeypatch, _log([]), batch_bytes=0)


@pytest.mark.parametrize(
    ("model", "field"),
    [
        (ScannerSettings, "batch_bytes"),
        (ScannerSettings, "decoded_bytes"),
        (DelivererSettings, "batch_bytes"),
    ],
)
def test_the_budgets_are_validated(model: Any, field: str) -> None:
    assert getattr(model(), field) == 256 * 1024 * 1024
    assert getattr(model(**{field: 1}), field) == 1
    for bad in (0, -1, "lots"):
        with pytest.raises(ValidationError):
            model(**{field: bad})


def test_the_budgets_are_set_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MXGATE_SCANNER__BATCH_BYTES", "1048576")
    monkeypatch.setenv("MXGATE_DELIVERER__BATCH_BYTES", "2097152")
    s = Settings()
    assert (s.scanner.batch_bytes, s.deliverer.batch_bytes) == (1048576, 2097152)


def _scanned(action: str, size: int) -> schemas.MessageScanned:
    return schemas.MessageScanned(
        message_id="m1", tenant="example", scanned_at=NOW, scanner="s", action=action,
        reasons=(), spam_score=0.0, policy_version="1", verdicts=(), active_engines=(),
        mail_from="a@sender.test", rcpt_to=("b@example.test",), object_key="k/m1",
        sha256="00" * 32, size=size, received_at=NOW,
    )  # fmt: skip


def _incoming(ev: schemas.Event) -> Incoming:
    return Incoming("t", 0, 0, "m1", ev)


def test_the_deliverer_weighs_what_it_will_fetch() -> None:
    unknown = 50 * 1024 * 1024
    assert work_bytes(_incoming(_scanned("deliver", 7000)), unknown) == 7000
    assert work_bytes(_incoming(_scanned("tag", 7000)), unknown) == 7000
    # A quarantine or discard decision is only recorded: no body is read.
    assert work_bytes(_incoming(_scanned("quarantine", 7000)), unknown) == 0
    first = schemas.DeliveryRetry.for_decision(_scanned("deliver", 7000), NOW)
    assert first.size == 7000
    retry = first.next_attempt(first.rcpt_to, NOW)
    assert work_bytes(_incoming(retry), unknown) == 7000
    # An item that does not say (written before v5) counts as the largest accepted message.
    old = schemas.DeliveryRetry.first(
        schemas.WorkKind.RELEASE, message_id="m1", tenant="example", reasons=(),
        mail_from="", rcpt_to=("b@example.test",), object_key="k/m1", received_at=NOW, now=NOW,
    )  # fmt: skip
    assert old.size is None
    assert work_bytes(_incoming(old), unknown) == unknown


def _parsed(*sizes: int) -> ParsedMessage:
    parts = tuple(Part(f"{i}", None, "application/octet-stream", b"x" * n) for i, n in
                  enumerate(sizes))  # fmt: skip
    return ParsedMessage(message_id="m", tenant="t", raw=b"", headers=(), parts=parts)


def test_decoded_parts_are_held_within_the_budget_plus_one_message() -> None:
    budget = DecodedBudget(100)
    inside: list[int] = []

    async def scan(sizes: tuple[int, ...]) -> None:
        async def parse() -> ParsedMessage:
            await asyncio.sleep(0)
            return _parsed(*sizes)

        async with budget.parsed(parse):
            inside.append(budget.held)
            await asyncio.sleep(0.01)  # the engines run

    async def main() -> None:
        # Ten messages of 60 decoded bytes (an archive member each, say), scanned at once.
        await asyncio.gather(*(scan((30, 30)) for _ in range(10)))

    asyncio.run(main())
    assert len(inside) == 10
    assert budget.held == 0
    # Never more than the budget plus the last message admitted below it.
    assert budget.peak <= 100 + 60
    assert budget.peak == 120  # two at a time: 60 < 100 lets the second in, 120 stops the third


def test_a_message_decoding_to_more_than_the_budget_is_still_scanned() -> None:
    budget = DecodedBudget(100)
    order: list[str] = []

    async def scan(name: str, size: int) -> None:
        async def parse() -> ParsedMessage:
            return _parsed(size)

        async with budget.parsed(parse):
            order.append(name)
            await asyncio.sleep(0.01)

    async def main() -> None:
        await asyncio.gather(scan("huge", 1000), scan("small", 10), scan("huge2", 1000))

    asyncio.run(main())
    assert order == ["huge", "small", "huge2"]
    # The small one waited for the first huge one; the second came in beside it (10 < 100):
    # the budget plus one message, never two huge ones at once.
    assert budget.peak == 1010
    assert budget.held == 0


def test_a_failed_parse_holds_nothing() -> None:
    budget = DecodedBudget(100)

    async def parse() -> ParsedMessage:
        raise RuntimeError("parser bug")

    async def main() -> None:
        with pytest.raises(RuntimeError):
            async with budget.parsed(parse):
                pass
        async with budget.parsed(lambda: asyncio.sleep(0, _parsed(10))):
            assert budget.held == 10

    asyncio.run(main())
    assert budget.held == 0


def test_the_decoded_budget_refuses_a_limit_below_one() -> None:
    with pytest.raises(ValueError, match="limit"):
        DecodedBudget(0)
