"""What the memory benchmarks share: one SMTP transaction written by hand, and a process's peak
RSS.

By hand rather than with smtplib or aiosmtplib: the benchmarks send fifty 20 MB bodies at once
from one process, in 1 MB writes with ``drain()`` between them, so the sender never holds a
whole message and the receiver sees a body that really trickles in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path


async def send(
    port: int,
    rcpt: bytes,
    chunks: Iterable[bytes],
    sender: bytes = b"alice@sender.test",
) -> str:
    """Send one message to 127.0.0.1:``port``: ``chunks`` are the DATA content (dot-stuffed
    already, without the final ``.``), written one by one. Returns the reply to the end of
    DATA."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> str:
        while True:
            line = await reader.readline()
            if line[3:4] != b"-":
                return line.decode().strip()

    await reply()
    for cmd in (b"EHLO bench.test", b"MAIL FROM:<" + sender + b">", b"RCPT TO:<" + rcpt + b">"):
        writer.write(cmd + b"\r\n")
        await reply()
    writer.write(b"DATA\r\n")
    await reply()
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
    writer.write(b".\r\n")
    answer = await reply()
    writer.write(b"QUIT\r\n")
    await reply()
    writer.close()
    return answer


def hwm_kib(pid: int) -> int:
    """Peak resident set size of process ``pid`` so far (``VmHWM``), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for process {pid}")
