"""``python -m mxgate`` is the ``mxgate`` command."""

from mxgate.cli import app

app()
