"""A local clamd (Debian's clamav-daemon) on the project's own signature database.

No signature download is possible where mxgate is built and tested (no freshclam), so the
project writes ClamAV's documented text signature formats itself (``man sigtool``,
"Creating signatures for ClamAV"):

- ``mxgate.ndb`` — body signatures ``Name:TargetType:Offset:HexSignature``;
- ``mxgate.hsb`` — SHA-256 hash signatures ``sha256:size:Name``.

They cover EICAR (the 68-byte test string by body and by hash) and the project's test samples.
:class:`Clamd` runs clamd on that database in the foreground, for the tests, bench/ and
`mxgate up` (which starts it when the clamav engine is enabled and no socket is configured).
Production deployments point ``MXGATE_SCANNER__CLAMAV_SOCKET`` at their own clamd with the
official databases.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from devstack.binaries import find

__all__ = ["EICAR", "SIGNATURES", "Clamd", "build_database", "clamd_binary", "clamd_config"]

# Built from pieces so that this source file does not itself carry the test string (and
# trip the scanners of anyone who checks the repository out).
EICAR = "".join(
    ["X5O!P%@AP[4\\PZX54(P^)7CC)7}$", "EICAR-STANDARD-ANTIVIRUS", "-TEST-FILE!$H+H*"]
).encode("ascii")
"""The EICAR anti-virus test file (68 bytes)."""

# A marker the test corpus uses for a "body-signature only" sample, so a hit can be told apart
# from the EICAR ones (and from YARA's rule for EICAR).
MXGATE_TEST_MARKER = b"MXGATE-CLAMAV-TEST-SIGNATURE-7f3a9c"

SIGNATURES: dict[str, bytes] = {
    "Mxgate.Test.EICAR": EICAR,
    "Mxgate.Test.Marker": MXGATE_TEST_MARKER,
}
"""Body signatures (name -> byte pattern matched anywhere in any file clamd extracts)."""

HASHES: dict[str, bytes] = {
    "Mxgate.Test.EICAR.Hash": EICAR,
}
"""Hash signatures (name -> the exact file content)."""


def build_database(directory: Path | str) -> Path:
    """Write the signature files into ``directory`` (created if missing); returns it."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    # TargetType 0 = any file; offset * = anywhere. Names must not contain ':'.
    ndb = "".join(f"{name}:0:*:{pattern.hex()}\n" for name, pattern in SIGNATURES.items())
    hsb = "".join(
        f"{hashlib.sha256(content).hexdigest()}:{len(content)}:{name}\n"
        for name, content in HASHES.items()
    )
    (d / "mxgate.ndb").write_text(ndb, encoding="ascii")
    (d / "mxgate.hsb").write_text(hsb, encoding="ascii")
    return d


def clamd_config(
    path: Path | str,
    *,
    database: Path,
    socket: str,
    log_file: Path | None = None,
    max_stream: str = "64M",
    threads: int = 4,
) -> Path:
    """Write a clamd.conf at ``path`` serving ``database`` on ``socket``.

    ``socket`` is a unix socket path or ``tcp://127.0.0.1:PORT``. clamd stays in the foreground
    so whoever starts it owns the process.
    """
    p = Path(path)
    lines = [
        "Foreground yes",
        f"DatabaseDirectory {database}",
        f"StreamMaxLength {max_stream}",
        f"MaxThreads {threads}",
        # Mail is what we scan: the mail/archive limits are ours to choose, not the defaults'.
        "ScanMail yes",
        "ScanArchive yes",
        "MaxFileSize 60M",
        "MaxScanSize 200M",
        "SelfCheck 60",
        "ConcurrentDatabaseReload no",
    ]
    if socket.startswith("tcp://"):
        host, _, port = socket.removeprefix("tcp://").rpartition(":")
        lines += [f"TCPSocket {port}", f"TCPAddr {host}"]
    else:
        lines += [f"LocalSocket {socket}", "LocalSocketMode 660"]
    if log_file is not None:
        lines.append(f"LogFile {log_file}")
    p.write_text("\n".join(lines) + "\n", encoding="ascii")
    return p


def clamd_binary() -> str:
    """The clamd executable; fails loudly when the package is missing."""
    path = find("clamd") or ""
    if not path:
        raise RuntimeError("clamd not found: run `bash infra/install-system.sh` (clamav-daemon)")
    return path


class Clamd:
    """One clamd process in ``workdir``, listening on a unix socket there."""

    def __init__(self, workdir: Path, socket_address: str | None = None) -> None:
        """``socket_address``: a unix socket path (default: in ``workdir``) or
        ``tcp://127.0.0.1:PORT``."""
        self.workdir = workdir
        self.db = build_database(workdir / "db")
        self.socket = socket_address or str(workdir / "clamd.sock")
        self.log = workdir / "clamd.log"
        self.conf = clamd_config(
            workdir / "clamd.conf", database=self.db, socket=self.socket, log_file=self.log
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> Clamd:
        """Start clamd and wait until it answers PING."""
        if not self.socket.startswith("tcp://") and os.path.exists(self.socket):
            os.unlink(self.socket)
        self.proc = subprocess.Popen(
            [clamd_binary(), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"clamd exited {self.proc.returncode}: {self._log_tail()}")
            if self.ping():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"clamd did not answer within {timeout}s: {self._log_tail()}")

    def ping(self) -> bool:
        """True when clamd answers PONG on its socket."""
        try:
            addr: str | tuple[str, int]
            if self.socket.startswith("tcp://"):
                host, _, port = self.socket.removeprefix("tcp://").rpartition(":")
                family, addr = socket.AF_INET, (host, int(port))
            else:
                family, addr = socket.AF_UNIX, self.socket
            with socket.socket(family) as s:
                s.settimeout(2)
                s.connect(addr)
                s.sendall(b"zPING\0")
                return s.recv(16).startswith(b"PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL clamd (a crash, for failure tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """Stop clamd (SIGTERM, then SIGKILL)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"
