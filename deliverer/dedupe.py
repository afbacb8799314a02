"""At most one copy per recipient: a local record of every remote 250, in rocksdict.

It is written right after the remote server accepts a recipient and before the attempt's event
is committed to Kafka, so a deliverer killed between the two does not deliver again when the
batch is re-run after restart.
"""

from __future__ import annotations

from pathlib import Path

from rocksdict import Options, Rdict, WriteOptions


class DeliveredLog:
    """Which (message, recipient) pairs a remote server already accepted."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        opts = Options()
        opts.create_if_missing(True)
        self._db = Rdict(str(path), opts)
        wo = WriteOptions()
        # Survives a process kill (the WAL is in the page cache); fsync per write would cost a
        # disk flush per recipient for the rarer case of losing the machine itself.
        wo.sync = False
        self._db.set_write_options(wo)

    @staticmethod
    def _key(message_id: str, recipient: str) -> str:
        return f"{message_id}\x00{recipient.lower()}"

    def delivered(self, message_id: str, recipient: str) -> bool:
        """True when this recipient of this message was already accepted downstream."""
        return self._key(message_id, recipient) in self._db

    def mark(self, message_id: str, recipient: str, reply: str) -> None:
        """Record the remote's acceptance of ``recipient``."""
        self._db[self._key(message_id, recipient)] = reply

    def close(self) -> None:
        """Flush and close the database."""
        self._db.close()
