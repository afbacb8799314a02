"""MTA-STS (RFC 8461): a domain's published promise that its MX hosts speak verified TLS.

An MX lookup alone lets anyone who can forge DNS or strip STARTTLS read the mail in transit.
A domain that publishes MTA-STS says, over an authenticated channel (HTTPS with a WebPKI
certificate), which MX host names are genuine and that they have valid certificates. This
module discovers, fetches, parses and caches those policies; :mod:`deliverer.routes` applies
them to MX routes and :mod:`deliverer.pool` reports the TLS failures of ``testing`` mode.

Discovery (RFC 8461 3.1-3.3):

1. ``TXT _mta-sts.<domain>`` gives ``v=STSv1; id=...`` through the deliverer's own resolver.
2. ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` is fetched with certificate and host
   name verification, no redirects, a short timeout and a 64 KiB limit. ``mta-sts.<domain>``
   is resolved with that same resolver (so the test DNS server decides where it is).
3. The policy is cached until its ``max_age``, in memory and optionally in rocksdict, and is
   fetched again when the TXT id changes. A cached policy outlives a vanished TXT record or a
   failed fetch: that is what makes stripping the record (a downgrade) useless to an attacker.

Anything that goes wrong before a policy is cached means "no policy": delivery goes on as
before, which is what the RFC asks (MTA-STS must never make mail undeliverable by itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from prometheus_client import Counter

from mxgate.resolver import DnsTempError, Resolver

__all__ = [
    "MAX_AGE_LIMIT",
    "POLICY_MAX_BYTES",
    "CachedPolicy",
    "FetchError",
    "MtaSts",
    "Policy",
    "PolicyError",
    "mx_matches",
    "parse_policy",
    "parse_txt",
    "report",
    "tls_finding",
]

log = structlog.get_logger("mxgate.deliverer")

POLICY_MAX_BYTES = 64 * 1024  # RFC 8461 3.3: senders may limit the size; 64 KiB is generous
MAX_AGE_LIMIT = 31_557_600  # RFC 8461 3.2: max_age is at most one year
WELL_KNOWN = "/.well-known/mta-sts.txt"

Mode = Literal["enforce", "testing", "none"]

# What went wrong, named as RFC 8460 (TLSRPT) result types where one exists, so a later TLS
# report can be built from the same counter; "mx-mismatch" is the MX host outside the policy.
Finding = Literal[
    "mx-mismatch",
    "starttls-not-supported",
    "certificate-host-mismatch",
    "certificate-expired",
    "certificate-not-trusted",
    "validation-failure",
]

FINDINGS = Counter(
    "mxgate_deliverer_mta_sts_findings",
    "MTA-STS violations by policy mode (enforce: refused, testing: would have been refused).",
    ["mode", "result"],
)


class PolicyError(ValueError):
    """A TXT record or policy file that does not follow RFC 8461's grammar."""


class FetchError(Exception):
    """The policy could not be fetched (DNS, TCP, TLS, HTTP status, type, size, timeout)."""


# -- grammar ----------------------------------------------------------------------------------

_WSP = "[ \t]"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_FIELD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
# RFC 8461 3.2 sts-policy-vchar: visible ASCII or UTF-8; no control characters.
_EXT_VALUE = re.compile(r"[^\x00-\x1f\x7f]+")
_TXT_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")  # RFC 8461 3.1: no ";", "=", spaces
_TXT_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_TXT_PREFIX = re.compile(rf"v=STSv1{_WSP}*;")
_POLICY_LINE = re.compile(rf"([^:]*):{_WSP}*(.*?){_WSP}*")


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed policy: ``mode``, the allowed ``mx`` patterns and ``max_age`` seconds."""

    mode: Mode
    mx: tuple[str, ...]
    max_age: int

    def matches(self, host: str) -> bool:
        """True when MX host ``host`` is one the policy allows."""
        return any(mx_matches(p, host) for p in self.mx)


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 4.1: case-insensitive equality, or ``*.`` standing for exactly one label."""
    pattern = pattern.lower()
    host = host.rstrip(".").lower()
    if pattern.startswith("*."):
        first, dot, rest = host.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:]
    return host == pattern


def _mx_pattern(value: str) -> str:
    domain = value[2:] if value.startswith("*.") else value
    if len(domain) > 253 or not _DOMAIN.fullmatch(domain.lower()):
        raise PolicyError(f"mx: {value!r} is not a host name or *.domain pattern")
    return value.lower()


def parse_policy(data: str | bytes) -> Policy:
    """Parse a policy file strictly (RFC 8461 3.2); raises :class:`PolicyError` and nothing
    else. Unknown fields are ignored (the RFC's extension point); a repeated ``version``,
    ``mode`` or ``max_age``, a missing one, or a line that is not ``name: value`` is an error,
    since guessing at a policy that decides where mail may go is worse than having none."""
    if isinstance(data, bytes):
        if len(data) > POLICY_MAX_BYTES:
            raise PolicyError(f"policy larger than {POLICY_MAX_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise PolicyError(f"policy is not UTF-8: {e}") from None
    else:
        text = data
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    while lines and lines[-1] == "":  # a final line break (or a few) is not a field
        lines.pop()
    seen: dict[str, str] = {}
    mx: list[str] = []
    for n, line in enumerate(lines, 1):
        m = _POLICY_LINE.fullmatch(line)
        if m is None or not _FIELD_NAME.fullmatch(m[1]) or not m[2]:
            raise PolicyError(f"line {n}: not 'name: value': {line[:80]!r}")
        name, value = m[1], m[2]
        if not _EXT_VALUE.fullmatch(value):
            raise PolicyError(f"line {n}: control character in the value of {name}")
        if name == "mx":
            mx.append(_mx_pattern(value))
        elif name in ("version", "mode", "max_age"):
            if name in seen:
                raise PolicyError(f"line {n}: {name} given twice")
            seen[name] = value
    if seen.get("version") != "STSv1":
        raise PolicyError(f"version must be STSv1, not {seen.get('version')!r}")
    mode = seen.get("mode")
    if mode not in ("enforce", "testing", "none"):
        raise PolicyError(f"mode must be enforce, testing or none, not {mode!r}")
    max_age = seen.get("max_age", "")
    if not re.fullmatch(r"[0-9]{1,10}", max_age):
        raise PolicyError(f"max_age must be 1 to 10 digits, not {max_age!r}")
    if mode != "none" and not mx:
        raise PolicyError(f"mode {mode} needs at least one mx pattern")
    # Above the RFC's one year is clamped rather than refused: refusing would drop the
    # domain's protection over a number that is merely too generous.
    return Policy(mode=cast(Mode, mode), mx=tuple(mx), max_age=min(int(max_age), MAX_AGE_LIMIT))


def parse_txt(record: str) -> str:
    """The policy id of a ``_mta-sts`` TXT record (RFC 8461 3.1); raises :class:`PolicyError`."""
    fields = re.split(rf"{_WSP}*;{_WSP}*", record)
    if fields[0] != "v=STSv1":
        raise PolicyError("TXT record does not start with v=STSv1")
    if len(fields) > 1 and fields[-1] == "":
        fields.pop()  # the optional final ';'
    ids: list[str] = []
    for f in fields[1:]:
        name, eq, value = f.partition("=")
        if not eq or not _FIELD_NAME.fullmatch(name) or not _TXT_EXT_VALUE.fullmatch(value):
            raise PolicyError(f"TXT field {f[:40]!r} is not name=value")
        if name == "id":
            if not _TXT_ID.fullmatch(value):
                raise PolicyError(f"TXT id {value[:40]!r} is not 1-32 letters and digits")
            ids.append(value)
    if len(ids) != 1:
        raise PolicyError(f"TXT record needs exactly one id, has {len(ids)}")
    return ids[0]


# -- findings -----------------------------------------------------------------------------


def tls_finding(cause: BaseException | None) -> Finding:
    """The RFC 8460 result type of a failed verified-TLS session (``cause`` is the error
    behind the failure; None means the server offered no STARTTLS)."""
    if cause is None:
        return "starttls-not-supported"
    if isinstance(cause, ssl.SSLCertVerificationError):
        # OpenSSL's X509_V_ERR_* codes: 62 host name mismatch, 10 expired.
        named: dict[int, Finding] = {62: "certificate-host-mismatch", 10: "certificate-expired"}
        return named.get(cause.verify_code, "certificate-not-trusted")
    return "validation-failure"


def report(finding: Finding, *, domain: str, mode: str, host: str = "", detail: str = "") -> None:
    """Count and log one policy violation. In ``testing`` mode this is the whole effect of the
    policy: the domain's owner learns (from our logs and metrics) what enforce would refuse."""
    FINDINGS.labels(mode=mode, result=finding).inc()
    event = "mta-sts refused" if mode == "enforce" else "mta-sts testing: enforce would refuse"
    log.warning(event, policy_domain=domain, mx=host, result=finding, detail=detail)


# -- discovery, fetch, cache --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CachedPolicy:
    """A fetched policy, the TXT id it was fetched under, and when it expires (epoch s)."""

    policy_id: str
    policy: Policy
    expires: float

    def to_json(self) -> bytes:
        """The rocksdict form."""
        p = self.policy
        return json.dumps(
            {"id": self.policy_id, "mode": p.mode, "mx": list(p.mx), "max_age": p.max_age,
             "expires": self.expires}
        ).encode()  # fmt: skip

    @classmethod
    def from_json(cls, raw: bytes) -> CachedPolicy:
        """Read the rocksdict form back; raises ValueError (or KeyError/TypeError) if damaged."""
        d = json.loads(raw)
        mx = tuple(str(x) for x in d["mx"])
        policy = Policy(mode=d["mode"], mx=mx, max_age=int(d["max_age"]))
        if policy.mode not in ("enforce", "testing", "none"):
            raise ValueError(f"bad mode {policy.mode!r}")
        return cls(policy_id=str(d["id"]), policy=policy, expires=float(d["expires"]))


class _DnsResolver(AbstractResolver):
    """aiohttp resolves ``mta-sts.<domain>`` through our resolver, not the system's,
    so the policy host is found by the same DNS that gave the MX records."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """A and AAAA addresses of ``host``; OSError when there are none (aiohttp's
        contract for a failed lookup)."""
        out: list[ResolveResult] = []
        kinds = [(False, socket.AF_INET), (True, socket.AF_INET6)]
        for ipv6, fam in kinds:
            if family not in (socket.AF_UNSPEC, fam):
                continue
            try:
                answer = await self.resolver.addresses(host, ipv6)
            except DnsTempError:
                continue
            out.extend(
                {"hostname": host, "host": address, "port": port, "family": fam,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}
                for address in answer.records
            )  # fmt: skip
        if not out:
            raise OSError(f"{host}: no address")
        return out

    async def close(self) -> None:
        """Nothing to release: the resolver belongs to the router."""


class MtaSts:
    """Finds the MTA-STS policy of a domain, with the cache RFC 8461 3.3 describes."""

    def __init__(
        self,
        resolver: Resolver,
        *,
        port: int = 443,
        ca_file: str | Path | None = None,
        timeout: float = 10.0,
        cache_path: Path | None = None,
        fetch_backoff: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``resolver`` is the router's; ``port`` and ``ca_file`` exist for tests (a policy
        server on loopback with a test CA); ``fetch_backoff`` is how long a failed fetch for
        one TXT id is not retried (a dead policy server must not cost every message the
        timeout); ``clock`` is wall time, because persisted expiries outlive the process."""
        self.resolver = resolver
        self.port = port
        self.ca_file = str(ca_file) if ca_file else None
        self.timeout = timeout
        self.fetch_backoff = fetch_backoff
        self.clock = clock
        self.fetches = 0  # HTTPS fetches attempted, for stats and tests
        self._memory: dict[str, CachedPolicy] = {}
        self._failed: dict[tuple[str, str], float] = {}
        self._inflight: dict[tuple[str, str], asyncio.Task[CachedPolicy | None]] = {}
        self._db = None
        if cache_path is not None:
            from rocksdict import Options, Rdict  # only when a persistent cache is asked for

            cache_path.mkdir(parents=True, exist_ok=True)
            opts = Options()
            opts.create_if_missing(True)
            try:
                self._db = Rdict(str(cache_path), opts)
            except Exception as e:
                # Another deliverer on this host holds the RocksDB lock: policies are then
                # cached in memory only, which costs refetches, never correctness.
                log.warning("mta-sts cache unavailable, memory only", path=str(cache_path),
                            error=str(e))  # fmt: skip

    def close(self) -> None:
        """Close the persistent cache."""
        if self._db is not None:
            self._db.close()
            self._db = None

    async def policy_for(self, domain: str) -> Policy | None:
        """The policy in force for ``domain`` now, or None (no MTA-STS: deliver as before)."""
        domain = domain.rstrip(".").lower()
        cached = self.cached(domain)
        txt_id = await self._txt_id(domain)
        if txt_id is None or (cached is not None and cached.policy_id == txt_id):
            # No (valid) TXT: a cached policy still holds until it expires (RFC 8461 10.2,
            # stripping the record must not switch protection off).
            return cached.policy if cached is not None else None
        key = (domain, txt_id)
        if self._failed.get(key, 0.0) > self.clock():
            return cached.policy if cached is not None else None
        task = self._inflight.get(key)
        if task is None:
            # One fetch per domain and id however many deliveries ask at the same time.
            task = asyncio.get_running_loop().create_task(self._refresh(domain, txt_id))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        fresh = await asyncio.shield(task)
        if fresh is not None:
            return fresh.policy
        return cached.policy if cached is not None else None

    def cached(self, domain: str) -> CachedPolicy | None:
        """The unexpired cached policy of ``domain`` (memory first, then rocksdict)."""
        entry = self._memory.get(domain)
        if entry is None and self._db is not None:
            raw = self._db.get(domain)
            if raw is not None:
                try:
                    entry = CachedPolicy.from_json(raw)
                except (ValueError, KeyError, TypeError):
                    log.warning("mta-sts cache entry unreadable, ignored", policy_domain=domain)
                    entry = None
                if entry is not None:
                    self._memory[domain] = entry
        if entry is not None and entry.expires <= self.clock():
            self._forget(domain)
            return None
        return entry

    def _forget(self, domain: str) -> None:
        self._memory.pop(domain, None)
        if self._db is not None:
            del self._db[domain]

    def _store(self, domain: str, entry: CachedPolicy) -> None:
        self._memory[domain] = entry
        if self._db is not None:
            self._db[domain] = entry.to_json()

    async def _txt_id(self, domain: str) -> str | None:
        """The id of the domain's single valid ``v=STSv1`` TXT record, else None."""
        try:
            answer = await self.resolver.txt(f"_mta-sts.{domain}")
        except DnsTempError as e:
            log.info("mta-sts TXT lookup failed", policy_domain=domain, error=str(e))
            return None
        # RFC 8461 3.1: strings of one record are concatenated (the resolver does that);
        # records not starting with v=STSv1 are someone else's; anything but exactly one
        # left means no policy.
        ours = [r for r in answer.records if _TXT_PREFIX.match(r)]
        if len(ours) != 1:
            if ours:
                log.warning("mta-sts: several TXT records", policy_domain=domain)
            return None
        try:
            return parse_txt(ours[0])
        except PolicyError as e:
            log.warning("mta-sts TXT record malformed", policy_domain=domain, error=str(e))
            return None

    async def _refresh(self, domain: str, txt_id: str) -> CachedPolicy | None:
        """Fetch and cache the policy published under ``txt_id``; None when that fails."""
        self.fetches += 1
        try:
            policy = await self.fetch(domain)
        except (FetchError, PolicyError) as e:
            kind = "malformed" if isinstance(e, PolicyError) else "fetch failed"
            log.warning(f"mta-sts policy {kind}", policy_domain=domain, policy_id=txt_id,
                        error=str(e))  # fmt: skip
            now = self.clock()
            self._failed = {k: t for k, t in self._failed.items() if t > now}
            self._failed[(domain, txt_id)] = now + self.fetch_backoff
            return None
        entry = CachedPolicy(txt_id, policy, self.clock() + policy.max_age)
        self._store(domain, entry)
        log.info("mta-sts policy cached", policy_domain=domain, policy_id=txt_id,
                 mode=policy.mode, mx=list(policy.mx), max_age=policy.max_age)  # fmt: skip
        return entry

    async def fetch(self, domain: str) -> Policy:
        """GET the policy of ``domain`` over verified HTTPS; raises :class:`FetchError` or
        :class:`PolicyError`."""
        host = f"mta-sts.{domain}"
        url = f"https://{host}{'' if self.port == 443 else f':{self.port}'}{WELL_KNOWN}"
        # Chain and host name checked against mta-sts.<domain> (SNI is the URL's host):
        # the policy is only worth anything if its origin is authenticated.
        ctx = ssl.create_default_context(cafile=self.ca_file)
        connector = aiohttp.TCPConnector(
            resolver=_DnsResolver(self.resolver), ssl=ctx, use_dns_cache=False, force_close=True
        )
        closed: asyncio.Future[None] | None = None
        try:
            async with (
                aiohttp.ClientSession(
                    connector=connector,
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                    trust_env=False,  # no proxy from the environment between us and the policy
                ) as session,
                session.get(url, allow_redirects=False) as resp,
            ):
                # With force_close the connection is closed as the response ends, but the TLS
                # close (close_notify) finishes later in the loop; awaited below, so no
                # transport outlives the fetch (or its event loop, as an unclosed socket).
                # The connection may be released already (resp.connection is None then); the
                # response keeps its protocol (private in aiohttp 3, hence getattr).
                proto = getattr(resp, "_protocol", None)
                closed = proto.closed if proto is not None else None
                # RFC 8461 3.3: redirects are not followed; only a 200 counts.
                if resp.status != 200:
                    raise FetchError(f"{url}: HTTP {resp.status}")
                ctype = resp.headers.get("Content-Type", "").partition(";")[0].strip().lower()
                if ctype != "text/plain":
                    raise FetchError(f"{url}: Content-Type {ctype!r}, not text/plain")
                if (resp.content_length or 0) > POLICY_MAX_BYTES:
                    raise FetchError(f"{url}: {resp.content_length} bytes, over the limit")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(8192):
                    body += chunk
                    if len(body) > POLICY_MAX_BYTES:
                        raise FetchError(f"{url}: more than {POLICY_MAX_BYTES} bytes")
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise FetchError(f"{url}: {type(e).__name__}: {e}") from e
        finally:
            if closed is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(closed), self.timeout)
        return parse_policy(bytes(body))
