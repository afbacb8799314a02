"""A small sandbox service speaking CAPE's REST API (v2), with verdicts scripted per SHA-256.

A commercial or self-hosted sandbox cannot run here, so the sandbox engine is tested against this
real HTTP server (aiohttp.web on 127.0.0.1, on its own thread and event loop) that answers the
same requests with the same JSON shapes:

- ``POST /apiv2/tasks/create/file/`` (multipart ``file``) -> ``{"error": false, "data":
  {"task_ids": [N]}}``;
- ``GET /apiv2/tasks/status/N/`` -> ``{"error": false, "data": "pending" | "running" |
  "completed" | "reported"}``, advancing one step per poll;
- ``GET /apiv2/tasks/get/report/N/`` -> a report with ``malscore`` and ``signatures``, or
  ``{"error": true, "error_value": ...}`` while the task is not reported.

What happens to a file is scripted by its SHA-256 (:attr:`SandboxServer.script`; unscripted files
are ``clean``): ``malicious`` (malscore 9.5, two signatures), ``clean`` (malscore 0.5),
``never`` (stays ``running`` for ever), ``error`` (the status call answers HTTP 500),
``failed`` (status ``failed_analysis``).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

Verdict = Literal["malicious", "clean", "never", "error", "failed"]
STEPS = ("pending", "running", "completed", "reported")
MALICIOUS_SIGNATURES = ("injection_runpe", "ransomware_files")


@dataclass
class _Task:
    id: int
    sha256: str
    filename: str
    verdict: Verdict
    polls: int = 0


class SandboxServer:
    """A scripted sandbox service over real HTTP; start/stop it or use :func:`sandbox_server`."""

    def __init__(self, token: str = "") -> None:
        self.script: dict[str, Verdict] = {}
        self.token = token
        self.tasks: dict[int, _Task] = {}
        self.submitted: list[tuple[str, str]] = []
        """(sha256, filename) of every upload, in order."""
        self.status_calls = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self.port = 0

    @property
    def url(self) -> str:
        """The base URL to configure the engine with."""
        return f"http://127.0.0.1:{self.port}"

    def verdict(self, data: bytes, verdict: Verdict) -> str:
        """Script what the sandbox says about ``data``; returns its SHA-256."""
        sha = hashlib.sha256(data).hexdigest()
        self.script[sha] = verdict
        return sha

    def submitted_hashes(self) -> list[str]:
        """SHA-256 of every uploaded file, in order."""
        with self._lock:
            return [s for s, _ in self.submitted]

    # -- HTTP handlers ----------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        return not self.token or request.headers.get("Authorization") == f"Token {self.token}"

    async def _create(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"detail": "Invalid token."}, status=401)
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            return web.json_response({"error": True, "error_value": "No file"}, status=400)
        data = upload.file.read()
        sha = hashlib.sha256(data).hexdigest()
        with self._lock:
            task = _Task(len(self.tasks) + 1, sha, upload.filename, self.script.get(sha, "clean"))
            self.tasks[task.id] = task
            self.submitted.append((sha, upload.filename))
        return web.json_response(
            {"error": False, "data": {"task_ids": [task.id]}, "errors": [], "url": []}
        )

    async def _status(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"detail": "Invalid token."}, status=401)
        task = self.tasks.get(int(request.match_info["task"]))
        if task is None:
            return web.json_response({"error": True, "error_value": "Task does not exist"})
        with self._lock:
            self.status_calls += 1
            task.polls += 1
        if task.verdict == "error":
            return web.Response(status=500, text="Internal Server Error")
        if task.verdict == "failed":
            return web.json_response({"error": False, "data": "failed_analysis"})
        if task.verdict == "never":
            return web.json_response({"error": False, "data": "running"})
        return web.json_response({"error": False, "data": self._step(task)})

    @staticmethod
    def _step(task: _Task) -> str:
        return STEPS[min(task.polls - 1, len(STEPS) - 1)]

    async def _report(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"detail": "Invalid token."}, status=401)
        task = self.tasks.get(int(request.match_info["task"]))
        if task is None:
            return web.json_response({"error": True, "error_value": "Task does not exist"})
        if task.verdict not in ("malicious", "clean") or self._step(task) != "reported":
            return web.json_response({"error": True, "error_value": "Task is still being analyzed"})
        malicious = task.verdict == "malicious"
        sigs = [
            {"name": n, "description": f"{n} observed", "severity": 3}
            for n in (MALICIOUS_SIGNATURES if malicious else ("antivm_generic_disk",))
        ]
        return web.json_response(
            {
                "info": {"id": task.id, "version": "2.4-CAPE"},
                "target": {"file": {"name": task.filename, "sha256": task.sha256}},
                "malscore": 9.5 if malicious else 0.5,
                "malstatus": "Malicious" if malicious else "Clean",
                "signatures": sigs,
            }
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> SandboxServer:
        """Serve on 127.0.0.1 on a free port; returns when it accepts connections."""
        self._thread = threading.Thread(target=self._serve, name="sandbox-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or not self.port:
            raise RuntimeError("sandbox server did not start")
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application()
        app.router.add_post("/apiv2/tasks/create/file/", self._create)
        app.router.add_get("/apiv2/tasks/status/{task:\\d+}/", self._status)
        app.router.add_get("/apiv2/tasks/get/report/{task:\\d+}/", self._report)
        runner = web.AppRunner(app, access_log=None)
        self._runner = runner
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._thread = None


@contextmanager
def sandbox_server(token: str = "") -> Iterator[SandboxServer]:
    """A started :class:`SandboxServer`, stopped on exit."""
    server = SandboxServer(token).start()
    try:
        yield server
    finally:
        server.stop()
