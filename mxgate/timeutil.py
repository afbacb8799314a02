"""Time helpers: events carry aware UTC datetimes (Avro timestamp-micros)."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    """Now, as an aware UTC datetime."""
    return dt.datetime.now(dt.UTC)
