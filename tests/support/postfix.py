"""A private Postfix instance (Debian's postfix package) as a downstream mail server.

Everything lives under one directory: its own config_directory (main.cf, master.cf), its own
queue_directory and data_directory, a log file, and (for ``transport="maildir"``) the maildirs.
The directory is a fresh one under the system temp dir (removed by ``stop()``).
It listens on 127.0.0.1 on the port given (never 25) and is started with
``postfix -c DIR start`` and stopped with ``postfix -c DIR stop``; the system's own Postfix
(if any) is never touched. Reusable::

    pf = Postfix(port=free_port(), domains=["example.test"], transport="maildir")
    pf.start()
    ...
    pf.count()            # {recipient: messages delivered}
    pf.stop()

``transport="discard"`` accepts and drops everything (for benchmarks); ``"relay"`` sends the
domains' mail on to ``relay_to=(host, port)`` (Postfix as a gateway peer); ``"maildir"`` delivers
each recipient's copy to ``<dir>/maildir/all/new/`` through Postfix's virtual(8) agent
(``count()`` tells copies per recipient by their Delivered-To header).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Literal

Transport = Literal["discard", "maildir", "relay"]

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"

_MASTER_CF = """\
127.0.0.1:{port} inet n - n - {procs} smtpd
pickup    unix  n  -  n  60   1  pickup
cleanup   unix  n  -  n  -    0  cleanup
qmgr      unix  n  -  n  300  1  qmgr
rewrite   unix  -  -  n  -    -  trivial-rewrite
bounce    unix  -  -  n  -    0  bounce
defer     unix  -  -  n  -    0  bounce
trace     unix  -  -  n  -    0  bounce
verify    unix  -  -  n  -    1  verify
flush     unix  n  -  n  1000? 0 flush
proxymap  unix  -  -  n  -    -  proxymap
smtp      unix  -  -  n  -    -  smtp
relay     unix  -  -  n  -    -  smtp
showq     unix  n  -  n  -    -  showq
error     unix  -  -  n  -    -  error
retry     unix  -  -  n  -    -  error
discard   unix  -  -  n  -    -  discard
local     unix  -  n  n  -    -  local
virtual   unix  -  n  n  -    -  virtual
anvil     unix  -  -  n  -    1  anvil
scache    unix  -  -  n  -    1  scache
postlog   unix-dgram n - n - 1 postlogd
"""


class Postfix:
    """One private Postfix instance on 127.0.0.1:``port``."""

    def __init__(
        self,
        port: int,
        domains: list[str],
        transport: Transport = "maildir",
        *,
        smtpd_processes: int = 100,
        relay_to: tuple[str, int] | None = None,
    ) -> None:
        self.port = port
        self.domains = domains
        self.transport = transport
        self.smtpd_processes = smtpd_processes
        self.relay_to = relay_to
        if transport == "relay" and relay_to is None:
            raise ValueError("transport='relay' needs relay_to=(host, port)")
        # Not under pytest's tmp tree: Postfix's daemons run as the postfix user and must reach
        # it, and pytest resets its own tree to 0700 whenever another session starts.
        self.root = Path(tempfile.mkdtemp(prefix=f"mxgate-postfix-{port}-"))
        self.root.chmod(0o755)
        self.config = self.root / "etc"
        self.queue = self.root / "queue"
        self.data = self.root / "data"
        self.maildir = self.root / "maildir"
        self.log = self.root / "maillog"
        self._started = False

    def _write_config(self) -> None:
        for d in (self.config, self.queue, self.data, self.maildir):
            d.mkdir(parents=True, exist_ok=True)
        nobody = pwd.getpwnam("nobody")
        # virtual(8) writes as the mapped uid. The maildir is made here, not by virtual(8):
        # concurrent deliveries racing to create it fail with "Permission denied".
        for d in (self.maildir, *(self.maildir / "all" / x for x in ("", "tmp", "new", "cur"))):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, nobody.pw_uid, nobody.pw_gid)
        pf = pwd.getpwnam("postfix")
        os.chown(self.data, pf.pw_uid, pf.pw_gid)
        domains = ", ".join(self.domains)
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "command_directory": "/usr/sbin",
            "daemon_directory": "/usr/lib/postfix/sbin",
            "meta_directory": "/etc/postfix",
            "shlib_directory": "/usr/lib/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": f"downstream-{self.port}.test",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_recipient_restrictions": "permit_mynetworks, reject",
            "alias_maps": "",
            "alias_database": "",
            "maillog_file": str(self.log),
            "maillog_file_prefixes": str(self.root),
            "syslog_name": f"postfix-test-{self.port}",
            "smtputf8_enable": "yes",
            "message_size_limit": "104857600",
            "default_process_limit": str(max(100, self.smtpd_processes)),
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "smtpd_client_message_rate_limit": "0",
            "in_flow_delay": "0",
            "biff": "no",
        }
        if self.transport == "maildir":
            # One maildir for all (virtual(8) forbids regexp substitution in its maps); each
            # delivered copy carries a Delivered-To header naming its recipient.
            main |= {
                "virtual_mailbox_domains": domains,
                "virtual_mailbox_base": str(self.maildir),
                "virtual_mailbox_maps": "static:all/",
                "virtual_uid_maps": f"static:{nobody.pw_uid}",
                "virtual_gid_maps": f"static:{nobody.pw_gid}",
                "virtual_minimum_uid": "1",
                "virtual_mailbox_limit": "0",
            }
        elif self.transport == "relay":
            assert self.relay_to is not None
            host, port = self.relay_to
            main |= {
                "relay_domains": domains,
                "relay_transport": f"smtp:[{host}]:{port}",
                "smtp_dns_support_level": "disabled",
            }
        else:
            main |= {
                "relay_domains": domains,
                "relay_transport": "discard:",
                "default_transport": "discard:",
            }
        (self.config / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items()))
        (self.config / "master.cf").write_text(
            _MASTER_CF.format(port=self.port, procs=self.smtpd_processes)
        )

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POSTFIX, "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def start(self, timeout: float = 30.0) -> Postfix:
        """Write the config, start the master and wait until the port answers."""
        self._write_config()
        done = self._postfix("start", check=False)
        if done.returncode != 0:
            # Errors before the log service runs go to syslog only: `script` gives postfix a
            # terminal, where it prints them, when a start fails.
            why = subprocess.run(
                ["script", "-qc", f"{POSTFIX} -c {self.config} check", "/dev/null"],
                capture_output=True, text=True, timeout=60, check=False,
            ).stdout  # fmt: skip
            log = self.log_tail()
            self.stop()
            raise RuntimeError(f"postfix start failed: {why}\n{log}")
        self._started = True
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(512).startswith(b"220"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                log = self.log_tail()
                self.stop()
                raise RuntimeError(f"postfix did not listen on {self.port}:\n{log}")
            time.sleep(0.2)

    def stop(self, keep: bool = False) -> None:
        """Stop the master, wait for it to exit and remove the instance directory unless
        ``keep`` (idempotent)."""
        try:
            self._stop()
        finally:
            if not keep:
                shutil.rmtree(self.root, ignore_errors=True)

    def _stop(self) -> None:
        if not self._started:
            return
        self._started = False
        pid_file = self.queue / "pid" / "master.pid"
        pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else 0
        self._postfix("stop", check=False)
        deadline = time.monotonic() + 30
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        if pid:
            self._postfix("abort", check=False)

    def _files(self) -> list[Path]:
        box = self.maildir / "all"
        return [p for sub in ("new", "cur") if (box / sub).exists() for p in (box / sub).iterdir()]

    def messages(self) -> list[bytes]:
        """Every delivered copy, raw (each begins with Return-Path and Delivered-To)."""
        return [p.read_bytes() for p in sorted(self._files())]

    def count(self) -> Counter[str]:
        """recipient -> copies delivered (``transport="maildir"``), by Delivered-To."""
        out: Counter[str] = Counter()
        for raw in self.messages():
            head = raw.split(b"\n\n", 1)[0]
            for line in head.splitlines():
                if line.lower().startswith(b"delivered-to:"):
                    out[line.split(b":", 1)[1].strip().decode().lower()] += 1
                    break
        return out

    def log_tail(self, lines: int = 30) -> str:
        """The end of this instance's log."""
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
