"""The ``mxgate`` command: one module per command group, above the roles (may import them)."""
