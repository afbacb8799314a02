"""Zip archives with traditional PKWARE encryption ("ZipCrypto"), written by hand.

Written here because no library at hand writes them: the stdlib's zipfile only *reads*
ZipCrypto, and pyzipper writes only WinZip AES. ZipCrypto is still what ``zip -e``, Windows'
"compressed folder" and 7-Zip's zip default produce, so it is what phishing mail ships. The
cipher is short (APPNOTE.TXT 6.1): three 32-bit keys stirred by the password through CRC-32
steps, a keystream byte from the third, a 12-byte header whose last byte is the CRC's top byte.
Deterministic: the header's "random" bytes come from the member name.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

__all__ = ["zipcrypto_zip"]


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


class _Keys:
    """The cipher's state: three keys, updated with each plaintext byte."""

    def __init__(self, password: bytes) -> None:
        self.k = [0x12345678, 0x23456789, 0x34567890]
        for b in password:
            self.update(b)

    def update(self, b: int) -> None:
        k0, k1, k2 = self.k
        k0 = (k0 >> 8) ^ _TABLE[(k0 ^ b) & 0xFF]
        k1 = ((k1 + (k0 & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        k2 = (k2 >> 8) ^ _TABLE[(k2 ^ (k1 >> 24)) & 0xFF]
        self.k = [k0, k1, k2]

    def encrypt(self, data: bytes) -> bytes:
        out = bytearray()
        for b in data:
            t = (self.k[2] | 2) & 0xFFFF
            out.append(b ^ (((t * (t ^ 1)) >> 8) & 0xFF))
            self.update(b)
        return bytes(out)


def zipcrypto_zip(members: dict[str, bytes], password: str, *, deflate: bool = True) -> bytes:
    """A zip of ``members``, each encrypted with ``password`` (UTF-8) by ZipCrypto."""
    out = bytearray()
    central = bytearray()
    method = 8 if deflate else 0
    for name, data in members.items():
        crc = zlib.crc32(data)
        if deflate:
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            body = c.compress(data) + c.flush()
        else:
            body = data
        header = hashlib.sha256(name.encode()).digest()[:11] + bytes([crc >> 24])
        encrypted = _Keys(password.encode("utf-8")).encrypt(header + body)
        raw_name = name.encode("utf-8")
        offset = len(out)
        # version 2.0, flag bit 0 (encrypted), method, DOS time/date of 1980-01-01.
        out += struct.pack(
            "<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0x1, method, 0, 0x21,
            crc, len(encrypted), len(data), len(raw_name), 0,
        )  # fmt: skip
        out += raw_name + encrypted
        central += struct.pack(
            "<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0x1, method, 0, 0x21,
            crc, len(encrypted), len(data), len(raw_name), 0, 0, 0, 0, 0, offset,
        )  # fmt: skip
        central += raw_name
    count = len(members)
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, len(central), len(out), 0)
    return bytes(out + central + eocd)
