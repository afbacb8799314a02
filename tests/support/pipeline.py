"""The mxgate roles as real processes for end-to-end tests, each test on its own topics.

On the session's secured bus (:mod:`support.bus`) every role process connects as its own
principal, with the catalog's ACLs granted on the pipeline's topic and group prefix and no
more; `mxgate` commands a test runs with :attr:`Pipeline.env` act as ops, and the test's own
reads and writes (:attr:`Pipeline.settings`) as the broker's super user.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import smtplib
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

import schemas
from mxgate import catalog
from mxgate.kafka import consumer_config, create_topics, read_events
from mxgate.settings import DEFAULT_ENGINES, Settings
from support.bus import Bus
from support.cli import MXGATE
from support.factories import prefix, tenants_toml, write_tenants

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_RUNNING: list[Pipeline] = []


def wait_for(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll ``cond`` until it returns something truthy; fail with ``what`` after ``timeout``,
    or at once when a role process of a running pipeline died on its own."""
    deadline = time.monotonic() + timeout
    while True:
        for p in _RUNNING:
            p.assert_alive()
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


class Pipeline:
    """receiver, scanner and deliverer processes sharing one prefix of topics."""

    def __init__(
        self,
        workdir: Path,
        bus: Bus | str,
        sink_port: int,
        store_env: dict[str, str] | None = None,
        extra_env: dict[str, str] | None = None,
        tenant_extra: str = "",
        recipients: str | None = None,
    ) -> None:
        """``bus``: the broker (a bootstrap string is an open, PLAINTEXT one).
        ``tenant_extra``: TOML lines added to the ``example`` tenant's table.
        ``recipients``: both tenants' ``recipients`` table (see
        :func:`support.factories.tenants_toml`); by default the receiver verifies recipients
        by callout to ``sink_port``, so a test whose sink is not there passes
        ``factories.NO_VERIFICATION``."""
        self.workdir = workdir
        self.bus = bus if isinstance(bus, Bus) else Bus.open(bus)
        self.prefix = prefix()
        self.receiver_port = free_port()
        toml = tenants_toml(sink_port, example_extra=tenant_extra, recipients=recipients)
        tenants = write_tenants(workdir, toml)
        self.env = {
            **os.environ,
            "MXGATE_TENANTS_FILE": str(tenants),
            # `mxgate` commands run with this env are ops actions; start() gives each role
            # process its own user instead.
            **self.bus.env("ops"),
            "MXGATE_KAFKA__TOPIC_PREFIX": self.prefix,
            "MXGATE_KAFKA__GROUP_PREFIX": f"g{self.prefix}",
            "MXGATE_KAFKA__SESSION_TIMEOUT_MS": "6000",
            "MXGATE_KAFKA__TRANSACTION_TIMEOUT_MS": "10000",
            # Batches must end well inside that transaction (Settings refuses longer deadlines).
            "MXGATE_SCANNER__HOLD_DEADLINE": "7",
            "MXGATE_DELIVERER__BATCH_DEADLINE": "7",
            "MXGATE_RECEIVER__PORT": str(self.receiver_port),
            "MXGATE_STORE__PATH": str(workdir / "store"),
            "MXGATE_DELIVERER__STATE_PATH": str(workdir / "deliverer"),
            # The test's own callout cache: a shared one would carry answers between tests
            # (and RocksDB lets one process at a time open it).
            "MXGATE_RECEIVER__RECIPIENT_CACHE": str(workdir / "recipients"),
            "MXGATE_DELIVERER__RETRY_SCHEDULE": "[1, 2, 4]",
            "MXGATE_DELIVERER__CONNECT_TIMEOUT": "5",
            "MXGATE_DELIVERER__COMMAND_TIMEOUT": "10",
            "MXGATE_LOG_LEVEL": "info",
            # The default protection, but clamav: most tests start no clamd (those that do
            # set the engines). Learnt state of this test's own, never the checkout's var/.
            "MXGATE_SCANNER__ENGINES": json.dumps([e for e in DEFAULT_ENGINES if e != "clamav"]),
            "MXGATE_SCANNER__SPAM__BAYES_PATH": str(workdir / "bayes"),
            "MXGATE_SCANNER__SPAM__MODEL_PATH": str(workdir / "spam-model.json"),
            **(store_env or {}),
            **(extra_env or {}),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._killed: set[int] = set()
        _RUNNING.append(self)
        # The test's own view: the same prefixes and timeouts, as the super user.
        self.settings = self._settings()
        self.settings = self.settings.model_copy(
            update={"kafka": self.bus.as_role(self.settings.kafka, "admin")}
        )
        tiers = len(self.settings.deliverer.retry_schedule)
        create_topics(self.settings.kafka, catalog.all_topics(tiers))
        self.bus.grant(self.settings.kafka.topic_prefix, self.settings.kafka.group_prefix, tiers)

    def role_settings(self, role: str) -> Settings:
        """The pipeline's settings as ``role``'s principal sees the bus (to probe its rights)."""
        return self.settings.model_copy(
            update={"kafka": self.bus.as_role(self.settings.kafka, role)}
        )

    def _settings(self) -> Settings:
        keys = {k: v for k, v in self.env.items() if k.startswith("MXGATE_")}
        old = {k: os.environ.get(k) for k in keys}
        os.environ.update(keys)
        try:
            return Settings()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def start(
        self, role: str, instance: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``role`` (name it ``instance``; restarting with the same name fences the old).
        ``env``: settings of this process only (e.g. a second receiver's port)."""
        name = instance or role
        log = open(self.workdir / f"{name}.log", "ab")
        env = self.env | self.bus.env(role) | {"MXGATE_KAFKA__INSTANCE_ID": name} | (env or {})
        p = subprocess.Popen(
            [MXGATE, "run", role],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = p
        if role == "receiver":
            port = int(env["MXGATE_RECEIVER__PORT"])
            wait_for(lambda: self._receiver_up(port), 30, "the receiver to listen")
        return p

    def start_all(self) -> None:
        self.start("scanner")
        self.start("deliverer")
        self.start("receiver")

    def _receiver_up(self, port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    def kill(self, name: str) -> None:
        """SIGKILL a role process: no cleanup, no flush."""
        p = self.procs[name]
        self._killed.add(p.pid)
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    def assert_alive(self) -> None:
        """Fail when a role exited without the test stopping or killing it."""
        for name, p in self.procs.items():
            if p.poll() is not None and p.pid not in self._killed:
                raise AssertionError(f"{name} exited with {p.returncode}:\n{self.log_tail(name)}")

    def stop(self, name: str, timeout: float = 60) -> int:
        """SIGTERM a role and wait for it to drain."""
        p = self.procs[name]
        self._killed.add(p.pid)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        return int(p.returncode)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        if self in _RUNNING:
            _RUNNING.remove(self)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def send(
        self, body: bytes, rcpts: list[str], sender: str = "alice@sender.test"
    ) -> tuple[int, str]:
        """One SMTP transaction to the receiver; returns the reply to DATA (code, text)."""
        with smtplib.SMTP("127.0.0.1", self.receiver_port, timeout=60) as c:
            c.ehlo("client.sender.test")
            code, msg = c.mail(sender)
            assert code == 250, (code, msg)
            for r in rcpts:
                code, msg = c.rcpt(r)
                if code != 250:
                    return code, msg.decode()
            code, msg = c.data(body)
            return code, msg.decode()


def queued_id(reply: str) -> str:
    """The message ID: the last word of a 250 reply."""
    return reply.split()[-1]


MakePipeline = Callable[..., Pipeline]
"""The ``make_pipeline`` fixture: ``make_pipeline(sink_port, **Pipeline options)``."""


def received_ids(p: Pipeline) -> list[str]:
    """The ID of every MessageReceived on the pipeline's received topic, in topic order, read to
    its end (read_events waits out a fresh topic's missing leader and never answers partially)."""
    topic = catalog.name(catalog.RECEIVED, p.settings.kafka.topic_prefix)
    return [
        e.message_id
        for e in read_events(p.settings, topics=[topic])
        if isinstance(e, schemas.MessageReceived)
    ]


# -- senders that retry, and quiescence -----------------------------------------------------


@dataclass
class Answer:
    """How one message fared with a retrying sender: the final reply and what it took."""

    code: int
    text: str
    attempts: int
    cut_after_data: int = 0
    """Attempts whose connection broke during DATA, before the reply: the receiver may have
    kept the body (a copy under another message ID), as any MTA may (RFC 1047)."""
    replies: list[str] = field(default_factory=list)
    """The transient replies and connection errors met on the way, for a failure's message."""


def send_until_answered(
    p: Pipeline,
    body: bytes,
    rcpts: list[str],
    sender: str = "alice@sender.test",
    deadline: float = 180.0,
    pause: float = 0.3,
) -> Answer:
    """Send one message the way an MTA does: a 4xx reply or a lost connection (a receiver
    killed or restarting) is retried after ``pause``, until a 2xx or 5xx answer to DATA or
    ``deadline`` seconds (then the last transient reply is returned)."""
    end = time.monotonic() + deadline
    ans = Answer(0, "", 0)
    while True:
        ans.attempts += 1
        in_data = False
        c = smtplib.SMTP(timeout=60)
        try:
            c.connect("127.0.0.1", p.receiver_port)
            c.ehlo("client.sender.test")
            code, msg = c.mail(sender)
            if code == 250:
                for r in rcpts:
                    code, msg = c.rcpt(r)
                    if code != 250:
                        break
                else:
                    in_data = True
                    code, msg = c.data(body)
            ans.code, ans.text = code, msg.decode(errors="replace")
        except smtplib.SMTPResponseException as e:  # e.g. a 421 greeting
            ans.code, ans.text = e.smtp_code, e.smtp_error.decode(errors="replace")
        except (smtplib.SMTPException, OSError) as e:
            # A dropped connection (a receiver killed or restarting): try again later.
            ans.code, ans.text = 421, f"{type(e).__name__}: {e}"
            ans.cut_after_data += in_data
        finally:
            # The answer is in hand: whatever QUIT meets does not change it.
            with contextlib.suppress(smtplib.SMTPException, OSError):
                c.quit()
            c.close()
        if not 400 <= ans.code < 500:
            return ans
        ans.replies.append(f"{ans.code} {ans.text}")
        if time.monotonic() > end:
            return ans
        time.sleep(pause)


def unconsumed(p: Pipeline, role: str, topics: list[str]) -> int:
    """Committed records on ``topics`` past the offsets group ``role`` committed: 0 when that
    role has finished (and committed) everything written so far. Reads the records rather than
    comparing offsets, since transaction markers take offsets too."""
    return sum(unconsumed_by_partition(p, role, topics).values())


def unconsumed_by_partition(
    p: Pipeline, role: str, topics: list[str]
) -> dict[tuple[str, int, int], int]:
    """:func:`unconsumed` per partition: ``(topic, partition, committed offset)`` -> records
    past that offset, for the partitions that have any (the offset is -1 when none is
    committed)."""
    group = Consumer(consumer_config(p.settings.kafka, role, static=False))
    try:
        md = group.list_topics(timeout=10)
        parts = [TopicPartition(t, i) for t in topics for i in md.topics[t].partitions]
        for attempt in range(40):
            try:
                committed = group.committed(parts, timeout=10)
                break
            except KafkaException as e:
                # A group's coordinator is looked up or loaded on first use.
                if attempt == 39 or not e.args[0].retriable():
                    raise
                time.sleep(0.25)
    finally:
        group.close()
    reader = Consumer(
        consumer_config(p.settings.kafka, f"lag-{uuid.uuid4().hex}", static=False)
        | {"enable.partition.eof": True}
    )
    try:
        reader.assign(
            [
                TopicPartition(
                    tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                )
                for tp in committed
            ]
        )
        at_end: set[tuple[str, int]] = set()
        start = {(tp.topic, tp.partition): tp.offset for tp in committed}
        counts: dict[tuple[str, int, int], int] = {}
        deadline = time.monotonic() + 30
        while len(at_end) < len(committed):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {role}'s input to its end")
            m = reader.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add((m.topic(), m.partition()))
                    continue
                raise AssertionError(f"reading {role}'s input: {m.error()}")
            key = (m.topic(), m.partition(), max(-1, start[(m.topic(), m.partition())]))
            counts[key] = counts.get(key, 0) + 1
        return counts
    finally:
        reader.close()


def assert_copies_doubled_only_in_doubt(
    events: list[schemas.Event], copies: dict[tuple[str, str], int]
) -> set[tuple[str, str]]:
    """Every ``(message ID, recipient)`` the sink has more than once was sent again in the one
    window no SMTP client can close (RFC 1047: the peer committed, the deliverer died before
    reading its 250), and recorded "in doubt" in a DeliveryAttempted event; and never more than
    twice. Any other duplicate is a bug. Returns the doubled pairs."""
    in_doubt = {
        (e.message_id, o.recipient)
        for e in events
        if isinstance(e, schemas.DeliveryAttempted)
        for o in e.recipients
        if "in doubt" in o.reply
    }
    doubled = {k for k, n in copies.items() if n > 1}
    assert doubled <= in_doubt, f"duplicates not recorded in doubt: {doubled - in_doubt}"
    assert all(copies[k] == 2 for k in doubled), "more than one resend"
    return doubled
