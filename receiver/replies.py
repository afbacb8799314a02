"""Every SMTP reply with an RFC 3463 enhanced status code (RFC 2034 ENHANCEDSTATUSCODES).

aiosmtpd's built-in replies ("250 OK", "501 Syntax: MAIL FROM: <address>", ...) carry no
enhanced code. Rather than copy every aiosmtpd command method to change its strings,
``enhance`` rewrites a reply on its way out: a table of aiosmtpd's own texts first, then a
default per basic code. Replies that already carry a code pass through unchanged.

The replies of the receiver's own checks (:mod:`receiver.checks`) are here too, so each text
is written once and the tests pin one place.
"""

from __future__ import annotations

import re

__all__ = [
    "BUSY",
    "CALLOUT_BROKEN",
    "CALLOUT_UNREACHABLE",
    "OTHER_TENANT",
    "RECEIVER_FULL",
    "RELAY_DENIED",
    "TOO_MANY_CONNECTIONS",
    "TOO_MANY_RECIPIENTS",
    "UNKNOWN_USER",
    "UNVERIFIED",
    "connection_rate_exceeded",
    "data_too_slow",
    "dnsbl_blocked",
    "enhance",
    "greylisted",
    "has_enhanced_code",
    "message_rate_exceeded",
    "too_many_bodies_from",
    "too_many_connections_from",
]
# -- the replies of the receiver's checks ----------------------------------------------------

TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
RELAY_DENIED = "550 5.7.1 Relaying denied: we do not accept mail for that domain"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
# The sender retries this recipient in its own transaction (RFC 5321 4.5.3.1.10).
OTHER_TENANT = "452 4.5.3 Recipient of another customer: send it in a separate transaction"
UNKNOWN_USER = "550 5.1.1 Recipient address rejected: user unknown"
# A recipient callout that got no definite answer: never accepted (it could bounce later),
# never refused for good (the user may exist). RFC 3463: 4.4.1 no answer from host, 4.4.2
# bad connection, 4.4.3 directory server failure (the tenant's server, or DNS for its MX,
# answered but could not say).
UNVERIFIED = "451 4.4.3 Recipient address could not be verified now, try again later"
CALLOUT_UNREACHABLE = (
    "451 4.4.1 Recipient address could not be verified: no answer from the recipient's"
    " mail server, try again later"
)
CALLOUT_BROKEN = (
    "451 4.4.2 Recipient address could not be verified: the connection to the recipient's"
    " mail server broke or timed out, try again later"
)
# Every body slot is taken (backpressure: a slow store or Kafka defers, never queues).
BUSY = "451 4.3.2 System busy, try again later"
# The bytes of all bodies in flight reached the receiver's budget (RFC 3463 4.3.1: system full).
RECEIVER_FULL = "451 4.3.1 Insufficient system resources (mail in progress), try again later"


def too_many_bodies_from(ip: str) -> str:
    """451 at the body: ``ip`` already has its share of bodies in flight."""
    return f"451 4.7.1 Too many messages in progress from {ip}, try again later"


def data_too_slow(rate: int) -> str:
    """451 mid-body, then close: the client sends slower than ``rate`` bytes/s."""
    return f"451 4.4.2 Data arriving slower than {rate} bytes/s, closing connection"


def too_many_connections_from(ip: str) -> str:
    """421: ``ip`` holds its share of concurrent connections."""
    return f"421 4.7.0 Too many connections from {ip}, try again later"


def connection_rate_exceeded(ip: str) -> str:
    """421: ``ip`` connects too often."""
    return f"421 4.7.0 Connection rate limit exceeded for {ip}, try again later"


def dnsbl_blocked(ip: str, zones: tuple[str, ...]) -> str:
    """554 at connect: ``ip`` is listed in ``zones``."""
    return f"554 5.7.1 Service unavailable; client [{ip}] blocked using {', '.join(zones)}"


def greylisted(wait: float) -> str:
    """A new or too early triplet (RFC 6647): retry after ``wait`` seconds."""
    return f"451 4.7.1 Greylisted, please try again in {max(1, round(wait))} seconds"


def message_rate_exceeded(ip: str) -> str:
    """451 at MAIL: too much mail from ``ip``."""
    return f"451 4.7.1 Too much mail from {ip}, slow down and try again later"


_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(\s|$)")

# Prefixes of aiosmtpd's texts (after "NNN ") and the enhanced code each deserves.
_BY_TEXT: tuple[tuple[int, str, str], ...] = (
    (500, "Error: bad syntax", "5.5.2"),
    (500, "Command line too long", "5.5.6"),
    (500, "Line too long", "5.5.6"),
    (500, "Error: command", "5.5.1"),
    (500, "Error: strict ASCII mode", "5.6.7"),
    (501, "Error: BODY can only be", "5.5.4"),
    (501, "Error: SMTPUTF8", "5.5.4"),
    (501, "Syntax:", "5.5.4"),
    (502, "Could not VRFY", "5.1.3"),
    (502, "EXPN not implemented", "5.5.1"),
    (503, "Error: send", "5.5.1"),
    (503, "Error: need", "5.5.1"),
    (503, "Error: nested MAIL", "5.5.1"),
    (503, "Already authenticated", "5.5.1"),
    (530, "Must issue a STARTTLS", "5.7.0"),
    (552, "Error: message size exceeds", "5.3.4"),
    (552, "Error: Too much mail data", "5.3.4"),
    (554, "Command refused due to lack of security", "5.7.0"),
    (555, "MAIL FROM parameters", "5.5.4"),
    (555, "RCPT TO parameters", "5.5.4"),
    (454, "TLS not available", "4.7.0"),
    (252, "Cannot VRFY", "2.5.0"),
)

# When no text matches: the usual enhanced code for the basic code (RFC 3463 / RFC 5248).
_BY_CODE = {
    211: "2.0.0",
    214: "2.0.0",
    220: "2.0.0",
    221: "2.0.0",
    250: "2.0.0",
    251: "2.1.5",
    252: "2.5.0",
    421: "4.3.0",
    450: "4.2.0",
    451: "4.3.0",
    452: "4.3.1",
    454: "4.7.0",
    500: "5.5.2",
    501: "5.5.4",
    502: "5.5.1",
    503: "5.5.1",
    504: "5.5.4",
    521: "5.3.2",
    530: "5.7.0",
    550: "5.0.0",
    552: "5.3.4",
    553: "5.1.3",
    554: "5.0.0",
    555: "5.5.4",
}


def has_enhanced_code(reply: str) -> bool:
    """True when ``reply`` ("NNN x.y.z text") carries an enhanced code of its own class."""
    return bool(_ENHANCED.match(reply[4:])) and reply[4:5] == reply[:1]


def enhance(reply: str) -> str:
    """``reply`` with an enhanced status code after the basic one, where RFC 2034 wants one.

    Only complete 2xx/4xx/5xx replies get one: 220 greetings and the 250 lines of EHLO are
    sent by the server class directly, 3xx intermediate replies never carry one. A
    multi-line reply is enhanced line by line.
    """
    if "\r\n" in reply:
        return "\r\n".join(enhance(line) for line in reply.split("\r\n"))
    head, text = reply[:3], reply[4:]
    if not head.isdigit() or head[0] not in "245" or has_enhanced_code(reply):
        return reply
    code = int(head)
    sep = reply[3:4] or " "
    for c, prefix, enh in _BY_TEXT:
        if c == code and text.startswith(prefix):
            return f"{head}{sep}{enh} {text}"
    enh = _BY_CODE.get(code, f"{head[0]}.0.0")
    return f"{head}{sep}{enh} {text}".rstrip()
