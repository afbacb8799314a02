"""DKIM verification (RFC 6376, RSA and Ed25519 per RFC 8463) of every signature, with dkimpy.

dkimpy asks a synchronous ``dnsfunc`` for keys, so the keys are fetched first through the
scanner's shared async resolver (one TXT lookup per ``s=._domainkey.d=``), then dkimpy checks
each signature against that prefetched answer in a worker thread (body hashing and RSA are
CPU work that must not hold the event loop).

Each signature gets one RFC 8601 result: ``pass``, ``fail`` (signature or body hash does not
verify), ``neutral`` (a signature dkimpy cannot parse), ``permerror`` (no key, bad key, key too
short), ``temperror`` (DNS failure). :mod:`scanner.mailauth.arc` reuses the key prefetch and the
header helpers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass

import dkim

from mxgate.resolver import DnsTempError, Resolver

__all__ = [
    "RANK",
    "DkimResult",
    "best_result",
    "dkimpy_version",
    "dnsfunc_for",
    "header_values",
    "prefetch_keys",
    "signature_tags",
    "to_crlf",
    "verify_dkim",
]

RANK = {"pass": 0, "fail": 1, "temperror": 2, "permerror": 3, "neutral": 4, "none": 5}
"""Results from best to worst: the best one names a message's DKIM result."""
_MAX_SIGS = 10  # more signatures than this on one message are ignored (CPU bound per message)


@dataclass(frozen=True, slots=True)
class DkimResult:
    """One signature's result."""

    result: str
    domain: str
    selector: str
    algorithm: str = ""
    reason: str = ""


def signature_tags(value: bytes | str) -> dict[str, str]:
    """The tag=value pairs of a DKIM-Signature/ARC header value (whitespace removed)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    out: dict[str, str] = {}
    for item in value.split(";"):
        k, eq, v = item.partition("=")
        if eq:
            out[re.sub(r"\s+", "", k).lower()] = re.sub(r"\s+", "", v)
    return out


def to_crlf(raw: bytes) -> bytes:
    """``raw`` with CRLF line ends."""
    # Mail stored from SMTP has CRLF; files from a corpus often have bare LF. dkimpy accepts
    # both for parsing, and the canonical form uses CRLF either way.
    return raw if b"\r\n" in raw[:2048] else raw.replace(b"\n", b"\r\n")


def header_values(raw: bytes, name: bytes) -> list[bytes]:
    """Values of every header called ``name`` (lower case), in order, unfolded."""
    headers, _ = dkim.rfc822_parse(to_crlf(raw))
    return [v for k, v in headers if k.lower() == name]


async def prefetch_keys(
    resolver: Resolver, names: list[str]
) -> dict[str, bytes | DnsTempError | None]:
    """TXT of each key name: the record, None when there is none, or the DNS error."""

    async def one(n: str) -> bytes | DnsTempError | None:
        try:
            ans = await resolver.txt(n)
        except DnsTempError as e:
            return e
        # Several TXT records at a key name: take the one that looks like a key.
        keys = [r for r in ans.records if "p=" in r] or list(ans.records)
        return keys[0].encode() if keys else None

    uniq = list(dict.fromkeys(n.lower() for n in names))
    values = await asyncio.gather(*(one(n) for n in uniq))
    return dict(zip(uniq, values, strict=True))


def dnsfunc_for(
    keys: dict[str, bytes | DnsTempError | None],
) -> Callable[..., bytes | None]:
    """A dkimpy ``dnsfunc`` answering from prefetched ``keys``."""

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        n = (name.decode() if isinstance(name, bytes) else name).lower().rstrip(".")
        v = keys.get(n)
        return v if isinstance(v, bytes) else None

    return dnsfunc


def _key_name(tags: dict[str, str]) -> str | None:
    s, d = tags.get("s", ""), tags.get("d", "")
    if not s or not d:
        return None
    return f"{s}._domainkey.{d}".lower()


def _key_problem(record: bytes) -> str:
    """Why a key record is unusable (RFC 6376 3.6.1), or "" -- dkimpy only says "fail"."""
    p = signature_tags(record).get("p")
    if p is None:
        return "key record has no p="
    if not p:
        return "key revoked (empty p=)"
    try:
        base64.b64decode(p, validate=True)
    except (binascii.Error, ValueError):
        return "key is not base64"
    return ""


def _verify_all(
    raw: bytes,
    tags: list[dict[str, str]],
    keys: dict[str, bytes | DnsTempError | None],
    min_key_bits: int,
) -> list[DkimResult]:
    out: list[DkimResult] = []
    dnsfunc = dnsfunc_for(keys)
    for i, t in enumerate(tags):
        d, s, a = t.get("d", "").lower(), t.get("s", ""), t.get("a", "")
        name = _key_name(t)
        if name is None:
            out.append(DkimResult("neutral", d, s, a, "no d= or s="))
            continue
        key = keys.get(name)
        if isinstance(key, DnsTempError):
            out.append(DkimResult("temperror", d, s, a, str(key)))
            continue
        if key is None:
            out.append(DkimResult("permerror", d, s, a, "no key"))
            continue
        problem = _key_problem(key)
        if problem:
            out.append(DkimResult("permerror", d, s, a, problem))
            continue
        try:
            ok = dkim.DKIM(raw, minkey=min_key_bits).verify(idx=i, dnsfunc=dnsfunc)
        except dkim.KeyFormatError as e:
            out.append(DkimResult("permerror", d, s, a, f"key: {e}"[:200]))
            continue
        except dkim.DKIMException as e:
            # dkimpy raises for a body hash mismatch: that is a failed signature, not a
            # signature it could not process.
            verdict = "fail" if "body hash mismatch" in str(e) else "neutral"
            out.append(DkimResult(verdict, d, s, a, str(e)[:200]))
            continue
        except Exception as e:  # dkimpy on hostile input: a result, not a crash
            out.append(DkimResult("neutral", d, s, a, f"{type(e).__name__}: {e}"[:200]))
            continue
        out.append(DkimResult("pass" if ok else "fail", d, s, a, "" if ok else "bad signature"))
    return out


async def verify_dkim(resolver: Resolver, raw: bytes, min_key_bits: int = 1024) -> list[DkimResult]:
    """One result per DKIM-Signature (at most 10), in header order. Never raises."""
    raw = to_crlf(raw)
    try:
        values = header_values(raw, b"dkim-signature")[:_MAX_SIGS]
    except Exception:
        return []
    tags = [signature_tags(v) for v in values]
    names = [n for n in (_key_name(t) for t in tags) if n]
    keys = await prefetch_keys(resolver, names)
    return await asyncio.to_thread(_verify_all, raw, tags, keys, min_key_bits)


def best_result(results: list[DkimResult]) -> str:
    """The best result among ``results`` (``none`` when there are none)."""
    return min((r.result for r in results), key=RANK.__getitem__, default="none")


def dkimpy_version() -> str:
    """dkimpy's version, as the DKIM and ARC engines report it."""
    return f"dkimpy-{getattr(dkim, '__version__', 'unknown')}"
