"""Run Debian's rspamd (3.x) on loopback with a private config and a private Redis, for tests.

``RspamdServer().start()`` starts, in their own process groups:

- a ``redis-server`` on a loopback port with no persistence: rspamd's Bayes classifier only
  has a Redis backend, and a private one keeps every test run's learning its own;
- ``rspamd -f -c CONF`` where CONF is a top-level config written to a fresh directory that
  includes Debian's rules (``$CONFDIR/common.conf``) and points ``LOCAL_CONFDIR`` at that same
  directory, so ``local.d``/``override.d`` there adjust the stock setup: a normal worker
  (``/checkv2``) and a controller (``/learnspam``, ``/learnham``, password required even from
  loopback) on two free loopback ports, and every module that needs the network switched off
  (DNS lists, SPF/DKIM/DMARC/ARC, fuzzy hashes, remote maps), so a verdict depends only on the
  message and on what the test taught rspamd's Bayes.

Readiness is ``GET /ping`` answering ``pong`` on both workers. ``stop()`` ends both daemons
and removes the directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from devstack.binaries import find

__all__ = ["RspamdServer"]

# The stock layout of /etc/rspamd/rspamd.conf, minus the proxy and fuzzy workers and with our
# own sockets: binding the stock ports (11332-11335) would clash with any other rspamd here.
RSPAMD_CONF = """\
.include "$CONFDIR/common.conf"

options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
    .include(try=true; priority=10) "$LOCAL_CONFDIR/override.d/options.inc"
}}

logging {{
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    .include "$CONFDIR/logging.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/logging.inc"
}}

worker "normal" {{
    bind_socket = "127.0.0.1:{normal_port}";
    .include "$CONFDIR/worker-normal.inc"
    count = 1;
}}

worker "controller" {{
    bind_socket = "127.0.0.1:{controller_port}";
    .include "$CONFDIR/worker-controller.inc"
    .include(try=true; priority=10) "$LOCAL_CONFDIR/override.d/worker-controller.inc"
}}
"""

# Modules that would query DNS or fetch from the Internet on every message (or at start).
# Switched off rather than left to time out: a test must not depend on this machine's network.
OFFLINE_DISABLED = (
    "rbl",
    "surbl",
    "emails",
    "spf",
    "dkim",
    "dmarc",
    "arc",
    "asn",
    "hfilter",
    "fuzzy_check",
    "whitelist",
    "multimap",
    "mx_check",
    "dcc",
    "bimi",
    "rspamd_update",
    "url_redirector",
    "reputation",
    "neural",
    "ratelimit",
    "greylist",
    "replies",
    "history_redis",
)

LOCAL_FILES = {
    # The stock maps list maps.rspamd.com first; keep only the copies Debian ships.
    "override.d/mime_types.conf": 'file = ["$CONFDIR/maps.d/mime_types.inc"];\n',
    "override.d/mid.conf": 'source = {{ url = ["$CONFDIR/maps.d/mid.inc"]; }}\n',
    "override.d/phishing.conf": (
        "phishtank_enabled = false;\n"  # phishtank is a DNS list
        "openphish_enabled = false;\n"
        'exceptions = {{ REDIRECTOR_FALSE = ["$CONFDIR/maps.d/redirectors.inc"]; }}\n'
    ),
    # Any lookup a remaining rule still tries goes to a closed loopback port: fails at once
    # instead of leaving the machine.
    "local.d/options.inc": (
        'dns {{ nameserver = ["127.0.0.1:{dead_port}"]; timeout = 0.2s; retransmits = 1; }}\n'
        "local_addrs = [];\n"  # loopback clients are scanned like any other
    ),
    "local.d/logging.inc": 'level = "{log_level}";\n',
    "override.d/worker-controller.inc": (
        'password = "{password}";\n'
        'enable_password = "{password}";\n'
        # Only this (unused) documentation address may skip the password: loopback must send it.
        'secure_ip = "192.0.2.1";\n'
    ),
    "local.d/classifier-bayes.conf": (
        'backend = "redis";\n'
        'servers = "127.0.0.1:{redis_port}";\n'
        "min_learns = {min_learns};\n"
        "autolearn = false;\n"  # only what `mxgate train` (or a test) teaches
    ),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process group (rspamd's main process and its workers), SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


class RspamdServer:
    """One rspamd (main process, normal worker, controller, helpers) and its Redis."""

    def __init__(
        self,
        *,
        min_learns: int = 1,
        log_level: str = "notice",
        directory: Path | None = None,
        cache: Path | None = None,
    ) -> None:
        """State and config go in a fresh directory of the system temp dir, removed by stop(),
        or in ``directory``, emptied at start but for its db/ (Redis keeps nothing on disk) and
        kept. rspamd's DBDIR (``cache``, default db/ there) holds its compiled Hyperscan
        regexps: compiling them is ~20 s of CPU at a first start, a kept one makes it ~1 s.

        Not under pytest's tmp_path: run as root, rspamd's workers drop to "nobody", who
        cannot enter pytest's 0700 base directory (nor may ``directory``'s parents be closed
        to "nobody"). ``min_learns``: how many messages of each class rspamd's Bayes must
        have learnt before it classifies (stock: 200).
        """
        self.own_dir = directory is None
        self.dir = directory or Path(tempfile.mkdtemp(prefix="mxgate-rspamd-"))
        self.cache = cache or self.dir / "db"
        self.min_learns, self.log_level = min_learns, log_level
        self.password = secrets.token_hex(12)
        self.normal_port = self.controller_port = self.redis_port = 0
        self.redis: subprocess.Popen[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The normal worker (``/checkv2``)."""
        return f"http://127.0.0.1:{self.normal_port}"

    @property
    def controller_url(self) -> str:
        """The controller (``/learnspam``, ``/learnham``, ``/stat``)."""
        return f"http://127.0.0.1:{self.controller_port}"

    @property
    def log(self) -> str:
        """The tail of rspamd's log (for failure messages)."""
        try:
            return (self.dir / "log" / "rspamd.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def start(self, timeout: float = 120.0) -> str:
        """Start Redis and rspamd; wait until both workers answer /ping; returns :attr:`url`."""
        for tool in ("rspamd", "redis-server"):
            if find(tool) is None:
                raise RuntimeError(f"{tool} is not installed: run `bash infra/install-system.sh`")
        deadline = time.monotonic() + timeout
        if not self.own_dir:
            # Last run's config and logs go (the files below are written afresh, some appended);
            # the compiled regexps stay.
            self.dir.mkdir(parents=True, exist_ok=True)
            for old in self.dir.iterdir():
                if old.name != "db":
                    shutil.rmtree(old) if old.is_dir() else old.unlink()
        try:
            self._start_redis(deadline)
            self._start_rspamd(deadline)
        except BaseException:
            self.stop()
            raise
        return self.url

    def _start_redis(self, deadline: float) -> None:
        data = self.dir / "redis"
        data.mkdir()
        self.redis_port = _free_port()
        log = open(self.dir / "redis.log", "wb")
        self.redis = subprocess.Popen(
            [
                find("redis-server") or "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.redis_port),
                "--dir",
                str(data),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--unixsocket",
                "",
                "--loglevel",
                "warning",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        while time.monotonic() < deadline:
            if self.redis.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.dir / 'redis.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(100).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("redis-server did not answer PING in time")

    def _start_rspamd(self, deadline: float) -> None:
        self.normal_port, self.controller_port = _free_port(), _free_port()
        values = {
            "normal_port": self.normal_port,
            "controller_port": self.controller_port,
            "redis_port": self.redis_port,
            "dead_port": _free_port(),
            "password": self.password,
            "min_learns": self.min_learns,
            "log_level": self.log_level,
        }
        for sub in ("local.d", "override.d", "run", "log"):
            (self.dir / sub).mkdir()
        self.cache.mkdir(exist_ok=True)
        for name, text in LOCAL_FILES.items():
            (self.dir / name).write_text(text.format(**values))
        for module in OFFLINE_DISABLED:
            with open(self.dir / "local.d" / f"{module}.conf", "a") as f:
                f.write("enabled = false;\n")
        conf = self.dir / "rspamd.conf"
        conf.write_text(RSPAMD_CONF.format(**values))
        cmd = [find("rspamd") or "rspamd", "-f", "-c", str(conf)]
        for var, where in (
            ("LOCAL_CONFDIR", self.dir),
            ("DBDIR", self.cache),
            ("RUNDIR", self.dir / "run"),
            ("LOGDIR", self.dir / "log"),
        ):
            cmd += ["--var", f"{var}={where}"]
        if os.geteuid() == 0:
            # rspamd refuses to run its workers as root; "nobody" must reach and write its dirs.
            cmd += ["-u", "nobody", "-g", "nogroup"]
            for p in (self.dir, *(self.dir / s for s in ("run", "log"))):
                os.chmod(p, 0o777)
            if self.cache == self.dir / "db":  # one given is made for "nobody" by its owner
                os.chmod(self.cache, 0o777)
        out = open(self.dir / "rspamd.out", "wb")
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=out, start_new_session=True)
        out.close()
        pending = [self.url, self.controller_url]
        while pending and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out_text = (self.dir / "rspamd.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"rspamd exited ({self.proc.returncode}): {out_text}\n{self.log}"
                )
            try:
                with urllib.request.urlopen(pending[0] + "/ping", timeout=2) as r:
                    if r.read().strip() == b"pong":
                        pending.pop(0)
                        continue
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        if pending:
            raise RuntimeError(f"rspamd did not answer /ping at {pending[0]} in time\n{self.log}")

    def forget(self) -> None:
        """Empty rspamd's Bayes (its whole private Redis), so a test starts untaught."""
        with socket.create_connection(("127.0.0.1", self.redis_port), timeout=5) as s:
            s.sendall(b"FLUSHALL\r\n")
            if not s.recv(100).startswith(b"+OK"):
                raise RuntimeError("redis-server did not flush")

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """rspamd hung: every process of it stopped (SIGSTOP) until the block ends.

        Connections are still accepted by the kernel, so a client sees what a wedged daemon
        looks like: no answer, not a refusal.
        """
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop rspamd, then Redis (each its own process group); remove the directory if it
        made it."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)  # a stopped process ignores SIGTERM
        _stop(self.proc)
        self.proc = None
        _stop(self.redis)
        self.redis = None
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
