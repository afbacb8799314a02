"""Authentication-Results (RFC 8601) from a MessageScanned's verdicts, and ARC sealing (RFC 8617).

Pure functions for the deliverer: :func:`authentication_results` turns the auth engines'
verdicts into one header, from their fields only: ``outcome`` and the structured ``detail``
(``result``, or ``cv`` for ARC, and the RFC 8601 properties the engine fills under their own
names, e.g. ``header.d``, ``header.from``); :func:`arc_seal` adds an ARC set with dkimpy, given
the gateway's key. Neither touches the stored object: both return header bytes to prepend on the
way out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import dkim

from schemas import EngineVerdict

__all__ = ["AUTH_METHODS", "arc_seal", "authentication_results"]

AUTH_METHODS = ("spf", "dkim", "dmarc", "arc")
"""Engines whose verdicts become Authentication-Results resinfo."""
# The detail key holding each method's result, and the properties (RFC 8601 section 2.3,
# named as in the header) taken from the detail when present, in header order.
_RESULT_KEY = {"spf": "result", "dkim": "result", "dmarc": "result", "arc": "cv"}
_PROPERTIES: Mapping[str, tuple[str, ...]] = {
    "spf": ("smtp.mailfrom", "smtp.helo"),
    "dkim": ("header.d", "header.s", "header.a"),
    "dmarc": ("header.from", "policy.dmarc"),
    "arc": (),
}
_RESULT = re.compile(r"^[a-z]+$")
# Values end up in a header: anything outside this set is dropped (no CR/LF, no ';' that
# would start a new resinfo, no quotes or comments).
_SAFE = re.compile(r"[^A-Za-z0-9.@_+=/-]")


def _clean(value: str, limit: int = 200) -> str:
    return _SAFE.sub("", value)[:limit]


def _properties(v: EngineVerdict, mail_from: str) -> list[str]:
    props = {k: v.detail[k] for k in _PROPERTIES[v.engine] if v.detail.get(k)}
    if v.engine == "spf" and not props and v.detail.get("domain"):
        # The SPF engine names the checked domain without the identity: it is MAIL FROM's
        # domain, or the HELO name for a null sender (RFC 7208 section 2.4), as it checked.
        identity = "smtp.mailfrom" if "@" in mail_from else "smtp.helo"
        props[identity] = v.detail["domain"]
    return [f"{k}={c}" for k, value in props.items() if (c := _clean(value))]


def authentication_results(
    authserv_id: str, verdicts: Sequence[EngineVerdict], mail_from: str = ""
) -> bytes:
    """One ``Authentication-Results:`` header line (CRLF-terminated) for the auth verdicts.

    ``mail_from`` is the envelope sender the verdicts were found for. Engines that failed
    (error/timeout) without a result give ``<method>=temperror``; a verdict with neither a
    result nor a failure adds nothing, and when nothing is left the header says ``none``
    (RFC 8601 2.2).
    """
    resinfo: list[str] = []
    for v in verdicts:
        if v.engine not in AUTH_METHODS:
            continue
        result = v.detail.get(_RESULT_KEY[v.engine], "").strip().lower()
        if _RESULT.match(result):
            resinfo.append(" ".join([f"{v.engine}={result}", *_properties(v, mail_from)]))
        elif v.outcome in ("error", "timeout"):
            resinfo.append(f"{v.engine}=temperror")
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
