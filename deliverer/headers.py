"""Trace and verdict headers, prepended on the way out; the stored object is never touched."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from email.utils import format_datetime


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
    why = ", ".join(_clean(r) for r in reasons) or "none"
    verdict = (
        f"X-MXGate: action={action}; id={message_id}; score={spam_score:.2f}; reasons={why}\r\n"
    )
    extra = ""
    if action == "tag":
        extra = (
            f"X-Spam-Flag: YES\r\nX-Spam-Score: {spam_score:.2f}\r\n"
            f"X-Spam-Status: Yes, score={spam_score:.2f} tests={why}\r\n"
        )
    return (received + verdict + extra).encode("utf-8", "replace")


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


def drop_forged_authres(raw: bytes, authserv_id: str) -> bytes:
    """``raw`` without Authentication-Results fields that claim to be ours (RFC 8601 5).

    A sender may write "Authentication-Results: <our id>; dmarc=pass" into its own message;
    downstream filters trust our authserv-id, so such fields are removed on the way out. Only
    the header block is touched, and only those fields (with their folded lines).
    """
    ours = authserv_id.strip().lower().encode()
    if not ours:
        return raw
    sep = b"\r\n" if b"\r\n" in raw[:4096] else b"\n"
    head, blank, body = raw.partition(sep + sep)
    if not blank:
        return raw
    out: list[bytes] = []
    dropping = False
    changed = False
    for line in head.split(sep):
        if line[:1] in (b" ", b"\t"):  # a folded continuation of the previous field
            if dropping:
                continue
            out.append(line)
            continue
        name, colon, value = line.partition(b":")
        dropping = (
            bool(colon)
            and name.strip().lower() == b"authentication-results"
            and (value.split(b";", 1)[0].strip().lower().split(b" ", 1)[0] == ours)
        )
        if dropping:
            changed = True
            continue
        out.append(line)
    return sep.join(out) + blank + body if changed else raw
