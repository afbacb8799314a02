"""Text from the network made safe to store, log and encode.

aiosmtplib decodes replies with ``surrogateescape``, so a reply byte that is not UTF-8 (``\\xff``)
arrives as a lone surrogate. Such a str cannot be encoded as UTF-8: an Avro event or a rocksdict
value holding it raises, the Kafka transaction aborts and the batch (with its 250s unrecorded)
re-runs and delivers again. Everything here returns str that always encodes.
"""

from __future__ import annotations

REPLY_LIMIT = 2000  # characters; a multi-line reply must not outgrow a Kafka record
_TRUNCATED = " [truncated]"


def _escape(ch: str) -> str:
    """``\\xNN`` for each wire byte of ``ch`` (a surrogate-escaped byte is its original byte)."""
    o = ord(ch)
    if 0xDC80 <= o <= 0xDCFF:
        return f"\\x{o - 0xDC00:02x}"
    return "".join(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogatepass"))


def safe_reply(text: str) -> str:
    """An SMTP reply (or any diagnostic) as printable ASCII: other characters and undecodable
    bytes become ``\\xNN`` escapes; newlines between reply lines stay. Printable ASCII because
    the text also goes into DSN headers (Diagnostic-Code, RFC 3464) and logs. Idempotent."""
    if not (text.isascii() and text.replace("\n", " ").isprintable()):
        text = "".join(
            ch if ch == "\n" or (ch.isascii() and ch.isprintable()) else _escape(ch) for ch in text
        )
    if len(text) > REPLY_LIMIT:
        text = text[: REPLY_LIMIT - len(_TRUNCATED)] + _TRUNCATED
    return text


def safe_address(addr: str) -> str:
    """An address unchanged when it is printable Unicode (SMTPUTF8 addresses such as
    ``jörg@example.test`` stay as they are); otherwise its undecodable bytes and control
    characters become ``\\xNN`` escapes, so it encodes and cannot inject header lines."""
    if addr.isprintable():
        return addr
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in addr)
