"""rspamd as an engine: HTTP ``POST /checkv2`` on its normal worker; learning through the
controller's ``/learnspam`` and ``/learnham``.

rspamd's score is reported as is (its own scale: with the stock actions, ``add header`` from
6, ``reject`` from 15); its symbol names are the finding's symbols. rspamd's own action decides
the engine's outcome: ``add header``, ``rewrite subject`` and ``reject`` are ``spam``;
``no action``, ``greylist`` and ``soft reject`` (a temporary "try later", not a verdict on the
content) are ``clean``. The policy weights the score against the other antispam engines
(``spam.weights.rspamd``).

Failures raise: a refused connection, an HTTP error status or an answer that is not rspamd's
JSON becomes the scanner's ``error`` finding (:func:`scanner.engines.common.failure`), and a
daemon that does not answer in time its ``timeout`` finding; mail is never held up here.

The HTTP client is a few lines written here rather than aiohttp: rspamd serves one request per
connection and closes it, and Debian's rspamd 3.4 answers a learn it skipped with ``204`` *and a
body* (rspamd issue 5736, fixed upstream later), which strict clients such as aiohttp reject as
a protocol error. Reading the answer up to the close accepts it. Tested against Debian's rspamd
3.4 (``tests/integration/test_rspamd.py``).

Settings (:class:`RspamdSettings`): ``scanner.spam.rspamd_url``, ``rspamd_controller_url``,
``rspamd_password`` and ``max_size``. ``detail``: ``action``, and ``required_score`` and
``smtp_message`` when rspamd gave them.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import AliasPath, Field

from mxgate.errors import ConfigError
from scanner.engines.common import (
    EngineBase,
    EngineSettings,
    EngineSpec,
    Finding,
    Outcome,
    ParsedMessage,
)

__all__ = ["ENGINE", "RspamdEngine", "RspamdError", "RspamdSettings"]

_NOT_SPAM = frozenset({"no action", "greylist", "soft reject"})
_MAX_RCPT_HEADERS = 50  # rspamd only needs a few to score its recipient-count rules
_MAX_REPLY = 4 << 20  # a /checkv2 answer is a few KB; anything near this is not rspamd
_STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3})(?: (.*))?$")
_HEADER_VALUE = re.compile(r"^[\x20-\x7e]*$")  # no CR/LF smuggled in from a message's envelope


class RspamdError(Exception):
    """rspamd answered with an error status or something that is not its answer."""


class _Endpoint:
    """Where one rspamd worker listens: ``http://host:port[/prefix]``."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            # rspamd's workers speak plain HTTP; TLS, if any, is a proxy's business.
            raise ValueError(f"rspamd URL must be http://host:port, not {url!r}")
        self.url = url.rstrip("/")
        self.host, self.port = parts.hostname, parts.port or 80
        self.prefix = parts.path.rstrip("/")


async def _post(
    endpoint: _Endpoint, path: str, body: bytes, headers: list[tuple[str, str]]
) -> tuple[int, str, dict[str, str], bytes]:
    """One ``POST``: (status, reason, lower-cased headers, body). The caller bounds the time."""
    lines = [
        f"POST {endpoint.prefix}{path} HTTP/1.1",
        f"Host: {endpoint.host}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    for k, v in headers:
        if not _HEADER_VALUE.match(v):
            raise RspamdError(f"header {k} has a character HTTP cannot carry: {v[:80]!r}")
        lines.append(f"{k}: {v}")
    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        data = b""
        while chunk := await reader.read(65536):
            data += chunk
            if len(data) > _MAX_REPLY:
                raise RspamdError(f"{path}: answer larger than {_MAX_REPLY} bytes")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    head, sep, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    m = _STATUS.match(status_line)
    if not sep or m is None:
        raise RspamdError(f"{path}: not an HTTP answer: {data[:80]!r}")
    hdrs: dict[str, str] = {}
    for line in header_lines:
        k, _, v = line.decode("latin-1").partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if "chunked" in hdrs.get("transfer-encoding", "").lower():
        raise RspamdError(f"{path}: chunked answers are not rspamd's")  # it always sends a length
    if "content-length" in hdrs and hdrs["content-length"].isdigit():
        payload = payload[: int(hdrs["content-length"])]
    reason = (m.group(2) or b"").decode("utf-8", "replace")
    return int(m.group(1)), reason, hdrs, payload


class RspamdEngine(EngineBase):
    """The ``rspamd`` antispam engine."""

    name = "rspamd"
    kind = "antispam"

    def __init__(
        self,
        url: str,
        controller_url: str,
        password: str = "",
        max_size: int = 2 << 20,
        timeout: float = 60.0,
    ) -> None:
        """Normal worker at ``url``, controller at ``controller_url`` (``http://host:port``).

        ``timeout`` bounds one exchange. The scanner's per-engine timeout is usually the
        shorter one for checks; this one keeps ``mxgate train`` from waiting forever on a
        controller that accepted the connection and then hung.
        """
        self._normal, self._controller = _Endpoint(url), _Endpoint(controller_url)
        self.url, self.controller_url = self._normal.url, self._controller.url
        self.password, self.max_size, self.timeout = password, max_size, timeout
        self._version = "unknown"

    @property
    def version(self) -> str:
        """rspamd's version, from its last answer's ``Server: rspamd/X.Y`` header."""
        return self._version

    @property
    def rules_version(self) -> str:
        """rspamd does not expose a rules version per answer; its rules ship with its package,
        so :attr:`version` identifies them."""
        return "rspamd-default"

    async def _exchange(
        self, endpoint: _Endpoint, path: str, body: bytes, headers: list[tuple[str, str]]
    ) -> tuple[int, str, bytes]:
        async with asyncio.timeout(self.timeout):
            status, reason, hdrs, payload = await _post(endpoint, path, body, headers)
        server = hdrs.get("server", "")
        if server.startswith("rspamd/"):
            self._version = server.removeprefix("rspamd/")
        return status, reason, payload

    async def check(self, message: ParsedMessage) -> Finding:
        """rspamd's score, symbol names and action for ``message``."""
        if len(message.raw) > self.max_size:
            return self.finding("skipped", symbols=("TOO_BIG",))
        # The envelope as rspamd's HTTP protocol takes it; without IP rspamd would judge the
        # scanner's own address. Rcpt repeats, hence pairs rather than a dict.
        headers: list[tuple[str, str]] = [("Queue-Id", message.message_id)]
        if message.client_ip:
            headers.append(("IP", message.client_ip))
        if message.helo:
            headers.append(("Helo", message.helo))
        if message.mail_from:
            headers.append(("From", message.mail_from))
        headers += [("Rcpt", r) for r in message.rcpt_to[:_MAX_RCPT_HEADERS]]
        status, reason, payload = await self._exchange(
            self._normal, "/checkv2", message.raw, headers
        )
        text = payload.decode("utf-8", "replace")
        if status != 200:
            raise RspamdError(f"/checkv2: HTTP {status} {reason} {text}"[:300])
        body = _json_object(text, "/checkv2")
        if "error" in body:
            raise RspamdError(f"/checkv2: {body['error']}"[:300])
        try:
            action = str(body["action"])
            score = float(body["score"])
        except (KeyError, TypeError, ValueError):
            raise RspamdError(f"/checkv2: no action/score in {text[:200]!r}") from None
        symbols = tuple(sorted((body.get("symbols") or {}).keys()))[:100]
        detail = {"action": action}
        if "required_score" in body:
            detail["required_score"] = str(body["required_score"])
        smtp_message = (body.get("messages") or {}).get("smtp_message")
        if smtp_message:
            detail["smtp_message"] = str(smtp_message)[:200]
        outcome: Outcome = "clean" if action in _NOT_SPAM else "spam"
        return self.finding(outcome, score=score, symbols=symbols, detail=detail)

    async def learn(self, message: ParsedMessage, is_spam: bool, *, bulk: bool = False) -> bool:
        """Teach rspamd's Bayes through the controller; True if it learnt the message.

        False (not an error) when rspamd declined: 208, already learnt in this class (a
        repeated training run), or 204, nothing to learn (too few text tokens, or, unless
        ``bulk``, Bayes already puts the message in this class with high confidence). ``bulk``
        sends ``Learn-Type: bulk``, which makes rspamd learn every message of a corpus rather
        than only those it does not already classify, as the other learners do.
        """
        path = "/learnspam" if is_spam else "/learnham"
        headers = [("Password", self.password)] if self.password else []
        if bulk:
            headers.append(("Learn-Type", "bulk"))
        status, reason, payload = await self._exchange(self._controller, path, message.raw, headers)
        if status in (204, 208):
            return False
        if status != 200:
            text = payload.decode("utf-8", "replace")
            raise RspamdError(f"{path}: HTTP {status} {reason} {text}"[:300])
        return True


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        body = json.loads(text)
    except ValueError:
        raise RspamdError(f"{what}: not JSON: {text[:200]!r}") from None
    if not isinstance(body, dict):
        raise RspamdError(f"{what}: not a JSON object: {text[:200]!r}")
    return body


class RspamdSettings(EngineSettings):
    """The ``rspamd`` engine's settings (``scanner.spam.rspamd_*``, ``max_size``)."""

    url: str = Field(
        default="http://127.0.0.1:11333", validation_alias=AliasPath("spam", "rspamd_url")
    )
    controller_url: str = Field(
        default="http://127.0.0.1:11334",
        validation_alias=AliasPath("spam", "rspamd_controller_url"),
    )
    password: str = Field(default="", validation_alias=AliasPath("spam", "rspamd_password"))
    max_size: int = Field(default=2 << 20, validation_alias=AliasPath("spam", "max_size"))


def build(settings: RspamdSettings) -> RspamdEngine:
    """An rspamd client; a URL rspamd cannot be reached at fails at start, by name."""
    try:
        return RspamdEngine(
            settings.url, settings.controller_url, settings.password, settings.max_size
        )
    except ValueError as e:
        raise ConfigError(
            "MXGATE_SCANNER__SPAM__RSPAMD_URL", "scanner.spam.rspamd_url", str(e)
        ) from None


ENGINE = EngineSpec(RspamdEngine, RspamdSettings, build)
"""The registry's entry for ``rspamd``."""
