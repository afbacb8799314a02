"""The `mxgate` command as the user runs it: the console script beside this Python."""

from __future__ import annotations

import sys
from pathlib import Path

MXGATE = str(Path(sys.executable).with_name("mxgate"))
