"""What a fresh clone holds: no symlinks (a committed `.cache` link once looped CI's fetch)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_no_symlink_is_tracked() -> None:
    staged = subprocess.run(
        ["git", "ls-files", "--stage"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert staged, "not a git checkout?"
    links = [line.split("\t", 1)[1] for line in staged if line.startswith("120000 ")]
    assert links == []
