"""Sandbox: attachments of the types a tenant names are detonated in a sandbox service.

Speaks CAPE's REST API (v2), which other sandboxes imitate:

- ``POST {url}/apiv2/tasks/create/file/`` (multipart, field ``file``) ->
  ``{"error": false, "data": {"task_ids": [N]}}``;
- ``GET {url}/apiv2/tasks/status/N/`` -> ``{"data": "pending" | "running" | "completed" |
  "reported" | "failed_..."}``, polled every ``poll_interval`` seconds until ``reported``;
- ``GET {url}/apiv2/tasks/get/report/N/`` -> the JSON report, of which ``malscore`` (0-10) and
  ``signatures[].name`` are used.

The engine only reports; :func:`scanner.policy.decide` decides. A finished analysis is a
``clean`` finding whose ``score`` is the highest malscore of the message's attachments and whose
``symbols`` are the signature names; the tenant's ``Policy.sandbox_malicious`` turns a high score
into a detection (``on_virus``). The message is held until every submitted attachment is
reported or ``timeout`` seconds have passed; then the finding is ``timeout`` (with what did
finish recorded in ``score``/``symbols``/``detail``) and ``Policy.on_sandbox_timeout`` decides.
A sandbox that answers with an HTTP error or a failed analysis makes :meth:`SandboxEngine.check`
raise, which the runner records as an ``error`` finding.

Which attachments: the true type from the bytes (:func:`scanner.engines.attachments.category`,
the same classification the attachments engine reports), never the name or declared type;
``"office"`` also covers macro-enabled Office files. Reports are cached by the attachment's
SHA-256, and a file already submitted is not submitted again while its analysis runs: a
campaign that sends one attachment to thousands of recipients costs one detonation.

Settings (:class:`SandboxSettings`): ``scanner.sandbox_*`` and ``scanner.cache_entries``.
``detail``: each part path -> ``task N malscore S``, ``pending (task N)`` or
``too large to submit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import Field

from mxgate.errors import ConfigError
from scanner.engines.attachments import category, true_type
from scanner.engines.common import (
    EngineBase,
    EngineSettings,
    EngineSpec,
    Finding,
    Outcome,
    ParsedMessage,
    Part,
)
from scanner.mime import RAW_PATH

__all__ = ["DEFAULT_TYPES", "ENGINE", "SandboxEngine", "SandboxError", "SandboxSettings"]

DEFAULT_TYPES: tuple[str, ...] = ("executable", "office", "pdf", "script")
"""Attachment categories submitted unless configured otherwise."""

_ENV = "MXGATE_SCANNER__SANDBOX_URL"
_KEY = "scanner.sandbox_url"
# Sandboxes refuse big uploads (CAPE's default limit is 100 MB) and detonating a huge file
# takes long; such parts are listed in the finding's detail instead.
_MAX_BYTES = 50 * 1024 * 1024
_DONE = "reported"
# Signature names kept per finding: a report can list hundreds.
_MAX_SYMBOLS = 20


class SandboxError(Exception):
    """The sandbox answered with an error, a malformed reply or a failed analysis."""


@dataclass(frozen=True, slots=True)
class Report:
    """What the engine keeps of one finished analysis."""

    task_id: int
    malscore: float
    signatures: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Target:
    sha256: str
    filename: str
    part: Part


class SandboxEngine(EngineBase):
    """The ``sandbox`` policy engine. Safe to call concurrently from one event loop."""

    name = "sandbox"
    kind = "policy"
    cacheable = True

    def __init__(
        self,
        url: str,
        *,
        types: Sequence[str] = DEFAULT_TYPES,
        timeout: float = 45.0,
        poll_interval: float = 5.0,
        token: str = "",
        request_timeout: float = 30.0,
        cache_entries: int = 10_000,
    ) -> None:
        """``url`` is the sandbox's base URL (``http://cape:8000``); ``timeout`` bounds how long
        one message is held; ``token`` is sent as ``Authorization: Token ...`` when set."""
        if not url or not url.startswith(("http://", "https://")):
            raise ConfigError(_ENV, _KEY, f"the sandbox needs an http(s) base URL, got {url!r}")
        if timeout <= 0 or poll_interval <= 0:
            raise ConfigError(_ENV, _KEY, "sandbox timeout and poll interval must be positive")
        self.url = url.rstrip("/")
        self.types = tuple(dict.fromkeys(types))
        self.timeout = timeout
        self.poll_interval = poll_interval
        self._token = token
        self._request_timeout = request_timeout
        self._cache_entries = cache_entries
        self._reports: OrderedDict[str, Report] = OrderedDict()
        # Submitted but not yet reported (sha256 -> task id): polled again, not resubmitted.
        self._submitted: OrderedDict[str, int] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[Report]] = {}
        self._waiters: dict[str, int] = {}  # sha256 -> messages waiting for its analysis
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.submissions = 0
        """Files uploaded to the sandbox so far (cache and in-flight sharing avoid the rest)."""

    @property
    def version(self) -> str:
        """The API this engine speaks."""
        return "cape-apiv2-1"

    @property
    def rules_version(self) -> str:
        """Which types are submitted: a change in the list changes what a verdict means."""
        return "types-" + hashlib.sha256(",".join(sorted(self.types)).encode()).hexdigest()[:12]

    def cached(self, sha256: str) -> Report | None:
        """The cached report of an attachment, if any (for ops and tests)."""
        return self._reports.get(sha256)

    async def check(self, message: ParsedMessage) -> Finding:
        """Submit the named types, wait for every report or the timeout; never decides."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        targets, too_large = await asyncio.to_thread(self._targets, message)
        detail: dict[str, str] = {p: "too large to submit" for p in too_large}
        if not targets:
            return self._finding("skipped", 0.0, (), detail)
        reports: dict[str, Report] = {}
        waiting: dict[asyncio.Task[Report], _Target] = {}
        for t in targets:
            hit = self._reports.get(t.sha256)
            if hit is not None:
                self._reports.move_to_end(t.sha256)
                reports[t.part.path] = hit
            else:
                waiting[self._analysis(t)] = t
        if waiting:
            try:
                # asyncio.wait cancels nothing: another message waiting for the same file
                # keeps its analysis going.
                done, _ = await asyncio.wait(waiting, timeout=max(0.0, deadline - loop.time()))
            finally:
                for task, t in waiting.items():
                    self._release(t.sha256, task)
            for task in done:
                t = waiting.pop(task)
                if task.cancelled():
                    waiting[task] = t  # stopped by aclose(): no verdict
                    continue
                exc = task.exception()
                if exc is not None:
                    raise SandboxError(f"{t.part.path}: {exc}") from exc
                reports[t.part.path] = task.result()
        score = max((r.malscore for r in reports.values()), default=0.0)
        symbols = tuple(dict.fromkeys(s for r in reports.values() for s in r.signatures))
        for path, r in reports.items():
            detail[path] = f"task {r.task_id} malscore {r.malscore:g}"
        if waiting:
            for t in waiting.values():
                task_id = self._submitted.get(t.sha256)
                detail[t.part.path] = f"pending (task {task_id})" if task_id else "pending"
            f = self._finding("timeout", score, symbols[:_MAX_SYMBOLS], detail)
            n = len(waiting)
            err = f"no sandbox verdict within {self.timeout:g}s for {n} attachment(s)"
            return dataclasses.replace(f, error=err)
        return self._finding("clean", score, symbols[:_MAX_SYMBOLS], detail)

    async def aclose(self) -> None:
        """Stop the analyses still being polled and close the HTTP session."""
        tasks = list(self._inflight.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        self._inflight.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- internals ----------------------------------------------------------------------------

    def _finding(
        self, outcome: Outcome, score: float, symbols: tuple[str, ...], detail: dict[str, str]
    ) -> Finding:
        return self.finding(outcome, score=score, symbols=symbols, detail=detail)

    def _targets(self, message: ParsedMessage) -> tuple[list[_Target], list[str]]:
        """The parts whose true type is listed, one per distinct content (libmagic: a thread)."""
        out: dict[str, _Target] = {}
        too_large: list[str] = []
        for part in message.parts:
            if part.path == RAW_PATH or not part.data:
                continue
            cat = category(true_type(part.data), part.filename)
            if cat is None or not self._wanted(cat):
                continue
            if len(part.data) > _MAX_BYTES:
                too_large.append(part.path)
                continue
            sha = hashlib.sha256(part.data).hexdigest()
            out.setdefault(sha, _Target(sha, _upload_name(part, sha), part))
        return list(out.values()), too_large

    def _wanted(self, cat: str) -> bool:
        return cat in self.types or (cat == "office-macro" and "office" in self.types)

    def _analysis(self, t: _Target) -> asyncio.Task[Report]:
        """The analysis of ``t``'s content, shared by every message that carries it."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Tasks and the session belong to one loop (tests run one loop per test).
            self._inflight.clear()
            self._waiters.clear()
            self._session = None
            self._loop = loop
        self._waiters[t.sha256] = self._waiters.get(t.sha256, 0) + 1
        task = self._inflight.get(t.sha256)
        if task is None:
            task = loop.create_task(self._analyse(t), name=f"sandbox-{t.sha256[:12]}")
            self._inflight[t.sha256] = task

            def forget(done: asyncio.Task[Report], sha: str = t.sha256) -> None:
                if self._inflight.get(sha) is done:
                    del self._inflight[sha]
                if not done.cancelled():
                    done.exception()  # retrieved here, so an abandoned failure is not logged

            task.add_done_callback(forget)
        return task

    def _release(self, sha256: str, task: asyncio.Task[Report]) -> None:
        """One message stopped waiting for ``task``; the last one to go stops the polling."""
        left = self._waiters.get(sha256, 1) - 1
        if left > 0:
            self._waiters[sha256] = left
            return
        self._waiters.pop(sha256, None)
        if not task.done():
            # Nobody waits: stop polling. The sandbox's task id stays in _submitted, so the
            # next message with this file polls that task instead of uploading it again.
            if self._inflight.get(sha256) is task:
                del self._inflight[sha256]
            task.cancel()

    async def _analyse(self, t: _Target) -> Report:
        task_id = self._submitted.get(t.sha256)
        if task_id is None:
            task_id = await self._submit(t)
            self._remember_task(t.sha256, task_id)
        try:
            while True:
                status = await self._status(task_id)
                if status == _DONE:
                    break
                if status.startswith("failed"):
                    raise SandboxError(f"task {task_id}: analysis {status}")
                await asyncio.sleep(self.poll_interval)
            report = await self._report(task_id)
        except SandboxError:
            self._submitted.pop(t.sha256, None)  # a failed task is not polled again
            raise
        self._submitted.pop(t.sha256, None)
        self._reports[t.sha256] = report
        while len(self._reports) > self._cache_entries:
            self._reports.popitem(last=False)
        return report

    def _remember_task(self, sha256: str, task_id: int) -> None:
        self._submitted[sha256] = task_id
        while len(self._submitted) > max(self._cache_entries, 1):
            self._submitted.popitem(last=False)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Authorization": f"Token {self._token}"} if self._token else {}
            self._session = aiohttp.ClientSession(
                headers=headers, timeout=aiohttp.ClientTimeout(total=self._request_timeout)
            )
        return self._session

    async def _submit(self, t: _Target) -> int:
        form = aiohttp.FormData()
        form.add_field(
            "file", t.part.data, filename=t.filename, content_type="application/octet-stream"
        )
        body = await self._call("POST", "/apiv2/tasks/create/file/", data=form)
        self.submissions += 1
        data = body.get("data")
        ids = data.get("task_ids") if isinstance(data, dict) else None
        if not ids or not isinstance(ids[0], int):
            raise SandboxError(f"submit: no task id in {_short(body)}")
        return int(ids[0])

    async def _status(self, task_id: int) -> str:
        body = await self._call("GET", f"/apiv2/tasks/status/{task_id}/")
        status = body.get("data")
        if not isinstance(status, str):
            raise SandboxError(f"status of task {task_id}: {_short(body)}")
        return status

    async def _report(self, task_id: int) -> Report:
        body = await self._call("GET", f"/apiv2/tasks/get/report/{task_id}/")
        try:
            score = float(body.get("malscore") or 0.0)
        except (TypeError, ValueError):
            raise SandboxError(f"report of task {task_id}: bad malscore") from None
        sigs = body.get("signatures") or []
        names = tuple(str(s["name"]) for s in sigs if isinstance(s, dict) and s.get("name"))
        return Report(task_id, score, names)

    async def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        """One API call; an HTTP error, non-JSON body or ``"error": true`` is SandboxError."""
        try:
            async with self._http().request(method, self.url + path, **kw) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    raise SandboxError(f"{method} {path}: HTTP {resp.status} {text[:200]!r}")
        except aiohttp.ClientError as e:
            raise SandboxError(f"{method} {path}: {e!r}") from None
        try:
            body = json.loads(text)
        except ValueError:
            raise SandboxError(f"{method} {path}: not JSON: {text[:200]!r}") from None
        if not isinstance(body, dict):
            raise SandboxError(f"{method} {path}: unexpected reply {_short(body)}")
        if body.get("error"):
            why = body.get("error_value") or body.get("errors") or "error"
            raise SandboxError(f"{method} {path}: {why}")
        return body


def _upload_name(part: Part, sha256: str) -> str:
    # Sandboxes pick how to detonate a file by its extension, so the real name is kept; the
    # archive path and any directory part are not (they mean nothing inside the guest).
    name = (part.filename or "").replace("\\", "/").rsplit("/", 1)[-1].rsplit("!", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip()
    return name[:200] or f"{sha256[:16]}.bin"


def _short(value: Any) -> str:
    return repr(value)[:200]


class SandboxSettings(EngineSettings):
    """The ``sandbox`` engine's settings (``scanner.sandbox_*``, ``scanner.cache_entries``)."""

    url: str = Field(default="", validation_alias="sandbox_url")
    token: str = Field(default="", validation_alias="sandbox_token")
    types: tuple[str, ...] = Field(default=DEFAULT_TYPES, validation_alias="sandbox_types")
    timeout: float = Field(default=45.0, validation_alias="sandbox_timeout")
    poll_interval: float = Field(default=5.0, validation_alias="sandbox_poll_interval")
    cache_entries: int = 10_000


def build(settings: SandboxSettings) -> SandboxEngine:
    """The engine for the sandbox at ``settings.url`` (no URL is a ConfigError)."""
    # Its runner timeout is scanner.engine_timeouts["sandbox"], which ScannerSettings makes
    # longer than sandbox_timeout, so the engine's own "timeout" finding comes first.
    return SandboxEngine(
        settings.url,
        types=settings.types,
        timeout=settings.timeout,
        poll_interval=settings.poll_interval,
        token=settings.token,
        cache_entries=settings.cache_entries,
    )


ENGINE = EngineSpec(SandboxEngine, SandboxSettings, build)
"""The registry's entry for ``sandbox``."""
