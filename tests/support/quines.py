"""Archives whose unpacking never ends: true zip and gzip quines, and deep stand-ins.

:func:`gzip_quine` and :func:`zip_quine` are true quines after Russ Cox, "Zip Files All The Way
Down" (2010): ``gzip.decompress(gzip_quine()) == gzip_quine()``, and the one member ``r.zip`` of
:func:`zip_quine` decompresses to the whole archive again, CRC-32 fields and all. A parser that
unpacks what it unpacked never reaches a leaf; only a depth (or time) limit ends the walk, and a
parser that remembered what it had already opened would see the same bytes come back.

The DEFLATE stream is a program of two opcodes, each exactly ``unit`` bytes long so that a
literal of ``k * unit`` bytes can carry ``k`` opcodes as data:

- ``L(x)`` (literal): a stored block header, "the next ``x`` bytes are output as they are";
- ``R(x)`` (repeat): a fixed-Huffman block of LZ77 copies, "output the last ``x`` bytes again".

With a prefix ``P`` (the container's header) and a suffix ``S`` (its trailer) the program prints
``P``, then its own text, then ``S``: see :func:`_program`. The CRC-32 of the output sits inside
the output (in ``P`` or ``S``, and in their copies in the program); CRC-32 is affine over GF(2), so
the fixed point ``crc32(build(c)) == c`` is one 32x32 linear system (:func:`_crc_fixed_point`),
not a search over 2^32 values. Everything is fixed (names, times), so the bytes are the same on
every run.

:func:`zip_recursive` and :func:`gzip_recursive` are the older stand-ins, kept as cases of their
own: the payload wrapped ``levels`` times, each level a new archive holding the previous one, so
``levels`` = 1000 is as endless as a quine to a parser whose limit is 5, and unlike a quine it
can carry a payload at the bottom.
"""

from __future__ import annotations

import functools
import gzip
import io
import itertools
import struct
import zipfile
import zlib
from collections.abc import Callable

__all__ = ["gzip_quine", "gzip_recursive", "zip_quine", "zip_recursive"]

ZIP_QUINE_NAME = "r.zip"
"""The one member of :func:`zip_quine`: the archive itself."""

# --- DEFLATE tables (RFC 1951, 3.2.5) ------------------------------------------------------

# Length symbols 257..285: base length and extra bits.
_LEN_BASE = (3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99,
             115, 131, 163, 195, 227, 258)  # fmt: skip
_LEN_EXTRA = (0,) * 8 + (1,) * 4 + (2,) * 4 + (3,) * 4 + (4,) * 4 + (5,) * 4 + (0,)
# Distance symbols 0..29: base distance and extra bits.
_DIST_BASE = (1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025,
              1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577)  # fmt: skip
_DIST_EXTRA = (0, 0, *((i - 2) // 2 for i in range(2, 30)))


def _len_span(i: int) -> tuple[int, int]:
    """The lengths symbol ``257 + i`` covers (284 stops at 257: 258 is symbol 285's alone)."""
    hi = _LEN_BASE[i] + (1 << _LEN_EXTRA[i]) - 1
    return _LEN_BASE[i], min(hi, 257) if i == 27 else hi


def _len_code_bits(i: int) -> int:
    """Bits of the fixed Huffman code of length symbol ``257 + i`` (256..279: 7, 280..287: 8)."""
    return 7 if 257 + i <= 279 else 8


def _len_cost(i: int) -> int:
    return _len_code_bits(i) + _LEN_EXTRA[i]


def _length_classes() -> tuple[tuple[int, int, int], ...]:
    """(cost in bits, shortest, longest) of runs of length symbols that cost the same: every
    length in a run costs the same number of bits, so a choice of runs fixes the bit count and
    leaves the lengths free within an interval."""
    out: list[tuple[int, int, int]] = []
    for cost, group in itertools.groupby(range(len(_LEN_BASE)), key=_len_cost):
        syms = list(group)
        out.append((cost, _len_span(syms[0])[0], _len_span(syms[-1])[1]))
    return tuple(out)


_CLASSES = _length_classes()


class _Bits:
    """A DEFLATE bit writer: fields go in least significant bit first, Huffman codes most
    significant bit first (RFC 1951, 3.1.1)."""

    def __init__(self) -> None:
        self.value = 0
        self.count = 0

    def put(self, value: int, nbits: int) -> None:
        self.value |= value << self.count
        self.count += nbits

    def code(self, code: int, nbits: int) -> None:
        self.put(int(format(code, f"0{nbits}b")[::-1], 2), nbits)


# --- the two opcodes -----------------------------------------------------------------------


_EMPTY = b"\x00" + struct.pack("<HH", 0, 0xFFFF)
"""An empty stored block: it outputs nothing, and pads what it precedes by 5 bytes."""


def _stored(data: bytes, final: bool) -> bytes:
    """``data`` as one stored block (header byte, LEN, NLEN, the bytes)."""
    return bytes([final]) + struct.pack("<HH", len(data), len(data) ^ 0xFFFF) + data


def _lit(x: int, unit: int) -> bytes:
    """``L(x)``: output the next ``x`` bytes of the stream as they are.

    A stored block header is 5 bytes once byte-aligned: BFINAL=0 and BTYPE=00 (3 zero bits)
    padded to the byte, then LEN and its complement NLEN. A wider unit puts empty stored
    blocks (which output nothing) in front. The first byte is always 0x00, which a repeat
    before it relies on (see :func:`_rep`).
    """
    return _EMPTY * (unit // 5 - 1) + b"\x00" + struct.pack("<HH", x, x ^ 0xFFFF)


def _split(n: int, unit: int) -> list[int] | None:
    """Lengths (each copied from ``n`` back) that sum to ``n`` and make a repeat block fill its
    ``unit`` bytes: ``None`` if none do."""
    dist = max(i for i, base in enumerate(_DIST_BASE) if base <= n)
    pair_extra = 5 + _DIST_EXTRA[dist]  # the distance code and its extra bits, per copy
    # The block is 3 header bits, the copies, and 7 bits of end-of-block code. It may end up to
    # 2 bits short of the unit (the next literal's 3 header bits then still end in its own first
    # byte) or up to 5 bits past it: the end-of-block code is all zero bits, and so is the first
    # byte of the literal that always follows, so they can share that byte.
    low, high = 8 * unit - 2, 8 * unit + 5
    # Only pair counts that can land in the window: each copy costs 7..13 bits plus distance.
    fewest = -(-(low - 10) // (13 + pair_extra))
    most = (high - 10) // (7 + pair_extra)
    for k in range(max(fewest, 1), most + 1):
        for combo in itertools.combinations_with_replacement(_CLASSES, k):
            bits = 3 + sum(c[0] + pair_extra for c in combo) + 7
            shortest, longest = sum(c[1] for c in combo), sum(c[2] for c in combo)
            if low <= bits <= high and shortest <= n <= longest:
                lengths, rest = [c[1] for c in combo], n - shortest
                for i, c in enumerate(combo):
                    more = min(rest, c[2] - c[1])
                    lengths[i] += more
                    rest -= more
                return lengths
    return None


@functools.cache
def _rep(n: int, unit: int) -> bytes | None:
    """``R(n)``: output the last ``n`` bytes again, as one fixed-Huffman block of ``unit``
    bytes (``None`` if ``n`` cannot be said in exactly that many)."""
    lengths = _split(n, unit)
    if lengths is None:
        return None
    dist = max(i for i, base in enumerate(_DIST_BASE) if base <= n)
    b = _Bits()
    b.put(0, 1)  # BFINAL: more blocks follow
    b.put(1, 2)  # BTYPE 01: fixed Huffman codes
    for length in lengths:
        # Each copy starts ``n`` back from where the output is now, so copies of ``n`` back
        # in pieces are the same as one copy of ``n``.
        sym = max(i for i in range(len(_LEN_BASE) - 1) if _LEN_BASE[i] <= length)
        if length == 258:
            sym = len(_LEN_BASE) - 1
        code = 257 + sym - 256 if 257 + sym <= 279 else 0xC0 + (257 + sym - 280)
        b.code(code, _len_code_bits(sym))
        b.put(length - _LEN_BASE[sym], _LEN_EXTRA[sym])
        b.code(dist, 5)
        b.put(n - _DIST_BASE[dist], _DIST_EXTRA[dist])
    b.code(0, 7)  # symbol 256: end of block
    # Bits past the unit are the tail of the all-zero end-of-block code: the literal after
    # this block starts with a zero byte that supplies them.
    assert b.value >> (8 * unit) == 0
    return b.value.to_bytes(unit, "little")


# --- the self-printing program -------------------------------------------------------------


def _program(head: bytes, tail: bytes, unit: int, pad: tuple[int, int]) -> bytes | None:
    """A DEFLATE stream that outputs ``head + itself + tail`` (``None`` if ``unit`` is too
    narrow, or the padding wrong, for its repeats).

    ``zhead`` is ``head`` as a stored block and ``ztail`` is ``tail`` as the final stored block,
    each after ``pad`` empty stored blocks: the padding changes no output, only the lengths of
    the repeats that copy them, which is how a length with no encoding in ``unit`` bytes is
    avoided. With ``u`` the unit, ``n = len(zhead) + u`` and ``m = len(ztail) + 2u``, the opcodes
    and what each prints (``[...]`` is a literal's data) are:

    ======================================  ==========================================
    executed                                output
    ======================================  ==========================================
    zhead                                   head
    L(n) [zhead L(n)]                       zhead L(n)
    R(n)                                    zhead L(n)
    L(u) [R(n)]                             R(n)
    L(u) [L(u)]                             L(u)
    L(4u) [R(n) L(u) L(u) L(4u)]            R(n) L(u) L(u) L(4u)
    R(4u)                                   R(n) L(u) L(u) L(4u)
    L(4u) [R(4u) L(4u) R(4u) L(4u)]         R(4u) L(4u) R(4u) L(4u)
    R(4u)                                   R(4u) L(4u) R(4u) L(4u)
    L(4u) [R(4u) L(0) L(0) L(m)]            R(4u) L(0) L(0) L(m)
    R(4u)                                   R(4u) L(0) L(0) L(m)
    L(0) L(0)                               (nothing: they keep the 4-unit rhythm)
    L(m) [R(m) L(0) ztail]                  R(m) L(0) ztail
    R(m)                                    R(m) L(0) ztail
    L(0) ztail                              tail
    ======================================  ==========================================

    Read down the left column and down the right one: between ``head`` and ``tail`` they are
    the same bytes. Every repeat is followed by a literal, as :func:`_rep` needs.
    """
    u = unit
    zhead = _EMPTY * pad[0] + _stored(head, final=False)
    ztail = _EMPTY * pad[1] + _stored(tail, final=True)
    n, m = len(zhead) + u, len(ztail) + 2 * u
    reps = {x: _rep(x, u) for x in (n, 4 * u, m)}
    if any(r is None for r in reps.values()):
        return None

    def lit(x: int) -> bytes:
        return _lit(x, u)

    def rep(x: int) -> bytes:
        r = reps[x]
        assert r is not None
        return r

    return b"".join(
        [
            zhead,
            lit(n), zhead, lit(n),
            rep(n),
            lit(u), rep(n),
            lit(u), lit(u),
            lit(4 * u), rep(n), lit(u), lit(u), lit(4 * u),
            rep(4 * u),
            lit(4 * u), rep(4 * u), lit(4 * u), rep(4 * u), lit(4 * u),
            rep(4 * u),
            lit(4 * u), rep(4 * u), lit(0), lit(0), lit(m),
            rep(4 * u),
            lit(0), lit(0),
            lit(m), rep(m), lit(0), ztail,
            rep(m),
            lit(0), ztail,
        ]
    )  # fmt: skip


def _narrowest_program(head: bytes, tail: bytes) -> bytes:
    """:func:`_program` in the narrowest unit (and least padding) whose repeats all fit.

    A 5-byte unit (a bare stored header, Cox's choice) holds repeats up to 64 bytes: enough
    for gzip, not for a zip's 73-byte trailer, whose repeat needs a 15-byte unit (10 bytes
    cannot say the 40-byte repeat of four opcodes).
    """
    for unit in (5, 10, 15, 20):
        for pad in itertools.product(range(4), repeat=2):
            program = _program(head, tail, unit, pad)
            if program is not None:
                return program
    raise ValueError("no unit fits these repeats")


# --- CRC-32 fixed point --------------------------------------------------------------------


def _crc_fixed_point(build: Callable[[int], bytes]) -> int | None:
    """A ``c`` with ``zlib.crc32(build(c)) == c``, or ``None`` if there is none.

    ``build`` places ``c`` (little-endian) at fixed offsets of a fixed-length output. For
    messages of one length, CRC-32 is affine over GF(2): ``crc(x ^ y) = crc(x) ^ crc(y) ^
    crc(0)``. So ``crc(build(c)) = base ^ sum of c_i * col_i``, where ``base = crc(build(0))``
    and ``col_i = crc(build(1 << i)) ^ base``; the fixed point solves
    ``sum of c_i * (col_i ^ (1 << i)) = base``, 32 equations in 32 bits, by Gaussian elimination.
    """
    base = zlib.crc32(build(0))
    cols = [zlib.crc32(build(1 << i)) ^ base ^ (1 << i) for i in range(32)]
    # Row j: bit i is bit j of column i; bit 32 is bit j of the right-hand side.
    rows = [
        sum(((cols[i] >> j) & 1) << i for i in range(32)) | (((base >> j) & 1) << 32)
        for j in range(32)
    ]
    pivots: list[tuple[int, int]] = []  # (variable, row)
    for var in range(32):
        at = next((r for r in range(len(rows)) if (rows[r] >> var) & 1), None)
        if at is None:
            continue  # a free variable: left 0, so the answer is the same on every run
        pivot = rows.pop(at)
        rows = [r ^ pivot if (r >> var) & 1 else r for r in rows]
        pivots = [(v, p ^ pivot if (p >> var) & 1 else p) for v, p in pivots]
        pivots.append((var, pivot))
    if any(r >> 32 for r in rows):  # a 0 = 1 row: no fixed point for this build
        return None
    crc = sum(((p >> 32) & 1) << v for v, p in pivots)
    return crc if zlib.crc32(build(crc)) == crc else None


def _quine(build: Callable[..., bytes]) -> bytes:
    """``build(crc, tweak)`` with the CRC fixed point of the first ``tweak`` that has one
    (a tweak changes a timestamp, so it changes the system without changing the shape)."""
    for tweak in range(64):
        crc = _crc_fixed_point(functools.partial(build, tweak=tweak))
        if crc is not None:
            return build(crc, tweak)
    raise ValueError("no CRC-32 fixed point")


# --- the containers ------------------------------------------------------------------------


@functools.cache
def gzip_quine() -> bytes:
    """A gzip file (one member, named ``r.gz``) that decompresses to itself."""

    def build(crc: int, tweak: int) -> bytes:
        # FLG.FNAME, MTIME, XFL 0, OS 255 (unknown), then the name.
        head = b"\x1f\x8b\x08\x08" + struct.pack("<I", tweak) + b"\x00\xff" + b"r.gz\x00"
        # The trailer: CRC-32 and length of the output, which is this whole file. The
        # program's length depends only on the lengths of head and tail.
        size = len(head) + len(_narrowest_program(head, bytes(8))) + 8
        tail = struct.pack("<II", crc, size)
        return head + _narrowest_program(head, tail) + tail

    return _quine(build)


@functools.cache
def zip_quine() -> bytes:
    """A zip archive whose one member, ``r.zip`` (deflated), is the archive itself."""
    name = ZIP_QUINE_NAME.encode()
    date = (2020 - 1980) << 9 | 1 << 5 | 1  # 2020-01-01, MS-DOS date

    def local(crc: int, time: int, csize: int, usize: int) -> bytes:
        head = struct.pack(
            "<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, time, date, crc, csize, usize, len(name), 0
        )
        return head + name

    def trailer(crc: int, time: int, csize: int, usize: int, cd_at: int) -> bytes:
        central = struct.pack(
            "<4sHHHHHHIIIHHHHHII",
            b"PK\x01\x02", 20, 20, 0, 8, time, date, crc, csize, usize, len(name),
            0, 0, 0, 0, 0, 0,  # extra, comment, disk, internal and external attributes, offset
        ) + name  # fmt: skip
        end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central), cd_at, 0)
        return central + end

    def build(crc: int, tweak: int) -> bytes:
        # The program's length depends only on the lengths of head and tail, so a first build
        # with zeros gives the sizes and offsets the real one writes.
        head0, tail0 = local(0, 0, 0, 0), trailer(0, 0, 0, 0, 0)
        csize = len(_narrowest_program(head0, tail0))
        usize = len(head0) + csize + len(tail0)
        time = tweak  # MS-DOS time in 2-second units: 00:00:00 unless the CRC needs a tweak
        head = local(crc, time, csize, usize)
        tail = trailer(crc, time, csize, usize, len(head) + csize)
        return head + _narrowest_program(head, tail) + tail

    return _quine(build)


# --- stand-ins -----------------------------------------------------------------------------


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
