"""A real Apache Kafka (KRaft) cluster on loopback, for tests and `mxgate up`.

The broker jars come from Maven (``infra/kafka/pom.xml``) and run on the machine's Java.
Every broker is a combined broker + controller and a voter of a static quorum, so one
broker or three need the same code. A workdir holds everything (state file, properties,
data, logs), and starting again on the same workdir reuses its cluster id, ports and data::

    with LocalKafka(Path("var/kafka")) as kafka:
        print(kafka.bootstrap_servers)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from base64 import urlsafe_b64encode
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = [
    "DEFAULT_JARS_DIR",
    "REPO_ROOT",
    "BrokerSecurity",
    "KafkaStartError",
    "LocalKafka",
    "ensure_kafka_jars",
    "fetch_maven_jars",
    "java_flags",
]

REPO_ROOT: Path = Path(__file__).resolve().parents[1]
"""The repository checkout this module belongs to (holds infra/ and .cache/)."""

DEFAULT_JARS_DIR: Path = REPO_ROOT / ".cache" / "kafka" / "libs"
"""Where ``ensure_kafka_jars`` puts the broker jars unless told otherwise."""

_POM = REPO_ROOT / "infra" / "kafka" / "pom.xml"
_LOG4J2 = REPO_ROOT / "infra" / "kafka" / "log4j2.yaml"
_MARKER = ".complete"
_STATE_FILE = "state.json"
_LOG_TAIL_LINES = 60


@dataclass(frozen=True)
class BrokerSecurity:
    """Run the client listener as SASL_SSL (SCRAM-SHA-512) with ACLs enforced.

    The caller brings the PEM files (a CA and a broker certificate for the cluster's host; the
    tests make them with ``tests/support/tlsca.py``) and the SCRAM users, which are created
    when the storage is formatted: on a workdir formatted without them they do not exist.
    ``admin`` is the super user the brokers also talk to each other as. The controller
    listener stays PLAINTEXT on loopback (SCRAM is not available there in KRaft), so its
    anonymous principal is a super user too: keep the controller port unreachable.
    """

    ca_file: Path
    cert_file: Path
    key_file: Path
    users: dict[str, str]
    admin: str = "admin"


class KafkaStartError(RuntimeError):
    """The local Kafka could not be fetched, formatted or started; the message says why."""


def _require_tool(name: str) -> str:
    """Return the path of a command-line tool, or raise a clear error naming it."""
    path = shutil.which(name)
    if path is None:
        raise KafkaStartError(
            f"`{name}` is not on PATH: the local Kafka needs Java 17+ and Maven "
            "(Debian: apt-get install openjdk-17-jre-headless maven)"
        )
    return path


def _pom_digest(pom: Path) -> str:
    """Hash of the pom, so that a changed dependency list refetches the jars."""
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def fetch_maven_jars(pom: Path, cache_dir: Path, timeout: float = 900.0) -> Path:
    """Copy the runtime dependencies of ``pom`` into ``cache_dir`` once; return ``cache_dir``.

    A marker file holding the pom's hash records a complete fetch, so later calls return
    at once. The jars land in a sibling temp dir first and are renamed into place, so an
    interrupted fetch never leaves a half-filled classpath behind.
    """
    cache_dir = cache_dir.resolve()
    if not pom.is_file():
        raise KafkaStartError(
            f"{pom} is missing: local servers are fetched from a source checkout of mxgate"
        )
    digest = _pom_digest(pom)
    marker = cache_dir / _MARKER
    if marker.is_file() and marker.read_text().strip() == digest:
        return cache_dir
    mvn = _require_tool("mvn")
    _require_tool("java")
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = cache_dir.with_name(f"{cache_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise KafkaStartError(f"maven fetch for {pom} took over {timeout:.0f}s") from exc
    if proc.returncode != 0 or not any(staging.glob("*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        out = (proc.stdout + proc.stderr).strip()[-4000:]
        raise KafkaStartError(f"maven could not fetch the jars of {pom}:\n{out}")
    (staging / _MARKER).write_text(digest + "\n")
    shutil.rmtree(cache_dir, ignore_errors=True)
    staging.rename(cache_dir)
    return cache_dir


def ensure_kafka_jars(cache_dir: Path = DEFAULT_JARS_DIR) -> Path:
    """Fetch the Kafka broker jars into ``cache_dir`` unless already complete; return it."""
    return fetch_maven_jars(_POM, cache_dir)


def java_flags(heap: str) -> list[str]:
    """JVM flags for a small, fast-starting server on a 2-core machine."""
    return [
        f"-Xmx{heap}",
        # Serial GC: no parallel GC threads fighting the tests for two cores.
        "-XX:+UseSerialGC",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        "-Djava.net.preferIPv4Stack=true",
    ]


def _free_port(host: str) -> int:
    """A port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    """True when something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie awaiting its parent's wait() counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a text file, or a note that it does not exist."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} not written)"
    return "\n".join(text.splitlines()[-lines:])


def _new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64 without padding."""
    return urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass
class _Broker:
    """One broker process of the cluster and where its files live."""

    index: int
    node_id: int
    port: int
    controller_port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None

    @property
    def properties(self) -> Path:
        """The broker's server.properties."""
        return self.dir / "server.properties"

    @property
    def data_dir(self) -> Path:
        """The broker's log.dirs (topic data and KRaft metadata)."""
        return self.dir / "data"

    @property
    def process_log(self) -> Path:
        """Where the JVM's stdout and stderr go (warnings, crashes)."""
        return self.dir / "process.log"

    @property
    def server_log(self) -> Path:
        """The broker's log4j2 server.log."""
        return self.dir / "logs" / "server.log"

    @property
    def pid_file(self) -> Path:
        """The pid of the running broker, to reap one left over by a crashed parent."""
        return self.dir / "broker.pid"

    def running(self) -> bool:
        """True while this object's broker process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def logs_tail(self) -> str:
        """The tails of the broker's process log and server.log, for error messages."""
        return (
            f"--- broker {self.index} {self.process_log} ---\n{_tail(self.process_log)}\n"
            f"--- broker {self.index} {self.server_log} ---\n{_tail(self.server_log)}"
        )


class LocalKafka:
    """A KRaft Kafka cluster of ``brokers`` combined broker+controller processes on loopback.

    Brokers are addressed by index ``0 .. brokers-1`` (node ids are index + 1). The state
    file in ``workdir`` keeps the cluster id and ports, so a restart on the same workdir
    reuses the formatted storage and the same bootstrap servers.
    """

    def __init__(
        self,
        workdir: Path,
        brokers: int = 1,
        host: str = "127.0.0.1",
        jars: Path | None = None,
        heap: str = "512m",
        security: BrokerSecurity | None = None,
    ) -> None:
        """Describe the cluster; nothing is fetched or started until ``start``. Without
        ``security`` the brokers listen PLAINTEXT with no authorizer."""
        if brokers < 1:
            raise ValueError("brokers must be at least 1")
        if security is not None and security.admin not in security.users:
            raise ValueError(f"security.users must hold the admin user {security.admin!r}")
        self.security = security
        self.workdir = Path(workdir).resolve()
        self.brokers = brokers
        self.host = host
        self.jars = jars
        self.heap = heap
        self.cluster_id = ""
        self._brokers: list[_Broker] = []
        self._classpath = ""

    # -- public API ---------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``host:port,...`` of every broker (valid after ``start``)."""
        if not self._brokers:
            raise RuntimeError("LocalKafka is not started")
        return ",".join(f"{self.host}:{b.port}" for b in self._brokers)

    def client_config(self, user: str | None = None, password: str | None = None) -> dict[str, str]:
        """librdkafka security keys to reach the brokers as ``user`` (default: the admin);
        empty for a PLAINTEXT cluster. ``password`` overrides the user's (to try a wrong one)."""
        sec = self.security
        if sec is None:
            return {}
        user = user or sec.admin
        return {
            "security.protocol": "sasl_ssl",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": sec.users.get(user, "") if password is None else password,
            "ssl.ca.location": str(sec.ca_file),
        }

    def start(self, timeout: float = 120) -> str:
        """Fetch jars, format storage if new, start every broker; return bootstrap servers.

        Returns once the cluster's metadata lists every broker. Raises ``KafkaStartError``
        with the tail of the broker logs if a broker exits or the timeout passes.
        """
        if any(b.running() for b in self._brokers):
            return self.bootstrap_servers
        deadline = time.monotonic() + timeout
        jars = ensure_kafka_jars(self.jars) if self.jars is not None else ensure_kafka_jars()
        self._classpath = f"{jars}/*"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._load_or_create_state()
        for broker in self._brokers:
            self._write_properties(broker)
        self._format_storage(deadline)
        try:
            for broker in self._brokers:
                self._spawn(broker)
            self._wait_ready(deadline)
        except BaseException:
            self.stop()
            raise
        return self.bootstrap_servers

    def stop(self, timeout: float = 30) -> None:
        """Stop every broker (SIGTERM, then SIGKILL after ``timeout``). Safe to call twice."""
        # All at once: stopped one by one, the last voter loses the quorum and its
        # controlled shutdown waits for a controller that is gone until SIGKILL.
        live = [p for b in self._brokers if (p := b.proc) is not None and p.poll() is None]
        for proc in live:
            self._signal(proc, signal.SIGTERM)
        end = time.monotonic() + timeout
        for proc in live:
            try:
                proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
        for broker in self._brokers:
            self._reap(broker)

    def kill_broker(self, i: int) -> None:
        """Kill broker ``i`` at once with SIGKILL, as a crash would."""
        broker = self._broker(i)
        if broker.proc is not None and broker.proc.poll() is None:
            self._signal(broker.proc, signal.SIGKILL)
        self._reap(broker)

    def start_broker(self, i: int, timeout: float = 120) -> None:
        """Start broker ``i`` again and wait until the cluster metadata lists it."""
        broker = self._broker(i)
        if broker.running():
            return
        deadline = time.monotonic() + timeout
        self._spawn(broker)
        self._wait_ready(deadline)

    def broker_running(self, i: int) -> bool:
        """True while broker ``i``'s process is alive."""
        return self._broker(i).running()

    def logs_tail(self) -> str:
        """The tails of every broker's logs, for failure messages."""
        return "\n".join(b.logs_tail() for b in self._brokers)

    def __enter__(self) -> LocalKafka:
        """Start the cluster (if not yet started) for a ``with`` block."""
        if not any(b.running() for b in self._brokers):
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the cluster when the ``with`` block ends."""
        self.stop()

    # -- layout and configuration ---------------------------------------------------------

    def _broker(self, i: int) -> _Broker:
        """Broker ``i``, with a clear error for a bad index or an unstarted cluster."""
        if not 0 <= i < len(self._brokers):
            raise IndexError(f"no broker {i}: cluster has {len(self._brokers)} (not started?)")
        return self._brokers[i]

    def _load_or_create_state(self) -> None:
        """Read the workdir's cluster id and ports, or choose and record new ones."""
        state_path = self.workdir / _STATE_FILE
        state: dict[str, Any] | None = None
        if state_path.is_file():
            state = json.loads(state_path.read_text())
            if len(state["brokers"]) != self.brokers or state["host"] != self.host:
                raise KafkaStartError(
                    f"{state_path} describes {len(state['brokers'])} broker(s) on "
                    f"{state['host']}, not {self.brokers} on {self.host}: "
                    "use another workdir or delete this one"
                )
        if state is None:
            ports: set[int] = set()
            while len(ports) < 2 * self.brokers:
                ports.add(_free_port(self.host))
            it = iter(sorted(ports))
            state = {
                "cluster_id": _new_cluster_id(),
                "host": self.host,
                "brokers": [
                    {"node_id": i + 1, "port": next(it), "controller_port": next(it)}
                    for i in range(self.brokers)
                ],
            }
            tmp = state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=2) + "\n")
            tmp.replace(state_path)
        self.cluster_id = state["cluster_id"]
        self._brokers = [
            _Broker(
                index=i,
                node_id=b["node_id"],
                port=b["port"],
                controller_port=b["controller_port"],
                dir=self.workdir / f"broker-{i}",
            )
            for i, b in enumerate(state["brokers"])
        ]

    def _write_properties(self, broker: _Broker) -> None:
        """Write the broker's server.properties (rewritten each start; the state is in data/)."""
        n = len(self._brokers)
        # Internal topics replicate to every broker up to 3, and tolerate one broker down.
        rf = min(n, 3)
        min_isr = max(1, rf - 1)
        voters = ",".join(f"{b.node_id}@{self.host}:{b.controller_port}" for b in self._brokers)
        props = {
            "process.roles": "broker,controller",
            "node.id": broker.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{self.host}:{broker.port},"
            f"CONTROLLER://{self.host}:{broker.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{broker.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": broker.data_dir,
            "num.partitions": 1,
            "default.replication.factor": rf,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": rf,
            # Fewer internal partitions than the default 50: faster first group/txn use.
            "offsets.topic.num.partitions": 12,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": 12,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": 0,
            "auto.create.topics.enable": "false",
            "delete.topic.enable": "true",
            "num.network.threads": 2,
            "num.io.threads": 4,
            "num.recovery.threads.per.data.dir": 1,
            # A killed broker is fenced (and leaves the ISR) within a few seconds, so
            # failover tests do not wait for the 9 s / 30 s production defaults.
            "broker.heartbeat.interval.ms": 1000,
            "broker.session.timeout.ms": 6000,
            "replica.lag.time.max.ms": 10000,
        }
        broker.dir.mkdir(parents=True, exist_ok=True)
        (broker.dir / "logs").mkdir(exist_ok=True)
        if self.security is not None:
            props |= self._security_properties(broker)
        text = "".join(f"{k}={v}\n" for k, v in props.items())
        broker.properties.write_text(
            "# Written by devstack.kafka on every start; edits are overwritten.\n" + text
        )

    def _security_properties(self, broker: _Broker) -> dict[str, Any]:
        """The SASL_SSL listener, PEM key and trust stores, and the StandardAuthorizer."""
        sec = self.security
        assert sec is not None
        keystore = broker.dir / "keystore.pem"
        # A PEM key store file: the private key, then the certificate chain.
        keystore.write_bytes(sec.key_file.read_bytes() + sec.cert_file.read_bytes())
        keystore.chmod(0o600)
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{sec.admin}" password="{sec.users[sec.admin]}";'
        )
        return {
            "listeners": f"SASL_SSL://{self.host}:{broker.port},"
            f"CONTROLLER://{self.host}:{broker.controller_port}",
            "advertised.listeners": f"SASL_SSL://{self.host}:{broker.port}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": keystore,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": sec.ca_file,
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{sec.admin};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        }

    def _java(self, broker: _Broker, main: str, *args: str, heap: str | None = None) -> list[str]:
        """The java command line that runs ``main`` with the Kafka classpath."""
        return [
            _require_tool("java"),
            *java_flags(heap or self.heap),
            f"-Dlog4j2.configurationFile={_LOG4J2}",
            f"-Dkafka.logs.dir={broker.dir / 'logs'}",
            "-cp",
            self._classpath,
            main,
            *args,
        ]

    def _format_storage(self, deadline: float) -> None:
        """Format the storage of every broker not yet formatted, in parallel."""
        pending: list[tuple[_Broker, subprocess.Popen[bytes], Path]] = []
        for broker in self._brokers:
            if (broker.data_dir / "meta.properties").is_file():
                continue
            out = broker.dir / "format.log"
            cmd = self._java(
                broker,
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                # One argument, "=": a URL-safe base64 id may begin with "-".
                f"--cluster-id={self.cluster_id}",
                "-c",
                str(broker.properties),
                *self._scram_args(),
                # Formatting needs little memory; a small heap keeps three at once cheap.
                heap="256m",
            )
            with out.open("wb") as fh:
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
            pending.append((broker, proc, out))
        failures: list[str] = []
        for broker, proc, out in pending:
            try:
                rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                rc = -1
            if rc != 0:
                failures.append(f"broker {broker.index} (exit {rc}):\n{_tail(out)}")
        if failures:
            raise KafkaStartError("kafka storage format failed:\n" + "\n".join(failures))

    def _scram_args(self) -> list[str]:
        """StorageTool arguments that create the SCRAM users with the metadata."""
        if self.security is None:
            return []
        args = []
        for name, password in sorted(self.security.users.items()):
            args += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
        return args

    # -- processes ------------------------------------------------------------------------

    def _spawn(self, broker: _Broker) -> None:
        """Start one broker JVM in its own process group, output to its process log."""
        self._reap_stale(broker)
        for port in (broker.port, broker.controller_port):
            if _port_open(self.host, port):
                raise KafkaStartError(
                    f"port {self.host}:{port} of broker {broker.index} is already in use "
                    f"(another process, or a broker of {self.workdir} not started by us)"
                )
        broker.log = broker.process_log.open("ab")
        # Own process group: a Ctrl-C in the terminal goes to mxgate, which then stops the
        # brokers in order, instead of the JVMs dying mid-write on the same signal.
        broker.proc = subprocess.Popen(
            self._java(broker, "kafka.Kafka", str(broker.properties)),
            stdin=subprocess.DEVNULL,
            stdout=broker.log,
            stderr=subprocess.STDOUT,
            cwd=broker.dir,
            start_new_session=True,
        )
        broker.pid_file.write_text(f"{broker.proc.pid}\n")

    def _reap_stale(self, broker: _Broker) -> None:
        """Stop a broker of this workdir left running by a parent that died without stop()."""
        try:
            pid = int(broker.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        if broker.proc is not None and broker.proc.pid == pid:
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            broker.pid_file.unlink(missing_ok=True)
            return
        # Only a JVM running exactly this broker's properties file is ours to stop.
        if str(broker.properties).encode() not in cmdline or b"kafka.Kafka" not in cmdline:
            broker.pid_file.unlink(missing_ok=True)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + 30
        while _pid_alive(pid) and time.monotonic() < end:
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        broker.pid_file.unlink(missing_ok=True)

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        """Send ``sig`` to the broker's process group (the JVM is its leader)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def _terminate(self, broker: _Broker, timeout: float) -> None:
        """SIGTERM one broker, wait up to ``timeout``, then SIGKILL; then release it."""
        proc = broker.proc
        if proc is not None and proc.poll() is None:
            self._signal(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
        self._reap(broker)

    @staticmethod
    def _reap(broker: _Broker) -> None:
        """Wait for the dead process and close its log, so nothing leaks."""
        if broker.proc is not None:
            broker.proc.wait()
            broker.proc = None
            broker.pid_file.unlink(missing_ok=True)
        if broker.log is not None:
            broker.log.close()
            broker.log = None

    def _wait_ready(self, deadline: float) -> None:
        """Poll until every running broker listens and the metadata lists each of them."""
        # Wait for the sockets first: librdkafka would log every refused connection.
        for broker in self._brokers:
            while broker.running() and not _port_open(self.host, broker.port):
                self._check_alive(deadline)
                time.sleep(0.2)
        from confluent_kafka.admin import AdminClient

        cfg: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.bootstrap_servers,
            "log_level": 2,
            "socket.timeout.ms": 5000,
        }
        cfg.update(self.client_config())
        admin = AdminClient(cfg)
        expect = {b.node_id for b in self._brokers if b.running()}
        seen: set[int] = set()
        while True:
            self._check_alive(deadline, f"metadata: brokers {sorted(seen)} of {sorted(expect)}")
            # Any client-side error here just means "not ready yet"; the deadline bounds it.
            with contextlib.suppress(Exception):
                seen = set(admin.list_topics(timeout=2).brokers)
            if expect <= seen:
                return
            time.sleep(0.2)

    def _check_alive(self, deadline: float, waiting_for: str = "brokers to listen") -> None:
        """Raise with the log tails if a broker died or the deadline passed."""
        dead = [b for b in self._brokers if b.proc is not None and b.proc.poll() is not None]
        if dead:
            codes = ", ".join(
                f"broker {b.index} exited {b.proc.returncode}" for b in dead if b.proc
            )
            raise KafkaStartError(f"local kafka failed to start: {codes}\n{self.logs_tail()}")
        if time.monotonic() > deadline:
            raise KafkaStartError(
                f"local kafka not ready in time (waiting for {waiting_for})\n{self.logs_tail()}"
            )
