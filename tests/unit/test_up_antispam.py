"""`mxgate up`'s private spamd and rspamd (devstack.antispam): which start, and what the
scanner is told, decided from PATH and the operator's settings. Daemons are faked here; the
real ones run in tests/scenarios/test_up_delivers_and_stops_cleanly.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devstack import antispam, binaries
from mxgate.settings import DEFAULT_ENGINES, Settings


class FakeSpamd:
    """Stands in for SpamdServer: "starts" at once on a made-up port."""

    def __init__(self, directory: Path | None) -> None:
        self.directory, self.port, self.stopped = directory, 7830, False

    def start(self) -> int:
        return self.port

    def stop(self) -> None:
        self.stopped = True


def _path_with(tmp_path: Path, *tools: str) -> str:
    """A PATH of one folder holding executables named ``tools`` (and nothing else)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        exe = bin_dir / tool
        exe.write_text("#!/bin/sh\nexit 1\n")
        exe.chmod(0o755)
    return str(bin_dir)


def _only_on_path(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """The tools in ``path`` and nowhere else (not the sbin folders either)."""
    monkeypatch.setenv("PATH", path)
    monkeypatch.setattr(binaries, "_SBIN", path)


def test_nothing_installed_starts_nothing_and_says_so_once_per_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _only_on_path(monkeypatch, _path_with(tmp_path))
    said: list[str] = []
    assert antispam.begin(tmp_path / "var", Settings(), said.append) is None
    assert said == [
        "spamd not installed: running without the spamassassin engine",
        "rspamd and redis-server not installed: running without the rspamd engine",
    ]


def test_a_missing_rspamd_leaves_its_engine_out_and_keeps_spamassassin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _only_on_path(monkeypatch, _path_with(tmp_path, "spamd", "redis-server"))
    monkeypatch.setattr(antispam, "SpamdServer", FakeSpamd)
    said: list[str] = []
    started = antispam.begin(tmp_path / "var", Settings(), said.append)
    assert started is not None
    assert said == ["rspamd not installed: running without the rspamd engine"]
    env, secret = started.wait(said.append)
    assert json.loads(env["MXGATE_SCANNER__ENGINES"]) == [*DEFAULT_ENGINES, "spamassassin"]
    assert env["MXGATE_SCANNER__SPAM__SPAMD_PORT"] == "7830"
    assert not any("RSPAMD" in k for k in env) and secret == {}
    assert said[1:] == ["antispam: engines spamassassin added"]
    spamd = started.spamd
    assert isinstance(spamd, FakeSpamd)
    started.stop()
    assert spamd.stopped


def test_the_operators_engines_or_addresses_are_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _only_on_path(monkeypatch, _path_with(tmp_path))  # nothing installed: would be said
    said: list[str] = []
    monkeypatch.setenv("MXGATE_SCANNER__ENGINES", '["clamav"]')
    assert antispam.begin(tmp_path / "var", Settings(), said.append) is None
    monkeypatch.delenv("MXGATE_SCANNER__ENGINES")
    monkeypatch.setenv("MXGATE_SCANNER__SPAM__SPAMD_PORT", "783")
    monkeypatch.setenv("MXGATE_SCANNER__SPAM__RSPAMD_URL", "http://127.0.0.1:11333")
    assert antispam.begin(tmp_path / "var", Settings(), said.append) is None
    assert said == []


def test_daemons_in_sbin_are_found_when_path_leaves_it_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A normal user's PATH on Debian has no /usr/sbin, where spamd and clamd live: `up` once
    said "spamd not installed" there and ran without the spamassassin engine."""
    from devstack.binaries import find

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    for daemon in ("spamd", "clamd", "rspamd", "redis-server"):
        assert find(daemon) is not None, daemon
