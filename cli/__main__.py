"""``python -m mxgate`` is the ``mxgate`` command."""

from cli.main import main

main()
