"""The quines of the hostile corpus are true quines: each unpacks to its own bytes, CRCs checked."""

from __future__ import annotations

import gzip
import io
import zipfile
import zlib

import pytest
from support import quines


def test_the_gzip_quine_decompresses_to_itself() -> None:
    q = quines.gzip_quine()
    # The stdlib reader checks the trailer: CRC-32 and length of what it decompressed.
    assert gzip.decompress(q) == q
    # ... so a wrong CRC is caught: the check above is not vacuous.
    bad = bytearray(q)
    bad[-8] ^= 1
    with pytest.raises(gzip.BadGzipFile, match="CRC"):
        gzip.decompress(bytes(bad))


def test_the_zip_quine_holds_only_itself() -> None:
    q = quines.zip_quine()
    with zipfile.ZipFile(io.BytesIO(q)) as zf:
        assert zf.namelist() == [quines.ZIP_QUINE_NAME]
        info = zf.getinfo(quines.ZIP_QUINE_NAME)
        assert info.compress_type == zipfile.ZIP_DEFLATED
        assert info.file_size == len(q) and info.CRC == zlib.crc32(q)
        assert zf.testzip() is None  # every member read back with its CRC checked
        assert zf.read(quines.ZIP_QUINE_NAME) == q
    # And again one level down, for what it is worth: the same archive.
    with zipfile.ZipFile(io.BytesIO(q)) as zf, zipfile.ZipFile(io.BytesIO(zf.read("r.zip"))) as z2:
        assert z2.read(quines.ZIP_QUINE_NAME) == q


def test_a_zip_quine_with_a_wrong_crc_fails_its_check() -> None:
    q = quines.zip_quine()
    with zipfile.ZipFile(io.BytesIO(q)) as zf:
        info = zf.getinfo(quines.ZIP_QUINE_NAME)
    # The reader checks against the central directory's CRC-32 (offset 16 of its header,
    # which the end record, 22 bytes at the end, locates at its offset 16).
    at = int.from_bytes(q[-6:-2], "little") + 16
    assert int.from_bytes(q[at : at + 4], "little") == info.CRC
    bad = bytearray(q)
    bad[at] ^= 1
    with zipfile.ZipFile(io.BytesIO(bytes(bad))) as zf:
        assert zf.testzip() == quines.ZIP_QUINE_NAME


@pytest.mark.parametrize("name", ["gzip_quine", "zip_quine"])
def test_quines_are_deterministic(name: str) -> None:
    # Built afresh (past the cache): the same bytes every time, no clock, no randomness.
    cached = getattr(quines, name)
    assert cached.__wrapped__() == cached.__wrapped__() == cached()


@pytest.mark.parametrize(("n", "unit"), [(20, 5), (25, 5), (64, 5), (98, 10), (60, 15), (108, 15)])
def test_a_repeat_opcode_is_one_unit_and_repeats(n: int, unit: int) -> None:
    rep = quines._rep(n, unit)
    assert rep is not None and len(rep) == unit
    data = bytes(range(n))
    # A literal of n bytes, the repeat, then (as in the quine) a literal before the final block.
    stream = (
        quines._lit(n, unit)
        + data
        + rep
        + quines._lit(0, unit)
        + quines._stored(b"end", final=True)
    )
    assert zlib.decompress(stream, wbits=-15) == data + data + b"end"


def test_a_repeat_longer_than_a_5_byte_unit_can_say_is_refused() -> None:
    # Cox's limit: a 5-byte fixed-Huffman block copies at most 64 bytes from as far back.
    assert quines._rep(65, 5) is None and quines._rep(98, 5) is None


def test_the_crc_fixed_point_is_solved_not_searched() -> None:
    def build(crc: int, salt: int) -> bytes:
        # The CRC twice, as in a zip (local and central header), around fixed bytes.
        c = crc.to_bytes(4, "little")
        return b"head%d" % salt + c + b"middle" * 10 + c + b"tail"

    found = {}
    for salt in range(8):
        crc = quines._crc_fixed_point(lambda c, s=salt: build(c, s))
        if crc is not None:
            assert zlib.crc32(build(crc, salt)) == crc
            found[salt] = crc
    # Whether one build has a fixed point is chance (the linear system may be singular and
    # inconsistent); most do.
    assert found
