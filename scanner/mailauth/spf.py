"""SPF (RFC 7208): is the client IP allowed to send for the envelope sender's domain?

Hand-written rather than pyspf: pyspf does its DNS synchronously through its own resolver
hooks (and its last release is from 2020), so it could neither share the scanner's async
resolver and cache nor be bounded by the engine timeout without a thread per message. This
module follows the RFC's ``check_host()`` (section 4) directly, with its limits: at most 10
DNS-querying terms (include, a, mx, ptr, exists, redirect) per evaluation, at most 2 void
lookups, at most 10 MX names per ``mx`` and 10 PTR names per ``ptr``; macros (section 7)
including transformers, delimiters and URL escaping. A record's syntax is checked in full, as
written, before any term is evaluated (non-ASCII, domain-specs and their top labels, CIDR
lengths, macro letters): any error is ``permerror``, even after a term that would match. A
``fail`` carries the domain's ``exp=`` explanation (section 6.2). Checked against the public
RFC 7208 test suite: ``tests/unit/test_spf_conformance.py``.

A DNS failure is ``temperror``, never a stuck message. The ``spf`` engine
(:mod:`scanner.engines.spf`) reports the result; :mod:`scanner.mailauth.context` computes it
once per message for it and for DMARC.
"""

from __future__ import annotations

import ipaddress
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Literal

from mxgate.resolver import DnsTempError, Resolver

__all__ = ["Result", "SpfResult", "check_host", "identity"]

Result = Literal["pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"]
IP = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_DNS_TERMS = 10
MAX_VOID = 2
MAX_NAMES = 10  # MX hosts per mx, PTR names per ptr (RFC 7208 4.6.4)
_QUALIFIERS: dict[str, Result] = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_MECHS = {"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"}


class PermError(Exception):
    """The SPF record (or its evaluation) is broken: RFC 7208 permerror."""


class TempError(Exception):
    """A DNS failure during evaluation: RFC 7208 temperror."""


@dataclass(frozen=True, slots=True)
class SpfResult:
    """The outcome of ``check_host``: result, the domain checked and why."""

    result: Result
    domain: str
    identity: Literal["mailfrom", "helo"] = "mailfrom"
    reason: str = ""
    explanation: str = ""  # a fail's expanded exp= text (RFC 7208 6.2), "" when it has none


@dataclass
class _State:
    """Counters shared by one evaluation, including its includes and redirects."""

    resolver: Resolver
    ip: IP
    sender: str
    helo: str
    dns_terms: int = 0
    void: int = 0
    seen: set[str] = field(default_factory=set)

    def count_term(self) -> None:
        self.dns_terms += 1
        if self.dns_terms > MAX_DNS_TERMS:
            raise PermError("more than 10 DNS-querying terms")

    async def lookup(self, name: str, rdtype: str, *, count_void: bool = True) -> tuple[str, ...]:
        try:
            ans = await self.resolver.query(name, rdtype)
        except DnsTempError as e:
            raise TempError(str(e)) from None
        if ans.void and count_void:
            self.void += 1
            if self.void > MAX_VOID:
                raise PermError("more than 2 void lookups")
        return ans.records


def _ip(text: str) -> IP | None:
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # RFC 7208 5: an IPv4-mapped client is checked as IPv4
    return ip


def _valid_domain(d: str) -> bool:
    """Fully qualified with sane labels (RFC 7208 4.3): otherwise the result is ``none``."""
    labels = d.rstrip(".").split(".")
    return len(labels) >= 2 and len(d) <= 253 and all(0 < len(label) <= 63 for label in labels)


async def check_host(
    resolver: Resolver, ip: str, domain: str, sender: str, helo: str = ""
) -> SpfResult:
    """RFC 7208 ``check_host(ip, domain, sender)``. Never raises."""
    addr = _ip(ip)
    domain = domain.lower().rstrip(".")
    if addr is None:
        return SpfResult("none", domain, reason="no client IP")
    if not _valid_domain(domain):
        return SpfResult("none", domain, reason="not a domain")
    st = _State(resolver, addr, sender, helo)
    try:
        res, why, exp = await _check(st, domain)
    except PermError as e:
        return SpfResult("permerror", domain, reason=str(e))
    except TempError as e:
        return SpfResult("temperror", domain, reason=str(e))
    explanation = await _explain(st, *exp) if res == "fail" and exp is not None else ""
    return SpfResult(res, domain, reason=why, explanation=explanation)


async def _record(st: _State, domain: str) -> str | None:
    """The domain's one SPF record; None when it has none; PermError when it has several."""
    try:
        ans = await st.resolver.txt(domain)
    except DnsTempError as e:
        raise TempError(str(e)) from None
    recs = [r for r in ans.records if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]
    if len(recs) > 1:
        raise PermError(f"{domain}: several SPF records")
    return recs[0] if recs else None


@dataclass(frozen=True, slots=True)
class _Record:
    """A record whose syntax has been checked: its mechanisms and the two modifiers that act."""

    mechanisms: tuple[tuple[Result, str, str], ...]  # (qualifier's result, name, argument)
    redirect: str | None
    exp: str | None


def _parse(record: str) -> _Record:
    """The record's terms, every one checked against RFC 7208's grammar (sections 4.6.1, 5,
    6, 7.1) before anything is evaluated: a syntax error anywhere is a permerror even when
    an earlier term would have matched."""
    if any(not " " <= ch <= "~" for ch in record):
        raise PermError("non-ASCII or control character in record")  # RFC 7208 3.1, 4.6.1
    redirect: str | None = None
    exp: str | None = None
    mechanisms: list[tuple[Result, str, str]] = []
    for term in record.split(" ")[1:]:
        if not term:
            continue  # several spaces between terms, or trailing ones
        m = re.match(r"^([A-Za-z][A-Za-z0-9_.-]*)=(.*)$", term)
        if m:
            name, value = m.group(1).lower(), m.group(2)
            if name == "redirect":
                if redirect is not None:
                    raise PermError("two redirect modifiers")
                redirect = _check_domain_spec(value, "redirect")
            elif name == "exp":
                if exp is not None:
                    raise PermError("two exp modifiers")
                exp = _check_domain_spec(value, "exp")
            else:
                _check_macros(value, _ALL_LETTERS)  # unknown modifiers are ignored (RFC 6)
            continue
        q: Result = "pass"
        if term[:1] in _QUALIFIERS:
            q, term = _QUALIFIERS[term[0]], term[1:]
        mname, sep, arg = _split_mech(term)
        if mname not in _MECHS:
            raise PermError(f"unknown mechanism {term!r}")
        _check_mechanism(mname, sep + arg)
        mechanisms.append((q, mname, sep + arg))
    return _Record(tuple(mechanisms), redirect, exp)


async def _check(st: _State, domain: str) -> tuple[Result, str, tuple[str, str] | None]:
    """(result, why, the (exp domain-spec, domain) a fail is explained by, or None)."""
    if domain in st.seen:
        raise PermError(f"loop through {domain}")
    st.seen.add(domain)
    try:
        text = await _record(st, domain)
        if text is None:
            return "none", f"{domain}: no SPF record", None
        record = _parse(text)
        exp = (record.exp, domain) if record.exp is not None else None
        for q, mname, arg in record.mechanisms:
            if await _match(st, domain, mname, arg):
                return q, f"{domain}: {mname}{arg}", exp
        if record.redirect is not None and not any(m == "all" for _, m, _ in record.mechanisms):
            st.count_term()
            target = (await _expand(st, record.redirect, domain)).lower().rstrip(".")
            if not _valid_domain(target):
                raise PermError(f"redirect to invalid domain {target!r}")
            # The target's exp= explains, never this record's (RFC 7208 6.2).
            res, why, target_exp = await _check(st, target)
            if res == "none":
                raise PermError(f"redirect to {target}: no SPF record")
            return res, why, target_exp
        return "neutral", f"{domain}: no match", exp
    finally:
        st.seen.discard(domain)


async def _explain(st: _State, spec: str, domain: str) -> str:
    """A fail's explanation (RFC 7208 6.2): the one TXT record at ``exp=``'s expanded name,
    itself expanded. Any trouble (DNS failure, no or several records, non-ASCII or bad macros)
    gives no explanation, never another result; the lookup counts towards no limit."""
    try:
        target = (await _expand(st, spec, domain)).rstrip(".")
        if not target:
            return ""
        ans = await st.resolver.txt(target)
        if len(ans.records) != 1:
            return ""
        text = ans.records[0]
        if any(not " " <= ch <= "~" for ch in text):
            return ""
        _check_macros(text, _ALL_LETTERS)
        return await _expand(st, text, domain, name=False)
    except (PermError, DnsTempError):
        return ""


def _split_mech(term: str) -> tuple[str, str, str]:
    m = re.match(r"^([A-Za-z][A-Za-z0-9_-]*)([:/]?)(.*)$", term)
    if not m:
        raise PermError(f"bad term {term!r}")
    name, sep, arg = m.group(1).lower(), m.group(2), m.group(3)
    if not sep and arg:
        raise PermError(f"bad term {term!r}")
    return name, sep, arg


_IP4_ARG = re.compile(r"^:([0-9.]+)(?:/(0|[1-9][0-9]?))?$")
_IP6_ARG = re.compile(r"^:([0-9A-Fa-f:.]+)(?:/(0|[1-9][0-9]{0,2}))?$")


def _ip_network(mech: str, arg: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``ip4:`` / ``ip6:`` network and optional length, strictly (RFC 7208 5.6): no leading
    zeros in lengths or octets, lengths within 32 / 128."""
    m = (_IP4_ARG if mech == "ip4" else _IP6_ARG).match(arg)
    if m is None:
        raise PermError(f"bad {mech}{arg!r}")
    addr, length = m.group(1), m.group(2)
    try:
        ip: IP = ipaddress.IPv4Address(addr) if mech == "ip4" else ipaddress.IPv6Address(addr)
    except ValueError:
        raise PermError(f"bad {mech}{arg!r}") from None
    bits = int(length) if length is not None else ip.max_prefixlen
    if bits > ip.max_prefixlen:
        raise PermError(f"bad cidr length in {mech}{arg!r}")
    return ipaddress.ip_network(f"{ip}/{bits}", strict=False)


def _check_mechanism(mech: str, arg: str) -> None:
    """A mechanism's argument against its grammar (RFC 7208 5.1-5.7)."""
    if mech == "all":
        if arg:
            raise PermError("all takes no argument")
    elif mech in ("ip4", "ip6"):
        _ip_network(mech, arg)
    elif mech in ("include", "exists"):
        if not arg.startswith(":"):
            raise PermError(f"{mech} needs a domain")
        _check_domain_spec(arg[1:], mech)
    elif mech == "ptr":
        if arg:
            if not arg.startswith(":"):
                raise PermError(f"bad ptr argument {arg!r}")
            _check_domain_spec(arg[1:], mech)
    else:  # a, mx: [":" domain-spec] [dual-cidr-length]
        spec, _, _ = _cidr(arg)
        if spec:
            if not spec.startswith(":"):
                raise PermError(f"bad {mech} argument {arg!r}")
            _check_domain_spec(spec[1:], mech)


_TOPLABEL = re.compile(
    r"^(?:[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9-]*[A-Za-z0-9])$"
)


def _check_domain_spec(spec: str, where: str) -> str:
    """RFC 7208 7.1 ``domain-spec``: macros allowed outside explanations, ending with a macro
    or a valid top label (not all numeric, no leading dash): the syntax is checked as written,
    never after expansion. Returns ``spec``."""
    if not spec:
        raise PermError(f"{where}: empty domain-spec")
    last = _check_macros(spec, _DOMAIN_LETTERS)
    if last is not None and last.end() == len(spec):
        return spec  # domain-end = macro-expand
    body = spec[:-1] if spec.endswith(".") else spec
    head, dot, top = body.rpartition(".")
    if not dot or (last is not None and last.end() > len(head)) or not _TOPLABEL.match(top):
        raise PermError(f"{where}: invalid domain-spec {spec!r}")
    return spec


def _cidr(arg: str) -> tuple[str, int | None, int | None]:
    """``domain-spec/4len//6len`` -> (domain-spec, ip4 length, ip6 length)."""
    m = re.match(r"^(.*?)(?:/(\d+))?(?://(\d+))?$", arg)
    if m is None:
        raise PermError(f"bad cidr {arg!r}")
    spec, v4, v6 = m.group(1), m.group(2), m.group(3)
    l4 = int(v4) if v4 is not None else None
    l6 = int(v6) if v6 is not None else None
    if (l4 is not None and (l4 > 32 or (v4.startswith("0") and v4 != "0"))) or (
        l6 is not None and (l6 > 128 or (v6.startswith("0") and v6 != "0"))
    ):
        raise PermError(f"bad cidr length in {arg!r}")
    return spec, l4, l6


async def _target(st: _State, spec: str, domain: str) -> str:
    """The name a mechanism's ``:domain-spec`` (checked by :func:`_parse`) expands to.

    The expansion is not checked again (RFC 7208 7.1): a name no DNS could hold (a HELO of
    ``JUMPIN' JUPITER`` in ``a:%{h}``) is looked up as it is, and matches nothing.
    """
    if not spec:
        return domain
    return (await _expand(st, spec[1:], domain)).lower().rstrip(".")


def _in(ip: IP, addr_text: str, l4: int | None, l6: int | None) -> bool:
    other = _ip(addr_text)
    if other is None or other.version != ip.version:
        return False
    length = (l4 if l4 is not None else 32) if ip.version == 4 else (l6 if l6 is not None else 128)
    net = ipaddress.ip_network(f"{other}/{length}", strict=False)
    return ip in net


async def _match(st: _State, domain: str, mech: str, arg: str) -> bool:
    ip = st.ip
    rr = "AAAA" if ip.version == 6 else "A"
    # The syntax of every term was checked by _parse before evaluation started.
    if mech == "all":
        return True
    if mech in ("ip4", "ip6"):
        net = _ip_network(mech, arg)
        return ip.version == net.version and ip in net
    if mech == "include":
        st.count_term()
        target = await _target(st, arg, domain)
        if not _valid_domain(target):
            # check_host() of a malformed name is "none", which include makes permerror (5.2).
            raise PermError(f"include of invalid domain {target!r}")
        res, _, _ = await _check(st, target)  # the included record's exp= is not used (6.2)
        if res == "pass":
            return True
        if res in ("fail", "softfail", "neutral"):
            return False
        if res == "temperror":
            raise TempError(f"include:{target}")
        raise PermError(f"include:{target}: {res}")
    if mech == "exists":
        st.count_term()
        target = await _target(st, arg, domain)
        return bool(await st.lookup(target, "A"))  # always A, whatever the client (RFC 5.7)
    if mech == "a":
        st.count_term()
        spec, l4, l6 = _cidr(arg)
        target = await _target(st, spec, domain)
        return any(_in(ip, a, l4, l6) for a in await st.lookup(target, rr))
    if mech == "mx":
        st.count_term()
        spec, l4, l6 = _cidr(arg)
        target = await _target(st, spec, domain)
        mxs = await st.lookup(target, "MX")
        if len(mxs) > MAX_NAMES:
            raise PermError(f"{target}: more than 10 MX records")
        for mx in mxs:
            host = mx.split()[-1]
            if host in ("", "."):
                continue
            # Address lookups of MX hosts count towards the void limit as well (RFC 4.6.4).
            if any(_in(ip, a, l4, l6) for a in await st.lookup(host, rr)):
                return True
        return False
    if mech == "ptr":
        st.count_term()
        target = await _target(st, arg, domain)
        return await _ptr_match(st, target)
    raise PermError(f"unknown mechanism {mech}")


async def _ptr_match(st: _State, target: str) -> bool:
    names = await _validated_names(st)
    return any(n == target or n.endswith("." + target) for n in names)


async def _validated_names(st: _State) -> list[str]:
    """PTR names of the client IP whose forward lookup gives the IP back (RFC 5.5)."""
    import dns.reversename

    rev = dns.reversename.from_address(str(st.ip)).to_text(omit_final_dot=True)
    try:
        ptrs = (await st.resolver.query(rev, "PTR")).records
    except DnsTempError:
        return []  # errors in ptr are "no match" (RFC 5.5)
    out: list[str] = []
    rr = "AAAA" if st.ip.version == 6 else "A"
    for name in ptrs[:MAX_NAMES]:
        try:
            addrs = (await st.resolver.query(name, rr)).records
        except DnsTempError:
            continue
        if any(_ip(a) == st.ip for a in addrs):
            out.append(name.lower().rstrip("."))
    return out


# --- macros (RFC 7208 7) -----------------------------------------------------------------

_MACRO_RE = re.compile(r"%\{([A-Za-z])(\d*)(r?)([.\-+,/_=]*)\}|%%|%_|%-|%")


_DOMAIN_LETTERS = "slodiphv"
_ALL_LETTERS = _DOMAIN_LETTERS + "crt"  # c, r and t only in explanation text (RFC 7208 7.1)


def _check_macros(text: str, letters: str) -> re.Match[str] | None:
    """Every ``%`` in ``text`` starts a valid macro with one of ``letters``; returns the last
    macro, or None when there is none."""
    last: re.Match[str] | None = None
    for m in _MACRO_RE.finditer(text):
        tok = m.group(0)
        if tok == "%":
            raise PermError(f"bad macro in {text!r}")
        if tok.startswith("%{"):
            if m.group(1).lower() not in letters:
                raise PermError(f"macro {tok} not allowed in {text!r}")
            if m.group(2) and int(m.group(2)) == 0:
                raise PermError(f"macro {tok} keeps zero labels")
        last = m
    return last


async def _expand(st: _State, text: str, domain: str, *, name: bool = True) -> str:
    """``text`` with its macros expanded (RFC 7208 7.3); a ``name`` is cut to 253 octets."""
    out: list[str] = []
    pos = 0
    for m in _MACRO_RE.finditer(text):
        out.append(text[pos : m.start()])
        pos = m.end()
        tok = m.group(0)
        if tok == "%%":
            out.append("%")
        elif tok == "%_":
            out.append(" ")
        elif tok == "%-":
            out.append("%20")
        elif tok == "%":
            raise PermError(f"bad macro in {text!r}")
        else:
            letter, digits, rev, delims = m.group(1), m.group(2), m.group(3), m.group(4)
            value = await _macro_value(st, letter.lower(), domain)
            parts = re.split("[" + re.escape(delims or ".") + "]", value)
            if rev:
                parts.reverse()
            if digits:
                n = int(digits)
                if n == 0:
                    raise PermError("macro keeps zero labels")
                parts = parts[-n:]
            value = ".".join(parts)
            if letter.isupper():
                value = urllib.parse.quote(value, safe="")
            out.append(value)
    out.append(text[pos:])
    result = "".join(out)
    # A too-long name loses labels from the left until it fits (RFC 7208 7.3).
    while name and len(result) > 253 and "." in result:
        result = result.split(".", 1)[1]
    return result


async def _macro_value(st: _State, letter: str, domain: str) -> str:
    sender = st.sender or f"postmaster@{st.helo}"
    local, _, sdomain = sender.rpartition("@")
    if letter == "s":
        return sender
    if letter == "l":
        return local or "postmaster"
    if letter == "o":
        return sdomain
    if letter == "d":
        return domain
    if letter == "i":
        if st.ip.version == 4:
            return str(st.ip)
        return ".".join(st.ip.exploded.replace(":", ""))
    if letter == "p":
        names = await _validated_names(st)
        exact = [n for n in names if n == domain or n.endswith("." + domain)]
        return (exact or names or ["unknown"])[0]
    if letter == "v":
        return "in-addr" if st.ip.version == 4 else "ip6"
    if letter == "h":
        return st.helo or "unknown"
    if letter == "c":  # explanations only: the client address as it is usually written
        return str(st.ip)
    if letter == "r":
        return "unknown"  # the receiving host's name, not known to check_host (RFC 7.2)
    if letter == "t":
        return str(int(time.time()))
    raise PermError(f"macro %{{{letter}}} not allowed here")


def identity(mail_from: str, helo: str) -> tuple[str, str, Literal["mailfrom", "helo"]]:
    """(domain, sender, identity) checked: MAIL FROM's domain, or HELO's for a null sender."""
    sender = mail_from.strip().strip("<>")
    if sender and "@" in sender:
        return sender.rpartition("@")[2].lower(), sender, "mailfrom"
    name = helo.strip().lower()
    return name, f"postmaster@{name}", "helo"
