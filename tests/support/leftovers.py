"""Quietly collect what aiosmtpd leaves behind after a failed server-side STARTTLS."""

from __future__ import annotations

import gc
import warnings


def collect_unclosed_sockets() -> None:
    """aiosmtpd sometimes leaves the socket of a failed STARTTLS handshake (a refused
    certificate) unclosed. Collect it now, with its ResourceWarning silenced, so the warning
    (an error under filterwarnings=error) does not fail whichever later test the garbage
    collector happens to run in."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
