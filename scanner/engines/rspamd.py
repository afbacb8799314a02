"""rspamd as an engine: HTTP ``POST /checkv2`` on its normal worker; learning through the
controller's ``/learnspam`` and ``/learnham``.

rspamd's score is reported as is; its own action (``reject``, ``add header``, ...) decides the
engine's outcome (anything but ``no action`` and ``greylist`` is ``spam``). The policy weights
it against the other antispam engines (``spam.weights.rspamd``).
"""

from __future__ import annotations

import aiohttp

from scanner.engines.base import Finding, Kind, ParsedMessage

__all__ = ["RspamdEngine", "RspamdError"]

_NOT_SPAM = {"no action", "greylist", "soft reject"}


class RspamdError(Exception):
    """rspamd answered with an error status."""


class RspamdEngine:
    """The ``rspamd`` antispam engine."""

    name: str = "rspamd"
    kind: Kind = "antispam"

    def __init__(self, url: str, controller_url: str, password: str = "",
                 max_size: int = 2 << 20) -> None:
        """Normal worker at ``url``, controller at ``controller_url``."""
        self.url, self.controller_url = url.rstrip("/"), controller_url.rstrip("/")
        self.password, self.max_size = password, max_size
        self._session: aiohttp.ClientSession | None = None
        self._version = "unknown"

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    @property
    def version(self) -> str:
        """rspamd's version, from its last answer's Server header."""
        return self._version

    @property
    def rules_version(self) -> str:
        """rspamd does not expose a rules version per answer."""
        return "rspamd-default"

    async def check(self, message: ParsedMessage) -> Finding:
        """rspamd's score, symbols and action."""
        if len(message.raw) > self.max_size:
            return self._finding("skipped", 0.0, ("TOO_BIG",), {})
        headers = {"Queue-Id": message.message_id}
        if message.client_ip:
            headers["IP"] = message.client_ip
        if message.helo:
            headers["Helo"] = message.helo
        if message.mail_from:
            headers["From"] = message.mail_from
        for r in message.rcpt_to[:50]:
            headers.setdefault("Rcpt", r)
        async with self._http().post(f"{self.url}/checkv2", data=message.raw,
                                     headers=headers) as resp:
            self._version = resp.headers.get("Server", self._version)
            if resp.status != 200:
                raise RspamdError(f"/checkv2: HTTP {resp.status}")
            body = await resp.json(content_type=None)
        action = str(body.get("action", "no action"))
        symbols = tuple(sorted((body.get("symbols") or {}).keys()))[:100]
        outcome = "clean" if action in _NOT_SPAM else "spam"
        return self._finding(outcome, float(body.get("score", 0.0)), symbols, {"action": action})

    async def learn(self, message: ParsedMessage, is_spam: bool) -> None:
        """Teach rspamd's Bayes through the controller."""
        path = "/learnspam" if is_spam else "/learnham"
        headers = {"Password": self.password} if self.password else {}
        async with self._http().post(self.controller_url + path, data=message.raw,
                                     headers=headers) as resp:
            # 208: already learnt (a repeated training run): not an error.
            if resp.status not in (200, 208):
                raise RspamdError(f"{path}: HTTP {resp.status} {await resp.text()}"[:300])

    def _finding(self, outcome, score, symbols, detail) -> Finding:  # type: ignore[no-untyped-def]
        return Finding(
            engine=self.name, engine_version=self._version, rules_version=self.rules_version,
            outcome=outcome, score=score, symbols=symbols, kind=self.kind, detail=detail,
        )

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
