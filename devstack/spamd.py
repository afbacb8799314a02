"""Run Debian's spamd on loopback with a private config and Bayes database, for tests.

Network tests are off (no DNS, no RBLs) so results depend only on the message and on what
the test taught it. ``SpamdServer(tmp).start()`` returns the port; ``stop()`` ends it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from devstack.binaries import find

__all__ = ["SpamdServer"]

LOCAL_CF = """\
use_bayes 1
bayes_auto_learn 0
bayes_path {home}/bayes
bayes_file_mode 0777
bayes_min_ham_num 1
bayes_min_spam_num 1
skip_rbl_checks 1
dns_available no
use_razor2 0
use_pyzor 0
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SpamdServer:
    """One spamd (parent plus children) in its own process group."""

    def __init__(self, directory: Path | None = None) -> None:
        """State and config go in ``directory`` (kept: its Bayes outlives a restart), or by
        default in a fresh directory of the system temp dir, removed by stop().

        Not under pytest's tmp_path: spamd reads its config after dropping root privileges to
        "nobody", who cannot enter pytest's 0700 base directory (``directory`` must be
        reachable by "nobody" too).
        """
        self.own_dir = directory is None
        self.dir = directory or Path(tempfile.mkdtemp(prefix="mxgate-spamd-"))
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> int:
        """Start spamd and wait until it answers PING; returns its port."""
        spamd = find("spamd")
        if spamd is None:
            raise RuntimeError("spamd is not installed: run `bash infra/install-system.sh`")
        site, home = self.dir / "site", self.dir / "home"
        self.dir.mkdir(parents=True, exist_ok=True)
        site.mkdir(parents=True, exist_ok=True)
        home.mkdir(parents=True, exist_ok=True)
        for pre in Path("/etc/spamassassin").glob("*.pre"):  # plugin loading lines
            shutil.copy(pre, site)
        (site / "local.cf").write_text(LOCAL_CF.format(home=home))
        # spamd drops root privileges to "nobody", who must be able to write its Bayes files.
        for p in (self.dir, site, home):
            os.chmod(p, 0o777)
        self.port = _free_port()
        log = open(self.dir / "spamd.log", "wb")
        self.proc = subprocess.Popen(
            [
                spamd,
                f"--listen=127.0.0.1:{self.port}",
                "--allow-tell",
                "--max-children=2",
                f"--siteconfigpath={site}",
                "--nouser-config",
                # Started as root it must drop to someone; as anyone else it stays that user.
                *(["-u", "nobody"] if os.geteuid() == 0 else []),
                f"--helper-home-dir={home}",
                f"--pidfile={self.dir / 'spamd.pid'}",
                "-s",
                "stderr",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"spamd exited: {(self.dir / 'spamd.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING SPAMC/1.5\r\n\r\n")
                    if b"PONG" in s.recv(100):
                        return self.port
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("spamd did not answer PING in time")

    def stop(self) -> None:
        """Stop spamd and its children (its own process group); remove its directory if it
        made it."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
