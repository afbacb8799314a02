"""ClamAV through clamd's socket: one ``INSTREAM`` per message, over a unix or TCP socket.

The whole raw message is streamed once: clamd decodes MIME and opens archives itself, so its
verdict is independent of our own parser (:mod:`scanner.mime`) — a parser bug there cannot hide
a payload from ClamAV too. The clamd protocol is small and documented (``man clamd``), so it is
spoken here directly over asyncio streams rather than through a blocking client library:
a scan must be cancellable at the scanner's per-engine timeout.

The verdict records clamd's version and its database version. clamd reports the database
version of official ``.cvd`` databases in ``VERSION`` (``ClamAV 1.4.6/27400/<date>``); a
database of unofficial signature files only (as the project builds, see
:mod:`devstack.clamd`) has none, so when ``db_dir`` is given the version is a digest
of its signature files instead. The version is refreshed at most every ``version_ttl`` seconds,
so a database reload shows up in verdicts (and keys the verdict cache) without a restart.

Settings (:class:`ClamavSettings`): ``scanner.clamav_socket`` (required) and
``scanner.clamav_db_dir``. ``detail`` of an ``infected`` finding: ``signature`` (the name clamd
reported, also the one symbol).
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from pathlib import Path

from pydantic import Field

from mxgate.errors import ConfigError
from scanner.engines.common import EngineBase, EngineSettings, EngineSpec, Finding, ParsedMessage

__all__ = ["ENGINE", "ClamAVEngine", "ClamavSettings", "ClamdError", "db_digest", "parse_address"]

_CHUNK = 256 * 1024
_SIG_SUFFIXES = (
    ".ndb",
    ".hdb",
    ".hsb",
    ".ldb",
    ".mdb",
    ".msb",
    ".cdb",
    ".ign2",
    ".fp",
    ".sfp",
    ".cvd",
    ".cld",
    ".cud",
    ".yar",
    ".yara",
    ".pdb",
    ".wdb",
    ".ftm",
    ".idb",
)


class ClamdError(Exception):
    """clamd answered with an error, or not at all."""


def parse_address(address: str) -> tuple[str, str, int]:
    """``"/run/clamd.sock"`` or ``"unix:/path"`` -> ``("unix", path, 0)``;
    ``"tcp://host:port"`` or ``"host:port"`` -> ``("tcp", host, port)``."""
    if address.startswith("unix:"):
        return "unix", address[5:], 0
    if address.startswith("/"):
        return "unix", address, 0
    host, sep, port = address.removeprefix("tcp://").rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"clamd address {address!r}: expected a socket path or tcp://HOST:PORT")
    return "tcp", host.strip("[]") or "127.0.0.1", int(port)


def db_digest(db_dir: Path) -> str:
    """A version for a directory of signature files: a digest of their names and contents."""
    h = hashlib.sha256()
    for p in sorted(db_dir.iterdir()):
        if p.is_file() and p.suffix.lower() in _SIG_SUFFIXES:
            h.update(p.name.encode() + b"\0")
            h.update(p.read_bytes())
            h.update(b"\0")
    return "sigs-" + h.hexdigest()[:16]


class ClamAVEngine(EngineBase):
    """The ``clamav`` antivirus engine: a clamd client. Safe to call concurrently."""

    name = "clamav"
    kind = "antivirus"
    cacheable = True

    def __init__(
        self, address: str, *, db_dir: Path | None = None, version_ttl: float = 30.0
    ) -> None:
        self._address = address
        self._family, self._host, self._port = parse_address(address)
        self._db_dir = db_dir
        self._version_ttl = version_ttl
        self._version = "unknown"
        self._rules = "unknown"
        self._version_at = float("-inf")

    @property
    def version(self) -> str:
        """clamd's version, as last reported (``"unknown"`` before the first answer)."""
        return self._version

    @property
    def rules_version(self) -> str:
        """The signature database version, as last reported or computed."""
        return self._rules

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._family == "unix":
            return await asyncio.open_unix_connection(self._host)
        return await asyncio.open_connection(self._host, self._port)

    async def _command(self, cmd: bytes) -> str:
        reader, writer = await self._connect()
        try:
            writer.write(b"z" + cmd + b"\0")
            await writer.drain()
            return await _reply(reader)
        finally:
            writer.close()

    async def refresh_version(self) -> None:
        """Ask clamd ``VERSION`` (and re-digest ``db_dir``); raises :class:`ClamdError`."""
        try:
            text = await self._command(b"VERSION")
        except OSError as e:
            raise ClamdError(f"clamd at {self._address} unreachable: {e!r}") from e
        # "ClamAV 1.4.6" or "ClamAV 1.4.6/27400/Tue Oct  1 08:00:00 2024"
        fields = text.split("/")
        self._version = fields[0].removeprefix("ClamAV ").strip() or "unknown"
        if len(fields) >= 2 and fields[1].strip() not in ("", "0"):
            self._rules = f"db-{fields[1].strip()}"
        elif self._db_dir is not None:
            self._rules = await asyncio.to_thread(db_digest, self._db_dir)
        else:
            self._rules = "unknown"
        self._version_at = time.monotonic()

    async def check(self, message: ParsedMessage) -> Finding:
        """Stream the raw message to clamd; ``infected`` with the signature names it reports."""
        if time.monotonic() - self._version_at > self._version_ttl:
            await self.refresh_version()
        try:
            text = await self._instream(message.raw)
        except OSError as e:
            raise ClamdError(f"clamd at {self._address}: {e!r}") from e
        # "stream: OK" | "stream: <Signature> FOUND" | "<message> ERROR"
        if text.endswith("ERROR"):
            raise ClamdError(f"clamd: {text[:200]}")
        body = text.removeprefix("stream:").strip()
        if body == "OK":
            return self.finding("clean")
        if body.endswith("FOUND"):
            sig = body.removesuffix("FOUND").strip() or "unknown"
            return self.finding("infected", symbols=(sig,), detail={"signature": sig})
        raise ClamdError(f"clamd: unexpected reply {text[:200]!r}")

    async def _instream(self, data: bytes) -> str:
        reader, writer = await self._connect()
        try:
            writer.write(b"zINSTREAM\0")
            view = memoryview(data)
            for i in range(0, len(view), _CHUNK):
                chunk = view[i : i + _CHUNK]
                writer.write(struct.pack(">I", len(chunk)))
                writer.write(chunk)
                # clamd answers early (and closes) when a limit is exceeded; drain per chunk
                # so that answer is read instead of a broken-pipe error.
                try:
                    await writer.drain()
                except (BrokenPipeError, ConnectionResetError):
                    break
            else:
                writer.write(struct.pack(">I", 0))
                await writer.drain()
            return await _reply(reader)
        finally:
            writer.close()


async def _reply(reader: asyncio.StreamReader) -> str:
    try:
        raw = await reader.readuntil(b"\0")
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            raise ClamdError("clamd closed the connection without answering") from None
        raw = e.partial
    return raw.rstrip(b"\0").decode("utf-8", "replace").strip()


class ClamavSettings(EngineSettings):
    """The ``clamav`` engine's settings (``scanner.clamav_socket``, ``scanner.clamav_db_dir``)."""

    socket: str = Field(default="", validation_alias="clamav_socket")
    db_dir: Path | None = Field(default=None, validation_alias="clamav_db_dir")


_SOCKET_ENV = "MXGATE_SCANNER__CLAMAV_SOCKET"


def build(settings: ClamavSettings) -> ClamAVEngine:
    """The engine for clamd at ``settings.socket``; a missing or bad address is a ConfigError."""
    if not settings.socket:
        raise ConfigError(
            _SOCKET_ENV,
            "scanner.clamav_socket",
            "clamav (on by default) needs clamd's socket: set it, or leave clamav out of "
            "MXGATE_SCANNER__ENGINES (`mxgate up` starts a clamd of its own)",
        )
    try:
        return ClamAVEngine(settings.socket, db_dir=settings.db_dir)
    except ValueError as e:
        raise ConfigError(_SOCKET_ENV, "scanner.clamav_socket", str(e)) from None


ENGINE = EngineSpec(ClamAVEngine, ClamavSettings, build)
"""The registry's entry for ``clamav``."""
