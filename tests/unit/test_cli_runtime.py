"""A second shell finds what `mxgate up` chose; with nothing to find, one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.cli import MXGATE

from devstack import runtime


def test_live_record_is_loaded_and_stale_one_ignored(tmp_path: Path) -> None:
    path = tmp_path / "runtime.json"
    runtime.write(path, {"MXGATE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1", "HOME": "/x"})
    assert runtime.load(path) == {"MXGATE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(f'{{"pid": {dead.pid}, "env": {{"MXGATE_X": "1"}}}}')
    assert runtime.load(path) == {}
    runtime.clear(path, os.getpid())  # not ours any more: kept
    assert path.exists()


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MXGATE_")}


def test_no_broker_is_one_line_naming_what_to_set(tmp_path: Path) -> None:
    r = subprocess.run(
        [MXGATE, "trace", "no-such-id"],
        cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "MXGATE_KAFKA__BOOTSTRAP_SERVERS" in r.stderr.strip().splitlines()[-1]


def test_second_shell_takes_up_s_choices(tmp_path: Path) -> None:
    # A record of this (live) process stands in for a running `mxgate up`.
    runtime.write(tmp_path / "var" / "runtime.json", {"MXGATE_KAFKA__TOPIC_PREFIX": "seen."})
    r = subprocess.run(
        [MXGATE, "topics", "list", "--json"],
        cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert '"seen.mxgate.' in r.stdout


def test_version() -> None:
    r = subprocess.run([MXGATE, "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("mxgate ")
