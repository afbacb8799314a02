"""ValiMail's ARC test suite (``tests/conformance/arc/``), every validation test through the
``arc`` engine, each scenario's ``txt-records`` served by a real DNS server on loopback
(:class:`~tests.support.dnsserver.DnsServer`) and looked up by the real resolver.

A test's ``cv`` (``None``, ``Pass``, ``Fail``; empty in three ``cv_fail`` tests, read as
``Fail``) is compared with the finding's ``cv`` detail.
Tests the engine does not pass yet are ``xfail`` (strict) with the reason in ``KNOWN``.
Run: ``pytest tests/unit/test_arc_conformance.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from support.authkeys import served
from support.dnsserver import DnsServer

from mxgate.resolver import Resolver
from scanner.engines.arc import ArcEngine
from scanner.engines.common import ParsedMessage

SUITE = Path(__file__).resolve().parents[1] / "conformance" / "arc"
VALIDATION = SUITE / "arc-draft-validation-tests.yml"

# Tests the engine does not pass yet, with why (strict xfail: a pass turns them red).
_SHA1 = (
    "the suite (2017 draft) accepts a=rsa-sha1; RFC 8301 3.1 says verifiers MUST NOT consider"
    " rsa-sha1 signatures valid, and dkimpy (so the engine) refuses them: fail"
)
KNOWN: dict[str, str] = {"ams_fields_a_sha1": _SHA1, "as_fields_a_sha1": _SHA1}


@dataclass(frozen=True)
class Case:
    """One validation test with its scenario's TXT records."""

    id: str
    spec: str
    description: str
    message: bytes
    cv: str
    records: tuple[tuple[str, str], ...]


def load_cases() -> list[Case]:
    cases: list[Case] = []
    with VALIDATION.open("rb") as fh:
        for scenario in yaml.safe_load_all(fh):
            records = tuple(
                (name.lower().rstrip("."), str(text))
                for name, text in (scenario.get("txt-records") or {}).items()
            )
            for test_id, t in scenario["tests"].items():
                cases.append(
                    Case(
                        id=test_id,
                        spec=str(t.get("spec", "")),
                        description=str(t.get("description", "")),
                        message=str(t.get("message") or "").encode(),
                        # Three cv_fail tests give an empty cv: a seal says cv=fail, and
                        # RFC 8617 5.2 step 2 makes such a chain fail.
                        cv=str(t["cv"]).strip().lower() or "fail",
                        records=records,
                    )
                )
    return cases


CASES = load_cases()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[DnsServer]:
    case: Case = request.node.callspec.params["case"]
    zones = sorted({name.rsplit(".", 1)[-1] for name, _ in case.records}) or ["test"]
    srv = DnsServer(served({n: [("TXT", t)] for n, t in case.records}), zones=zones)
    srv.start()
    yield srv
    srv.stop()


def test_the_whole_suite_is_here() -> None:
    assert len(CASES) == 170
    assert len({c.id for c in CASES}) == 170
    assert set(KNOWN) <= {c.id for c in CASES}


def _param(c: Case) -> object:
    marks = [pytest.mark.xfail(reason=KNOWN[c.id], strict=True)] if c.id in KNOWN else []
    return pytest.param(c, id=c.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
async def test_arc_validation(case: Case, server: DnsServer) -> None:
    engine = ArcEngine(Resolver([server.address], cache_size=0), 1024)
    f = await engine.check(ParsedMessage(case.id, "t", case.message, (), ()))
    assert f.detail["cv"] == case.cv, f"{case.description} ({case.spec}): {f.detail['reason']}"
