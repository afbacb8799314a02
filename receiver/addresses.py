"""Envelope address and HELO checks aiosmtpd does not make (RFC 5321 4.1.2 / 4.5.3.1, RFC 6531).

aiosmtpd parses ``<local@domain>`` with the email package's header parser, which is lenient:
it lets through control characters, bytes that were not UTF-8 (surrogate escapes), an
over-long local part and a domain that is not a host name. Each of those gets a precise
reply here, before the address can reach a log line, an event or a callout. The HELO/EHLO
argument, which goes into the MessageReceived event and every log line, gets the same care.
"""

from __future__ import annotations

import re

from receiver.checks import CheckResult, accept, refuse

__all__ = ["address_problem", "helo_check"]

MAX_LOCAL = 64
MAX_DOMAIN = 255
MAX_PATH = 256  # RFC 5321 4.5.3.1.3: reverse-path / forward-path incl. the angle brackets

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_ADDR_LITERAL = re.compile(r"^\[(IPv6:[0-9A-Fa-f:.]+|\d{1,3}(\.\d{1,3}){3})\]$")


def _domain_problem(domain: str) -> str | None:
    """Why ``domain`` is not a host name or address literal, or None."""
    if not domain:
        return "553 5.1.3 Address lacks a domain"
    if len(domain) > MAX_DOMAIN:
        return "553 5.1.3 Domain too long"
    if domain.startswith("["):
        return None if _ADDR_LITERAL.match(domain) else "553 5.1.3 Malformed address literal"
    try:
        # IDNA: a UTF-8 domain must be a valid internationalised name (RFC 5890).
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        return "553 5.1.3 Domain is not a valid internationalized name"
    labels = ascii_domain.rstrip(".").split(".")
    if not all(_LABEL.match(label) for label in labels):
        return "553 5.1.3 Domain is not a valid host name"
    return None


def address_problem(address: str, *, smtputf8: bool, null_ok: bool = False) -> str | None:
    """The SMTP reply refusing ``address``, or None when it is acceptable.

    ``smtputf8``: the transaction declared SMTPUTF8, so non-ASCII is allowed.
    ``null_ok``: the empty reverse-path ``<>`` is allowed (MAIL FROM only).
    """
    if address in ("", "<>"):
        return None if null_ok else "553 5.1.3 Empty address not allowed here"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in address):
        # aiosmtpd decodes command arguments with surrogateescape: these were not UTF-8.
        return "553 5.6.7 Address is not valid UTF-8"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in address):
        return "553 5.1.3 Control character in address"
    if not address.isascii() and not smtputf8:
        return "553 5.6.7 Non-ASCII address requires SMTPUTF8"
    if len(address.encode("utf-8")) + 2 > MAX_PATH:
        return "553 5.1.3 Address too long"
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return "553 5.1.3 Address must be local-part@domain"
    if len(local.encode("utf-8")) > MAX_LOCAL:
        return "553 5.1.3 Local part too long"
    return _domain_problem(domain)


def helo_check(verb: str, hostname: str | None) -> CheckResult:
    """The ``helo`` check of a HELO/EHLO argument: present, ASCII, no control characters.

    RFC 5321 4.1.1.1 asks for a domain or address literal; its exact syntax is not enforced
    (real MTAs send odd names), but bytes that are not printable ASCII are refused with
    501 5.5.2: SMTPUTF8 is only negotiated later, at MAIL (RFC 6531 3.7.1 wants A-labels).
    """
    if not hostname:
        return refuse("helo", "missing", f"501 5.5.2 Syntax: {verb} hostname")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in hostname):
        # _dispatch decodes arguments with surrogateescape: these bytes were not UTF-8.
        return refuse("helo", "not_utf8", f"501 5.5.2 {verb} argument is not valid UTF-8")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in hostname):
        return refuse("helo", "control", f"501 5.5.2 Control character in {verb} argument")
    if not hostname.isascii():
        reply = f"501 5.5.2 {verb} argument must be ASCII (A-labels for a UTF-8 domain)"
        return refuse("helo", "non_ascii", reply)
    return accept("helo")
