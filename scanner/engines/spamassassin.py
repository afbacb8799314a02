"""SpamAssassin's spamd as an engine, over the spamc protocol (SPAMC/1.5) on TCP.

The client is written by hand: the protocol is a request line, a few headers and the message,
answered by a status line and headers; the maintained Python clients either block or bring
their own socket handling we would have to wrap in threads anyway. Requests:

- ``SYMBOLS``: score, threshold and the rule names that hit;
- ``TELL`` (needs ``spamd --allow-tell``): teach spamd's Bayes a message's class, which is how
  ``mxgate train`` trains it.

spamd's score is reported as is (its threshold is 5.0 by default, as the policy's tag
threshold); a message bigger than ``max_size`` is ``skipped`` as spamc would.

Settings (:class:`SpamassassinSettings`): ``scanner.spam.spamd_host``, ``spamd_port``,
``spamd_user`` and ``max_size``. No ``detail``: the symbols are spamd's rule names.
"""

from __future__ import annotations

import asyncio
import re

from pydantic import AliasPath, Field

from scanner.engines.common import EngineBase, EngineSettings, EngineSpec, Finding, ParsedMessage

__all__ = [
    "ENGINE",
    "SpamassassinEngine",
    "SpamassassinSettings",
    "SpamdError",
    "SpamdResult",
    "spamc",
]

_STATUS = re.compile(rb"^SPAMD/(\d+\.\d+) (\d+) (.*)$")
_SPAM = re.compile(rb"^Spam: (True|False|Yes|No) ; (-?[\d.]+) / (-?[\d.]+)", re.IGNORECASE)


class SpamdError(Exception):
    """spamd answered with an error or not at all."""


class SpamdResult:
    """Parsed answer to a SYMBOLS/TELL request."""

    def __init__(
        self, headers: dict[str, str], body: bytes, spam: bool, score: float, threshold: float
    ) -> None:
        """Fields of the answer."""
        self.headers, self.body = headers, body
        self.spam, self.score, self.threshold = spam, score, threshold

    @property
    def symbols(self) -> tuple[str, ...]:
        """Rule names (SYMBOLS answers)."""
        text = self.body.decode("ascii", "replace").strip()
        return tuple(s for s in text.split(",") if s)


async def spamc(
    host: str, port: int, command: str, message: bytes, headers: dict[str, str] | None = None
) -> SpamdResult:
    """One spamc request; raises :class:`SpamdError` on a protocol or daemon error."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = [f"{command} SPAMC/1.5", f"Content-length: {len(message)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + message)
        await writer.drain()
        writer.write_eof()  # spamd reads to Content-length, but EOF makes old versions answer
        data = await reader.read()
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    head_b, _, body = data.partition(b"\r\n\r\n")
    lines = head_b.split(b"\r\n")
    m = _STATUS.match(lines[0]) if lines else None
    if m is None:
        raise SpamdError(f"bad answer {data[:80]!r}")
    if m.group(2) != b"0":
        raise SpamdError(f"spamd: {m.group(2).decode()} {m.group(3).decode(errors='replace')}")
    hdrs: dict[str, str] = {}
    spam, score, threshold = False, 0.0, 5.0
    for line in lines[1:]:
        k, _, v = line.decode("latin-1").partition(":")
        hdrs[k.strip().lower()] = v.strip()
        sm = _SPAM.match(line)
        if sm:
            spam = sm.group(1).lower() in (b"true", b"yes")
            score, threshold = float(sm.group(2)), float(sm.group(3))
    return SpamdResult(hdrs, body, spam, score, threshold)


class SpamassassinEngine(EngineBase):
    """The ``spamassassin`` antispam engine (an external spamd)."""

    name = "spamassassin"
    kind = "antispam"

    def __init__(self, host: str, port: int, user: str = "mxgate", max_size: int = 2 << 20) -> None:
        """spamd at ``host:port``, scanning as ``user``."""
        self.host, self.port, self.user, self.max_size = host, port, user, max_size
        self._version = "unknown"

    @property
    def version(self) -> str:
        """spamd's protocol version as it last answered."""
        return self._version

    @property
    def rules_version(self) -> str:
        """spamd does not say over the protocol; the package's rules are versioned with it."""
        return "spamd-default"

    async def check(self, message: ParsedMessage) -> Finding:
        """spamd's score and rule names."""
        if len(message.raw) > self.max_size:
            return self.finding("skipped", symbols=("TOO_BIG",))
        r = await spamc(self.host, self.port, "SYMBOLS", message.raw, {"User": self.user})
        return self.finding("spam" if r.spam else "clean", score=r.score, symbols=r.symbols[:100])

    async def learn(self, message: ParsedMessage, is_spam: bool) -> None:
        """Teach spamd's Bayes (TELL, local database)."""
        await spamc(
            self.host,
            self.port,
            "TELL",
            message.raw,
            {
                "User": self.user,
                "Message-class": "spam" if is_spam else "ham",
                "Set": "local",
            },
        )


class SpamassassinSettings(EngineSettings):
    """The ``spamassassin`` engine's settings (``scanner.spam.spamd_*``, ``max_size``)."""

    host: str = Field(default="127.0.0.1", validation_alias=AliasPath("spam", "spamd_host"))
    port: int = Field(default=783, validation_alias=AliasPath("spam", "spamd_port"))
    user: str = Field(default="mxgate", validation_alias=AliasPath("spam", "spamd_user"))
    max_size: int = Field(default=2 << 20, validation_alias=AliasPath("spam", "max_size"))


def build(settings: SpamassassinSettings) -> SpamassassinEngine:
    """A spamc client of spamd at ``host:port``."""
    return SpamassassinEngine(settings.host, settings.port, settings.user, settings.max_size)


ENGINE = EngineSpec(SpamassassinEngine, SpamassassinSettings, build)
"""The registry's entry for ``spamassassin``."""
