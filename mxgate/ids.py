"""Message IDs: 26 characters, Crockford base32, sortable by time (the ULID layout).

Written by hand (12 lines) rather than adding a dependency: 48 bits of milliseconds then
80 random bits, so IDs sort by acceptance time and never collide across receivers.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_message_id(now_ms: int | None = None) -> str:
    """A new, unique, time-sortable message ID."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    n = (ms & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    out = []
    for _ in range(26):
        out.append(_ALPHABET[n & 31])
        n >>= 5
    return "".join(reversed(out))
