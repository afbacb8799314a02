"""The public RFC 7208 SPF test suite (OpenSPF, ``tests/conformance/spf/rfc7208-tests.yml``),
every test of every scenario through the ``spf`` engine.

Each scenario's zone data is served by :class:`ZoneResolver`, the real
:class:`~mxgate.resolver.Resolver` (cache, single flight, name checks) with only its network
lookup replaced by the scenario's records. The zone conventions are those of the suite's own
driver (pyspf's ``testspf.py``): an ``SPF`` record also stands for a ``TXT`` one at a name
that has no ``TXT`` (``TXT: NONE`` stops that), ``TIMEOUT`` makes the name's lookups time
out, a name absent from the data is NXDOMAIN, except under ``error.`` where it times out.

A test lists one result or several acceptable ones. ``explanation`` (the expanded ``exp=``
text of a fail) is checked against the finding's ``explanation`` detail; the suite's
``DEFAULT`` is the default explanation its driver sets, i.e. the domain gave none ("").
Run: ``pytest tests/unit/test_spf_conformance.py``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.name
import pytest
import yaml

from mxgate.resolver import Answer, DnsTempError, Resolver
from scanner.engines.common import ParsedMessage
from scanner.engines.spf import SpfEngine

SUITE = Path(__file__).resolve().parents[1] / "conformance" / "spf" / "rfc7208-tests.yml"

Zone = dict[str, list[tuple[str, Any]]]

# Explanations compared ignoring case, with why.
CASE_INSENSITIVE_EXPLANATION = {
    # The expected text has %{ir}'s IPv6 nibbles in upper case because the suite's driver keeps
    # the case of the address as typed (CAFE:BABE::1). RFC 7208 7.3 only says "hex digit"
    # (and its 7.4 example is lower case); it is a DNS name, so case does not matter.
    "v-macro-ip6",
}


@dataclass(frozen=True)
class Case:
    """One YAML test with its scenario's zone."""

    id: str
    spec: str
    description: str
    host: str
    mailfrom: str
    helo: str
    results: tuple[str, ...]
    explanation: str | None
    zone: Zone


def _zone(data: dict[str, list[Any]]) -> Zone:
    """The scenario's zone data as name -> [(type, value)], with the driver's SPF-as-TXT rule."""
    out: Zone = {}
    for name, rrs in data.items():
        recs: list[tuple[str, Any]] = []
        spf: list[tuple[str, Any]] = []
        has_txt = False
        for rr in rrs:
            if rr == "TIMEOUT":
                recs.append(("TIMEOUT", None))
                continue
            ((rtype, value),) = rr.items()
            if rtype in ("TXT", "SPF") and isinstance(value, str):
                value = [value]
            if rtype == "TXT":
                has_txt = True
            elif rtype == "SPF":
                spf.append(("TXT", value))
            if value != ["NONE"]:
                recs.append((rtype, value))
        if not has_txt:
            recs.extend(spf)
        out[name.lower().rstrip(".")] = recs
    return out


def load_cases() -> list[Case]:
    cases: list[Case] = []
    with SUITE.open("rb") as fh:
        for scenario in yaml.safe_load_all(fh):
            zone = _zone(scenario["zonedata"])
            for test_id, t in scenario["tests"].items():
                result = t["result"]
                cases.append(
                    Case(
                        id=test_id,
                        spec=str(t["spec"]),
                        description=str(t.get("description", scenario["description"])),
                        host=t["host"],
                        mailfrom=t["mailfrom"],
                        helo=t["helo"],
                        results=tuple(result) if isinstance(result, list) else (result,),
                        explanation=t.get("explanation"),
                        zone=zone,
                    )
                )
    return cases


class ZoneResolver(Resolver):
    """The real resolver answering from one scenario's zone data instead of the network."""

    def __init__(self, zone: Zone) -> None:
        super().__init__(("127.0.0.1",), cache_size=0)
        self.zone = zone

    async def _lookup(self, name: str, rdtype: str) -> tuple[Answer, float]:
        try:
            dns.name.from_text(name)  # what the real lookup refuses is NXDOMAIN there too
        except (dns.exception.DNSException, ValueError, UnicodeError):
            return Answer((), nxdomain=True), 0.0
        self.queries += 1
        return self._answer(name.lower().rstrip("."), rdtype, depth=0), 0.0

    def _answer(self, name: str, rdtype: str, depth: int) -> Answer:
        recs = self.zone.get(name)
        if recs is None:
            if name.startswith("error."):
                raise DnsTempError(f"{name}/{rdtype}: timeout")
            return Answer((), nxdomain=True)
        out: list[str] = []
        for rtype, value in recs:
            if rtype == "TIMEOUT" and not out:
                raise DnsTempError(f"{name}/{rdtype}: timeout")
            if rtype == "CNAME" and rdtype != "CNAME" and depth < 8:
                return self._answer(str(value).lower().rstrip("."), rdtype, depth + 1)
            if rtype != rdtype:
                continue
            if value == "TIMEOUT":
                raise DnsTempError(f"{name}/{rdtype}: timeout")
            out.append(_text(rtype, value))
        return Answer(tuple(out))


def _text(rtype: str, value: Any) -> str:
    """A record as :class:`~mxgate.resolver.Resolver` gives it (TXT strings joined, ...)."""
    if rtype == "TXT":
        return "".join(value)
    if rtype == "MX":
        pref, host = value
        return f"{pref} {str(host).rstrip('.')}"
    if rtype == "AAAA":
        return str(ipaddress.IPv6Address(value))
    if rtype == "PTR":
        return str(value).rstrip(".")
    return str(value)


CASES = load_cases()


def test_the_whole_suite_is_here() -> None:
    assert len(CASES) == 203
    assert len({c.id for c in CASES}) == 203
    assert CASE_INSENSITIVE_EXPLANATION <= {c.id for c in CASES}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
async def test_rfc7208(case: Case) -> None:
    engine = SpfEngine(ZoneResolver(case.zone))
    msg = ParsedMessage(
        case.id,
        "t",
        b"",
        (),
        (),
        mail_from=case.mailfrom,
        client_ip=case.host,
        helo=case.helo,
    )
    f = await engine.check(msg)
    why = f"{case.description} (RFC 7208 {case.spec}): {f.detail.get('reason')}"
    assert f.detail["result"] in case.results, why
    if case.explanation is not None:
        want = "" if case.explanation == "DEFAULT" else case.explanation
        got = f.detail["explanation"]
        if case.id in CASE_INSENSITIVE_EXPLANATION:
            want, got = want.casefold(), got.casefold()
        assert got == want, why
