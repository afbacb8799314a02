"""Authentication-Results (RFC 8601) from a MessageScanned record, and ARC sealing (RFC 8617).

Pure functions for the deliverer: :func:`authentication_results` turns the auth engines'
verdicts (their symbols carry ``method=result`` followed by ``ptype.property=value`` tokens,
see scanner/engines/spf.py, dkim.py, dmarc.py, arc.py) into one header;
:func:`arc_seal` adds an ARC set with dkimpy, given the gateway's key. Neither touches the
stored object: both return header bytes to prepend on the way out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import dkim

__all__ = ["AUTH_METHODS", "arc_seal", "authentication_results"]

AUTH_METHODS = ("spf", "dkim", "dmarc", "arc")
"""Engines whose verdicts become Authentication-Results resinfo."""
_METHODS = AUTH_METHODS
_RESULT = re.compile(r"^(spf|dkim|dmarc|arc)=([a-z]+)$")
_PROP = re.compile(r"^(smtp|header|policy)\.([a-z-]+)=(.+)$")
# Values end up in a header: anything outside this set is dropped (no CR/LF, no ';' that
# would start a new resinfo, no quotes or comments).
_SAFE = re.compile(r"[^A-Za-z0-9.@_+=/-]")


def _clean(value: str, limit: int = 200) -> str:
    return _SAFE.sub("", value)[:limit]


def authentication_results(authserv_id: str, verdicts: Sequence[Mapping[str, Any]]) -> bytes:
    """One ``Authentication-Results:`` header line (CRLF-terminated) for the auth verdicts.

    Engines that failed (error/timeout) without a method result give ``<method>=temperror``;
    when no auth engine ran the header says ``none`` (RFC 8601 2.2).
    """
    resinfo: list[str] = []
    for v in verdicts:
        engine = str(v.get("engine", ""))
        if engine not in _METHODS:
            continue
        current: list[str] | None = None
        found = False
        for sym in v.get("symbols") or ():
            sym = str(sym)
            m = _RESULT.match(sym)
            if m:
                if current:
                    resinfo.append(" ".join(current))
                current = [f"{m.group(1)}={m.group(2)}"]
                found = True
                continue
            p = _PROP.match(sym)
            if p and current is not None:
                current.append(f"{p.group(1)}.{p.group(2)}={_clean(p.group(3))}")
        if current:
            resinfo.append(" ".join(current))
        if not found and v.get("outcome") in ("error", "timeout"):
            resinfo.append(f"{engine}=temperror")
    body = ";\r\n\t".join(resinfo) if resinfo else "none"
    return f"Authentication-Results: {_clean(authserv_id)};\r\n\t{body}\r\n".encode("ascii")


def arc_seal(
    message: bytes,
    authres: bytes,
    *,
    selector: str,
    domain: str,
    private_key: bytes,
    authserv_id: str,
) -> bytes:
    """The ARC set (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results) to prepend.

    ``message`` is the message as it will leave (with ``authres`` on top is how it is sealed);
    returns the three header lines, CRLF-terminated, or b"" when the message cannot be sealed
    (e.g. the chain already has 50 sets or is malformed): a seal is never worth losing mail.
    """
    try:
        headers = dkim.arc_sign(
            authres + message,
            selector.encode(),
            domain.encode(),
            private_key,
            authserv_id.encode(),
        )
    except Exception:
        return b""
    return b"".join(headers)
