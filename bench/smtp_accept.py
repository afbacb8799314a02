"""SMTP acceptance benchmark: mxgate's receiver against a private Postfix, same run, same disk.

Both servers queue durably: mxgate answers 250 after fsync + Kafka ack (acks=all); Postfix
after its queue file is fsync'd (discard transport afterwards). For 1, 10 and 50 sessions:

* Postfix's ``smtp-source`` drives each server with 10 KB messages: messages per second;
* a small asyncio client (smtp-source reports no latencies) measures, per message, the time
  from sending ``<CRLF>.<CRLF>`` to reading the 250: p50 / p99;
* server CPU seconds per 1,000 messages from /proc (utime + stime of the server processes).

Run: ``.venv/bin/python bench/smtp_accept.py [--messages 2000] [--workers 2]`` (see README).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devstack.kafka import LocalKafka  # noqa: E402
from mxgate import catalog  # noqa: E402
from mxgate.kafka import create_topics  # noqa: E402
from mxgate.settings import KafkaSettings  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
BODY = (
    b"From: a@sender.test\r\nTo: b@example.test\r\nSubject: bench\r\n\r\n"
    + (b"x" * 76 + b"\r\n") * 128
)[:10240]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_of(pids: list[int]) -> float:
    """CPU seconds (user + system, including reaped children) of ``pids``."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])
    return total / TICK


def tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


# -- the servers ------------------------------------------------------------------------------


class Mxgate:
    def __init__(self, tmp: Path, bootstrap: str, workers: int) -> None:
        self.port = free_port()
        tenants = tmp / "tenants.toml"
        tenants.write_text(
            '[tenants.example]\ndomains = ["example.test"]\n'
            'route = { host = "127.0.0.1", port = 1 }\n'
            # The accept path alone: nothing at port 1 could answer a recipient callout.
            'recipients = { mode = "none" }\n'
        )
        prefix = f"b{uuid.uuid4().hex[:8]}."
        create_topics(
            KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix), [catalog.RECEIVED]
        )
        env = os.environ | {
            "MXGATE_TENANTS_FILE": str(tenants),
            "MXGATE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "MXGATE_KAFKA__TOPIC_PREFIX": prefix,
            "MXGATE_RECEIVER__PORT": str(self.port),
            "MXGATE_RECEIVER__WORKERS": str(workers),
            "MXGATE_RECEIVER__MAX_CONNECTIONS_PER_IP": "1000",
            "MXGATE_RECEIVER__CONNECTION_RATE_PER_IP": "100000",
            "MXGATE_RECEIVER__MESSAGE_RATE_PER_IP": "1000000",
            "MXGATE_STORE__PATH": str(tmp / "store"),
            "MXGATE_LOG_LEVEL": "warning",
        }
        self.log = open(tmp / "receiver.log", "wb")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("mxgate")), "run", "receiver"],
            env=env, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_port(self.port)

    def pids(self) -> list[int]:
        return tree(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.log.close()


class Postfix:
    """A private Postfix: own config dir, queue and port; relays example.test to discard."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.conf = tmp / "postfix-etc"
        self.queue = tmp / "postfix-queue"
        self.conf.mkdir()
        self.queue.mkdir()
        (tmp / "postfix-data").mkdir()
        shutil.chown(tmp / "postfix-data", "postfix")
        master = Path("/etc/postfix/master.cf").read_text()
        master = master.replace(
            "smtp      inet  n       -       y       -       -       smtpd",
            f"127.0.0.1:{self.port} inet n - n - 200 smtpd",
        )
        (self.conf / "master.cf").write_text(master)
        (self.conf / "main.cf").write_text(
            "\n".join(
                [
                    "compatibility_level = 3.6",
                    f"queue_directory = {self.queue}",
                    f"data_directory = {tmp / 'postfix-data'}",
                    "mail_owner = postfix",
                    "myhostname = bench.postfix.test",
                    "mydestination =",
                    "inet_interfaces = 127.0.0.1",
                    "inet_protocols = ipv4",
                    "mynetworks = 127.0.0.0/8",
                    "relay_domains = example.test",
                    "default_transport = discard:bench",
                    "relay_transport = discard:bench",
                    "smtpd_recipient_restrictions = permit_mynetworks, reject",
                    "smtpd_client_connection_count_limit = 0",
                    "smtpd_client_connection_rate_limit = 0",
                    "default_process_limit = 200",
                    f"maillog_file_prefixes = {tmp}",
                    f"maillog_file = {tmp / 'postfix.log'}",
                    "smtputf8_enable = yes",
                    "message_size_limit = 52428800",
                    "",
                ]
            )
        )
        env = os.environ | {"MAIL_CONFIG": str(self.conf)}
        subprocess.run(["postfix", "-c", str(self.conf), "check"], check=True, env=env)
        done = subprocess.run(["postfix", "-c", str(self.conf), "start"], env=env, check=False)
        if done.returncode != 0:
            log = tmp / "postfix.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"postfix start failed:\n{tail}")
        wait_port(self.port)

    def pids(self) -> list[int]:
        master = int((self.queue / "pid" / "master.pid").read_text().split()[0])
        return tree(master)

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.conf), "stop"], check=False)


# -- load ---------------------------------------------------------------------------------------


async def _session(port: int, count: int, lat: list[float]) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> bytes:
        while True:
            line = await r.readline()
            if line[3:4] != b"-":
                return line

    await reply()
    w.write(b"EHLO bench.test\r\n")
    await reply()
    for _ in range(count):
        w.write(b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n")
        for _ in range(3):
            await reply()
        w.write(BODY)
        t0 = time.perf_counter()
        w.write(b"\r\n.\r\n")
        line = await reply()
        lat.append(time.perf_counter() - t0)
        if not line.startswith(b"250"):
            raise RuntimeError(f"not accepted: {line!r}")
    w.write(b"QUIT\r\n")
    await reply()
    w.close()


def latency(port: int, sessions: int, messages: int) -> tuple[float, float]:
    lat: list[float] = []

    async def main() -> None:
        per = max(1, messages // sessions)
        await asyncio.gather(*(_session(port, per, lat) for _ in range(sessions)))

    asyncio.run(main())
    q = statistics.quantiles(lat, n=100)
    return q[49] * 1000, q[98] * 1000


def smtp_source(port: int, sessions: int, messages: int, pids) -> tuple[float, float]:
    """(messages per second, CPU seconds per 1000 messages) from one smtp-source run."""
    cpu0 = cpu_of(pids())
    t0 = time.perf_counter()
    subprocess.run(
        ["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", "10240", "-d",
         "-f", "a@sender.test", "-t", "b@example.test", f"127.0.0.1:{port}"],
        check=True, capture_output=True,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    cpu = cpu_of(pids()) - cpu0
    return messages / wall, cpu / messages * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=2000, help="messages per load level")
    ap.add_argument("--workers", type=int, default=2, help="mxgate receiver processes")
    ap.add_argument("--sessions", default="1,10,50")
    args = ap.parse_args()
    if shutil.which("smtp-source") is None:
        sys.exit("smtp-source not found: install the postfix package (make system)")
    # On the repo's disk (var/), like a deployment's store and queue.
    (REPO / "var").mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-", dir=REPO / "var"))
    tmp.chmod(0o755)  # Postfix's daemons run as the postfix user and must reach their dirs
    kafka = LocalKafka(tmp / "kafka", brokers=1)
    servers: dict[str, Mxgate | Postfix] = {}
    try:
        bootstrap = kafka.start()
        servers["mxgate"] = Mxgate(tmp, bootstrap, args.workers)
        servers["postfix"] = Postfix(tmp)
        rows = []
        for n in [int(x) for x in args.sessions.split(",")]:
            res = {}
            for name, srv in servers.items():
                rate, cpu = smtp_source(srv.port, n, args.messages, srv.pids)
                p50, p99 = latency(srv.port, n, args.messages)
                res[name] = (rate, p50, p99, cpu)
            rows.append((n, res))
        print(f"10 KB messages, {args.messages} per level, mxgate workers={args.workers}")
        head = ("sessions", "server", "msg/s", "p50 ms", "p99 ms", "cpu s/1k")
        print("{:>8} {:>8} {:>9} {:>8} {:>8} {:>9}".format(*head))
        for n, res in rows:
            for name, (rate, p50, p99, cpu) in res.items():
                print(f"{n:>8} {name:>8} {rate:>9.1f} {p50:>8.2f} {p99:>8.2f} {cpu:>9.2f}")
            m, p = res["mxgate"], res["postfix"]
            r = [m[i] / p[i] for i in range(4)]
            print(f"{n:>8} {'ratio':>8} {r[0]:>9.2f} {r[1]:>8.2f} {r[2]:>8.2f} {r[3]:>9.2f}")
    finally:
        for srv in servers.values():
            srv.stop()
        kafka.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
