"""Typed events as JSON-ready data, for the ops tools' ``--json`` output."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
from typing import Any

import schemas


def plain(v: Any) -> Any:
    """A typed event (or one of its values) as JSON-ready data: records as dicts, datetimes in
    ISO 8601, enums by value, bytes (a dead letter's original value) in base64."""
    if isinstance(v, schemas.Record):
        return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, dt.datetime):
        return v.isoformat()
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, tuple | list):
        return [plain(x) for x in v]
    return v
