"""What each receiver check found, recorded apart from the reply it leads to.

Every check of the front door (connection limits, DNSBL, address syntax, relay, recipient
count and tenant, recipient verification, message rate) returns a :class:`CheckResult`: the
check's name, its verdict, a short machine reason, and the SMTP reply a refusal implies
(texts from :mod:`receiver.replies`). :func:`decide` and :func:`reply_for` are the one place
that turns results into the reply, as the scanner turns findings into an action; :func:`record`
is the one place that counts them. Checks run in order and stop at the first refusal (a
recipient callout is not worth making for a relay attempt).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from receiver.metrics import ReceiverMetrics

__all__ = ["CheckResult", "Verdict", "accept", "decide", "record", "refuse", "reply_for"]

Verdict = Literal["accept", "reject", "tempfail"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's outcome. ``reply`` is empty when the check accepts.

    ``reason`` is a metric label (``connection_rate``, ``unknown_user``, ...); an accept may
    carry one too, when the check failed open (a DNSBL lookup that could not be made).
    """

    check: str
    verdict: Verdict
    reason: str = ""
    reply: str = ""

    @property
    def accepted(self) -> bool:
        """The check lets the client go on."""
        return self.verdict == "accept"


def accept(check: str, reason: str = "") -> CheckResult:
    """``check`` found nothing against the client (``reason``: it failed open)."""
    return CheckResult(check, "accept", reason)


def refuse(check: str, reason: str, reply: str) -> CheckResult:
    """``check`` refuses with ``reply``: a 4xx is a tempfail, a 5xx a reject."""
    verdicts: dict[str, Verdict] = {"4": "tempfail", "5": "reject"}
    verdict = verdicts.get(reply[:1])
    if verdict is None or not reply[:3].isdigit():
        raise ValueError(f"a refusal needs a 4xx or 5xx reply, not {reply!r}")
    return CheckResult(check, verdict, reason, reply)


def decide(results: Iterable[CheckResult]) -> CheckResult | None:
    """The first result that refuses, or None when every check accepts."""
    return next((r for r in results if not r.accepted), None)


def reply_for(results: Iterable[CheckResult], accepted: str) -> str:
    """The SMTP reply for ``results``: the first refusal's, else ``accepted``."""
    refusal = decide(results)
    return accepted if refusal is None else refusal.reply


def record(metrics: ReceiverMetrics, result: CheckResult) -> None:
    """Count ``result`` by check and reason when it has a reason (plain accepts are not)."""
    if result.reason:
        metrics.rejections.labels(result.check, result.reason).inc()
