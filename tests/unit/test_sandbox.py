"""The sandbox engine against a local server that speaks CAPE's REST API (tests/support).

Each verdict goes through the runner (an engine that raises becomes an ``error`` finding there)
and :func:`scanner.policy.decide`, so what is asserted is what the gateway would do.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator

import pytest
from support import samples
from support.sandbox_server import MALICIOUS_SIGNATURES, SandboxServer, sandbox_server

from mxgate.errors import ConfigError
from mxgate.settings import ScannerSettings
from mxgate.tenants import Policy
from scanner.engines.common import Engine, Finding
from scanner.engines.registry import build_engines
from scanner.engines.sandbox import SandboxEngine
from scanner.mime import parse
from scanner.policy import decide
from scanner.runner import run_engines

# A minimal PE header (libmagic: MS-DOS/PE executable); the tail makes each sample distinct.
MZ = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 200
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
# The runner's budget in these tests: far above the engine's own timeout, so a "timeout"
# finding below is the engine's own answer, not the runner giving up.
RUNNER_TIMEOUT = 60.0


def _exe(tag: str) -> bytes:
    return MZ + tag.encode()


_mail = samples.with_attachments


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    with sandbox_server() as s:
        yield s


def _engine(server: SandboxServer, **kw: object) -> SandboxEngine:
    opts: dict = {"timeout": 20.0, "poll_interval": 0.02} | kw
    return SandboxEngine(server.url, **opts)


async def _scan(engine: Engine, raw: bytes) -> Finding:
    (f,) = await run_engines([engine], parse(raw, message_id="m", tenant="t"), RUNNER_TIMEOUT)
    return f


async def test_malicious_report_quarantines(server: SandboxServer) -> None:
    bad = _exe("malicious")
    sha = server.verdict(bad, "malicious")
    engine = _engine(server)
    try:
        f = await _scan(engine, _mail(("invoice.exe", bad, "application/octet-stream")))
    finally:
        await engine.aclose()
    assert (f.engine, f.kind, f.outcome, f.score) == ("sandbox", "policy", "clean", 9.5)
    assert f.symbols == MALICIOUS_SIGNATURES
    assert server.submitted == [(sha, "invoice.exe")]
    d = decide([f], Policy())
    assert d.action == "quarantine"
    assert d.reasons == tuple(f"sandbox:sandbox:{s}" for s in MALICIOUS_SIGNATURES)
    # The threshold is the tenant's: a stricter one lets the same report through.
    assert decide([f], Policy(sandbox_malicious=9.8)).action == "deliver"


async def test_clean_report_delivers_and_is_cached_by_sha256(server: SandboxServer) -> None:
    engine = _engine(server)
    raw = _mail(("report.pdf", PDF, "application/pdf"))
    try:
        f = await _scan(engine, raw)
        assert (f.outcome, f.score, f.symbols) == ("clean", 0.5, ("antivm_generic_disk",))
        assert decide([f], Policy()).action == "deliver"
        # Another message with the same file (another name, inside a zip) is not resubmitted.
        zipped = _mail(("docs.zip", samples.zip_bytes({"a/b.pdf": PDF}), "application/zip"))
        again = await _scan(engine, zipped)
    finally:
        await engine.aclose()
    assert (again.outcome, again.score) == ("clean", 0.5)
    assert server.submitted_hashes() == [hashlib.sha256(PDF).hexdigest()]
    assert engine.cached(hashlib.sha256(PDF).hexdigest()) is not None


async def test_concurrent_messages_share_one_submission(server: SandboxServer) -> None:
    bad = _exe("shared")
    server.verdict(bad, "malicious")
    engine = _engine(server)
    msgs = [_mail((f"copy{i}.exe", bad, "application/octet-stream")) for i in range(5)]
    try:
        found = await asyncio.gather(*(_scan(engine, m) for m in msgs))
    finally:
        await engine.aclose()
    assert {f.score for f in found} == {9.5}
    assert len(server.submitted) == 1


@pytest.mark.parametrize(
    ("on_timeout", "action"), [("deliver", "deliver"), ("quarantine", "quarantine")]
)
async def test_slow_sandbox_times_out_and_policy_decides(
    server: SandboxServer, on_timeout: str, action: str
) -> None:
    slow = _exe("slow")
    server.verdict(slow, "never")
    engine = _engine(server, timeout=0.5)
    try:
        f = await _scan(engine, _mail(("setup.exe", slow, "application/octet-stream")))
    finally:
        await engine.aclose()
    assert (f.engine, f.kind, f.outcome) == ("sandbox", "policy", "timeout")
    assert f.error is not None and "no sandbox verdict" in f.error
    assert f.detail["2/setup.exe"].startswith("pending (task 1)")
    assert server.tasks[1].polls >= 1  # it was polled, not just given up on
    d = decide([f], Policy(on_sandbox_timeout=on_timeout))  # type: ignore[arg-type]
    assert d.action == action and d.reasons == ("sandbox-timeout:sandbox",)


async def test_timeout_keeps_the_task_and_does_not_resubmit(server: SandboxServer) -> None:
    slow = _exe("slow-then-known")
    server.verdict(slow, "never")
    engine = _engine(server, timeout=0.3)
    raw = _mail(("setup.exe", slow, "application/octet-stream"))
    try:
        assert (await _scan(engine, raw)).outcome == "timeout"
        # The analysis finishes later: the next message polls the same task.
        server.tasks[1].verdict = "malicious"
        server.tasks[1].polls = 0
        f = await _scan(engine, raw)
    finally:
        await engine.aclose()
    assert (f.outcome, f.score) == ("clean", 9.5)
    assert len(server.submitted) == 1


async def test_finished_part_is_recorded_while_another_times_out(
    server: SandboxServer,
) -> None:
    bad, slow = _exe("bad-one"), _exe("slow-one")
    server.verdict(bad, "malicious")
    server.verdict(slow, "never")
    engine = _engine(server, timeout=0.5)
    raw = _mail(
        ("a.exe", bad, "application/octet-stream"), ("b.exe", slow, "application/octet-stream")
    )
    try:
        f = await _scan(engine, raw)
    finally:
        await engine.aclose()
    assert f.outcome == "timeout"
    assert f.score == 9.5 and f.symbols == MALICIOUS_SIGNATURES
    assert f.detail["2/a.exe"].endswith("malscore 9.5")
    assert f.detail["3/b.exe"].startswith("pending")


@pytest.mark.parametrize(
    ("verdict", "error"), [("error", "HTTP 500"), ("failed", "failed_analysis")]
)
async def test_server_error_is_an_error_finding(
    server: SandboxServer, verdict: str, error: str
) -> None:
    broken = _exe(verdict)
    server.verdict(broken, verdict)  # type: ignore[arg-type]
    engine = _engine(server)
    try:
        f = await _scan(engine, _mail(("x.exe", broken, "application/octet-stream")))
    finally:
        await engine.aclose()
    assert (f.engine, f.outcome) == ("sandbox", "error")
    assert f.error is not None and error in f.error
    assert engine.cached(hashlib.sha256(broken).hexdigest()) is None
    # An unanswered sandbox is not a virus: nothing in the policy acts on it by default.
    assert decide([f], Policy()).action == "deliver"


async def test_unreachable_sandbox_is_an_error_finding() -> None:
    with sandbox_server() as s:
        url = s.url
    engine = SandboxEngine(url, timeout=5.0, poll_interval=0.02)  # nothing listens there now
    try:
        f = await _scan(engine, _mail(("x.exe", _exe("nobody"), "application/octet-stream")))
    finally:
        await engine.aclose()
    assert f.outcome == "error" and f.error is not None and "create/file" in f.error


async def test_types_not_listed_are_never_submitted(server: SandboxServer) -> None:
    engine = _engine(server, types=("pdf",))
    raw = _mail(
        ("setup.exe", _exe("not-listed"), "application/octet-stream"),
        ("notes.txt", b"just some text\n", "text/plain"),
        (
            "pics.zip",
            samples.zip_bytes({"a.jpg": b"\xff\xd8\xff\xe0" + b"\0" * 64}),
            "application/zip",
        ),
    )
    try:
        f = await _scan(engine, raw)
        plain = await _scan(engine, samples.clean_message())
    finally:
        await engine.aclose()
    assert f.outcome == "skipped" and plain.outcome == "skipped"
    assert server.submitted == [] and server.status_calls == 0
    assert decide([f, plain], Policy()).action == "deliver"


async def test_type_comes_from_content_not_name(server: SandboxServer) -> None:
    exe = _exe("disguised")
    engine = _engine(server, types=("executable",))
    try:
        f = await _scan(engine, _mail(("invoice.pdf", exe, "application/pdf")))
    finally:
        await engine.aclose()
    assert f.outcome == "clean"
    # Sent under its own name: the sandbox picks how to open it by the name, as the user would.
    assert server.submitted == [(hashlib.sha256(exe).hexdigest(), "invoice.pdf")]


async def test_token_is_sent() -> None:
    with sandbox_server(token="s3cret") as s:
        good = SandboxEngine(s.url, token="s3cret", timeout=20.0, poll_interval=0.02)
        bad = SandboxEngine(s.url, timeout=20.0, poll_interval=0.02)
        raw = _mail(("x.exe", _exe("auth"), "application/octet-stream"))
        try:
            ok, refused = await _scan(good, raw), await _scan(bad, raw)
        finally:
            await good.aclose()
            await bad.aclose()
    assert ok.outcome == "clean"
    assert refused.outcome == "error" and "401" in (refused.error or "")


def test_registry_builds_it_with_a_budget_above_its_timeout(server: SandboxServer) -> None:
    sc = ScannerSettings(engines=("sandbox",), sandbox_url=server.url, sandbox_timeout=120)
    (engine,) = build_engines(sc)
    assert isinstance(engine, SandboxEngine) and isinstance(engine, Engine)
    assert (engine.name, engine.kind, engine.timeout) == ("sandbox", "policy", 120)
    assert sc.engine_timeouts["sandbox"] > sc.sandbox_timeout
    assert ScannerSettings().engine_timeouts == {}  # nothing added when it is not enabled
    with pytest.raises(ValueError, match="sandbox_timeout"):
        ScannerSettings(engines=("sandbox",), engine_timeouts={"sandbox": 10.0})


def test_missing_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sandbox"):
        build_engines(ScannerSettings(engines=("sandbox",)))
