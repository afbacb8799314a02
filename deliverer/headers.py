"""Trace and verdict headers, prepended on the way out; the stored object is never touched."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from email.utils import format_datetime

__all__ = [
    "MAX_LINE",
    "drop_forged_authres",
    "drop_forged_headers",
    "tag_subject",
    "trace_headers",
]

MAX_LINE = 998
"""RFC 5322 2.1.1: no line of a message may be longer than this (without its CRLF)."""
# Lines are folded before this width (RFC 5322's "SHOULD" limit of 78).
_FOLD_AT = 78
# At most this many characters of reasons in one header; the rest is counted, not listed.
_REASONS_BUDGET = 1500


def _clean(value: str) -> str:
    """Header-safe text: no CR/LF (a sender-controlled HELO must not inject headers)."""
    return "".join(c if c.isprintable() else "?" for c in value)[:200]


def trace_headers(
    *,
    message_id: str,
    action: str,
    reasons: Sequence[str],
    spam_score: float,
    helo: str,
    client_ip: str,
    hostname: str,
    recipients: Sequence[str],
    received_at: dt.datetime,
) -> bytes:
    """The Received and X-MXGate headers for one delivery, CRLF-terminated."""
    for_clause = f"\r\n\tfor <{_clean(recipients[0])}>" if len(recipients) == 1 else ""
    received = (
        f"Received: from {_clean(helo) or 'unknown'} ([{_clean(client_ip)}])\r\n"
        f"\tby {_clean(hostname)} (mxgate) with ESMTP id {message_id}{for_clause};\r\n"
        f"\t{format_datetime(received_at.astimezone(dt.UTC))}\r\n"
    )
    why = _capped(reasons)
    # action and id stay on the first line: scripts read them from there.
    verdict = _fold(
        f"X-MXGate: action={action}; id={message_id}; score={spam_score:.2f};",
        ["reasons=" + (why[0] if why else "none"), *why[1:]],
    )
    extra = ""
    if action == "tag":
        extra = f"X-Spam-Flag: YES\r\nX-Spam-Score: {spam_score:.2f}\r\n" + _fold(
            f"X-Spam-Status: Yes, score={spam_score:.2f}",
            ["tests=" + (why[0] if why else "none"), *why[1:]],
        )
    return (received + verdict + extra).encode("utf-8", "replace")


def _capped(reasons: Sequence[str]) -> list[str]:
    """The cleaned reasons as comma-separated items, as many as fit ``_REASONS_BUDGET``
    characters; the rest become one ``(+N more)`` item (the full list is in the event)."""
    items: list[str] = []
    used = 0
    cleaned = [c for r in reasons if (c := _clean(r).strip())]
    for i, r in enumerate(cleaned):
        if used + len(r) > _REASONS_BUDGET:
            items.append(f"(+{len(cleaned) - i} more)")
            break
        used += len(r) + 2
        items.append(r)
    return [f"{r}," for r in items[:-1]] + items[-1:]


def _fold(first: str, words: Sequence[str]) -> str:
    """``first`` and then ``words`` (space-separated) as one header field, folded (CRLF SP)
    before a line passes 78 characters, CRLF-terminated. Every word is shorter than
    ``MAX_LINE`` (reasons are capped at 200 characters), so no line can exceed it."""
    lines = [first]
    for w in words:
        if len(lines[-1]) + 1 + len(w) > _FOLD_AT:
            lines.append(" " + w)  # a space: unfolded, the value reads as on one line
        else:
            lines[-1] += " " + w
    return "\r\n".join(lines) + "\r\n"


def tag_subject(raw: bytes, tag: str) -> bytes:
    """``raw`` with ``tag`` put in front of its Subject (added when there is none).

    Works on the bytes of the header block only, so the body and every other header stay
    byte-for-byte as stored; a Subject that already starts with the tag is left alone.
    """
    tag = _clean(tag).strip()
    if not tag:
        return raw
    btag = tag.encode("utf-8")
    sep = b"\r\n" if b"\r\n" in raw[:4096] else b"\n"
    head, blank, body = raw.partition(sep + sep)
    lines = head.split(sep)
    for i, line in enumerate(lines):
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"subject":
            if value.strip().startswith(btag):
                return raw
            lines[i] = name + b": " + btag + b" " + value.lstrip(b" \t")
            return sep.join(lines) + blank + body
    return b"Subject: " + btag + sep + raw


_COMMENT = re.compile(rb"\([^()]*\)")
_WS = re.compile(rb"[ \t\r\n]+")


def _header_fields(raw: bytes) -> tuple[list[bytes], bytes]:
    """The header block of ``raw`` as fields (each with its folded lines and line ends, bytes
    as they are) and the rest (the blank line and the body): ``b"".join(fields) + rest == raw``.

    Works on bytes, so 8-bit and malformed headers are kept byte for byte; CRLF and bare LF
    lines are both understood.
    """
    starts: list[int] = []  # offsets, not bytes: a field of many folded lines stays linear
    pos, n = 0, len(raw)
    while pos < n:
        nl = raw.find(b"\n", pos)
        end = n if nl < 0 else nl + 1
        if raw[pos:end] in (b"\r\n", b"\n"):
            break  # the blank line: the body follows
        if raw[pos : pos + 1] not in (b" ", b"\t") or not starts:
            starts.append(pos)  # else a folded continuation of the previous field
        pos = end
    fields = [raw[a:b] for a, b in zip(starts, [*starts[1:], pos], strict=True)]
    return fields, raw[pos:]


def _authserv_id(value: bytes) -> bytes:
    """The authserv-id of an Authentication-Results value (unfolded, comments and an
    optional version dropped), lowercased: ``b"mx.example"`` for ``(c) MX.example 1; ...``."""
    v = _WS.sub(b" ", value)
    while True:  # nested comments come out innermost first
        stripped = _COMMENT.sub(b" ", v)
        if stripped == v:
            break
        v = stripped
    head = v.split(b";", 1)[0].strip().split(b" ", 1)[0]
    return head.lower()


def _ours(name: bytes, value: bytes, authserv_ids: frozenset[bytes]) -> bool:
    """Whether a field of this name and value claims to come from us."""
    n = name.strip().lower()
    if n == b"x-mxgate" or n.startswith(b"x-mxgate-") or n == b"x-spam" or n.startswith(b"x-spam-"):
        return True
    return n == b"authentication-results" and _authserv_id(value) in authserv_ids


def drop_forged_headers(raw: bytes, *authserv_ids: str) -> bytes:
    """``raw`` without the header fields that only we may write, whoever wrote them.

    Downstream filters and mail clients trust our verdict headers, so a sender's own
    ``X-MXGate*`` and ``X-Spam-*`` fields, and every ``Authentication-Results`` field claiming
    one of our ``authserv_ids`` (RFC 8601 5: our authserv-id, and our hostname), are removed on
    the way out (ours are added afterwards). Only the header block is touched, only those
    fields (with their folded lines); other hosts' Authentication-Results stay. ``raw``
    itself is returned when nothing was removed.
    """
    ours = frozenset(
        a.strip().lower().encode("utf-8", "surrogateescape") for a in authserv_ids if a.strip()
    )
    fields, rest = _header_fields(raw)
    kept = []
    for f in fields:
        name, colon, value = f.partition(b":")
        # A line without a colon is no field (kept as it is); a name cannot span lines.
        if colon and b"\n" not in name and _ours(name, value, ours):
            continue
        kept.append(f)
    if len(kept) == len(fields):
        return raw
    return b"".join(kept) + rest


def drop_forged_authres(raw: bytes, *authserv_ids: str) -> bytes:
    """Former name of :func:`drop_forged_headers` (which also drops X-MXGate / X-Spam-*)."""
    return drop_forged_headers(raw, *authserv_ids)
