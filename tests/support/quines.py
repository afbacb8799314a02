"""Archives whose unpacking would never end: the shape of a zip or gzip quine.

A true quine (Russ Cox, "Zip Files All The Way Down", 2010) is a deflate stream whose
literal/copy opcodes print themselves, wrapped so that the archive decompresses to its own
bytes; unpacking it naively recurses forever. Building one also needs a CRC-32 fixed point,
found by search. What the parser must prove is the same for the true quine and for this
stand-in: each level of unpacking yields another archive, so only a depth (or ratio) limit ends
the walk. Here that is built directly: the payload wrapped ``levels`` times, each level a new
archive holding the previous one, so ``levels`` = 1000 is as endless as a quine to a parser
whose limit is 5.
"""

from __future__ import annotations

import gzip
import io
import zipfile

__all__ = ["gzip_recursive", "zip_recursive"]


def zip_recursive(payload: bytes, levels: int = 1000) -> bytes:
    """``payload`` as ``eicar.com`` inside ``levels`` nested zips (each named ``r.zip``)."""
    data, name = payload, "eicar.com"
    for _ in range(levels):
        buf = io.BytesIO()
        # Stored, not deflated: the size grows by a header per level, and a deflated zip of a
        # zip does not shrink.
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
        data, name = buf.getvalue(), "r.zip"
    return data


def gzip_recursive(payload: bytes, levels: int = 1000) -> bytes:
    """``payload`` gzipped ``levels`` times over."""
    data = payload
    for _ in range(levels):
        data = gzip.compress(data, compresslevel=1, mtime=0)
    return data
