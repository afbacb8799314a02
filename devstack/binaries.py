"""Where the Debian daemons the devstack runs are installed.

The daemons (clamd, spamd, rspamd, redis-server) live in ``/usr/sbin``, which a normal user's
``PATH`` on Debian leaves out: looking them up on ``PATH`` alone made `mxgate up` report an
installed spamd as missing and run without it.
"""

from __future__ import annotations

import os
import shutil

__all__ = ["find"]

_SBIN = os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))


def find(name: str) -> str | None:
    """The path of executable ``name`` on ``PATH`` or in the sbin directories, or None."""
    return shutil.which(name) or shutil.which(name, path=_SBIN)
