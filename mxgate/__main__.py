"""``python -m mxgate`` is the ``mxgate`` command."""

from mxgate.cli import main

main()
