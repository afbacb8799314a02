"""The one pure function that turns engine findings plus a tenant's policy into an action.

Engines only report (:class:`~scanner.engines.common.Finding`); :func:`decide` alone chooses what
happens, from data in :class:`~mxgate.tenants.Policy`. It reads no clock, no environment and no
state, so replaying recorded findings against a policy gives the recorded decision, and
replaying them against another policy shows what that policy would have done.

Rules, each contributing an action and reasons; the most severe action wins and every reason is
kept (in findings order):

- an ``infected`` finding -> ``policy.on_virus``, reason ``virus:<engine>:<symbol>``;
- a ``match`` finding -> ``policy.on_content_match``, reason ``content:<engine>:<symbol>``;
- spam, with a trained combiner (``spam_model``, :class:`~scanner.combiner.SpamModel`) one of
  whose engines answered: its probability from the findings of the engines it knows (a missing
  one is a feature, not a 0 score), at or above the model's threshold for
  ``policy.spam_quarantine_fpr`` / ``policy.spam_target_fpr`` -> quarantine / tag, reasons
  ``spam-probability:<p>``, ``spam-model:<version>`` and ``spam:<engine>:<symbol>``. Engines
  the model does not know (content rules' GTUBE, DNSBL) keep the score rule below on their
  own;
- spam without a model (never trained: the fallback), spam score = sum of ``score x engine
  weight`` (weight default 1.0) over antispam findings; at or above ``spam_discard`` /
  ``spam_quarantine`` / ``spam_tag`` -> discard / quarantine / tag, reasons
  ``spam-score:<score>`` and ``spam:<engine>:<symbol>`` for what contributed. ``spam_discard``
  applies to this sum with a model too (a tenant that opted in to discarding keeps it);
- an attachment finding (``match`` with symbols ``attachment:<what>``, from the attachments
  engine) acts only when ``<what>`` or a ``:``-prefix of it is in ``policy.blocked_attachments``
  -> ``policy.on_blocked_attachment``, reason ``attachment:<engine>:<what>``; office findings
  (``office:<what>``) likewise with ``blocked_office`` / ``on_blocked_office``, and PDF
  findings (``pdf:<what>``) with ``blocked_pdf`` / ``on_blocked_pdf``;
- authentication ``match`` symbols ``DMARC_POLICY_REJECT`` / ``DMARC_POLICY_QUARANTINE`` /
  ``BACKSCATTER`` -> ``policy.on_dmarc_reject`` / ``on_dmarc_quarantine`` / ``on_backscatter``,
  reason ``auth:<engine>:<symbol>``;
- a sandbox finding with ``score >= policy.sandbox_malicious`` counts as a detection
  (``policy.on_virus``, reason ``sandbox:<engine>:<symbol>``); a sandbox ``timeout`` ->
  ``policy.on_sandbox_timeout``, reason ``sandbox-timeout:<engine>``;
- unscannable: an ``unscannable`` finding (the parser's ``mime`` pseudo-engine: a parse that
  failed, hit a limit or ran out of budget) -> ``policy.on_unscannable``, reasons
  ``unscannable:<engine>:<defect>``;
- antivirus verdict missing: at least one antivirus engine gave no verdict (error, timeout,
  disabled by ops, circuit open, no free worker) and none answered ``clean`` ->
  ``policy.on_engine_error``, reason ``av-unavailable``; some failed while another answered
  ``clean`` -> ``policy.on_av_partial_failure``, reason ``av-degraded``; either way also
  ``av-missing:<engine>:<why>`` for each. Either may be ``hold``: unless ``final``, the decision
  then names the failed engines in ``rescan`` and the caller scans them again; a ``final``
  decision applies ``policy.on_hold_expired`` instead, reason ``av-hold-expired``.

Failing closed is the default (quarantine). When a tenant's policy lets a message with a
missing verdict or unscanned content through (``deliver`` or ``tag``), the reasons say which
rule did: ``allowed:<policy field>=<action>`` (e.g. ``allowed:on_engine_error=deliver``), so
``mxgate trace`` shows why unscanned mail went out.

"infected" counts as a virus whatever the reporting engine's kind (failing safe). The
antivirus-unavailable rule deliberately ignores detections: a detection must never be able to
*lower* the action by hiding a failed scan, which keeps :func:`decide` monotone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from mxgate.tenants import Action, Policy
from scanner.combiner import SpamModel
from scanner.engines.common import MISSING, Finding

__all__ = ["SEVERITY", "Decision", "decide"]

SEVERITY: Final[dict[Action, int]] = {"deliver": 0, "tag": 1, "quarantine": 2, "discard": 3}
"""Actions from least to most severe."""

_FAILED = MISSING
_LETS_THROUGH = ("deliver", "tag")
# Authentication findings with an action of their own in the policy (symbol -> Policy field).
_AUTH_RULES: Final[dict[str, str]] = {
    "DMARC_POLICY_REJECT": "on_dmarc_reject",
    "DMARC_POLICY_QUARANTINE": "on_dmarc_quarantine",
    "BACKSCATTER": "on_backscatter",
}
# Bounds one weighted score so that inf/nan from a misbehaving engine or weight can neither make
# the sum raise (fsum of +inf and -inf does) nor turn it into nan.
_SCORE_BOUND = 1e12


@dataclass(frozen=True, slots=True)
class Decision:
    """What happens to a message, why, and under which policy version."""

    action: Action
    reasons: tuple[str, ...]
    spam_score: float
    policy_version: str
    rescan: tuple[str, ...] = ()
    """Antivirus engines the policy wants scanned again before it decides (``hold``)."""
    spam_probability: float | None = None
    """The combiner's spam probability (None: no model, the score rule decided)."""
    spam_model: str = ""
    """Version of the combiner model that judged spam ("" without one)."""


def decide(
    findings: Sequence[Finding],
    policy: Policy,
    *,
    final: bool = True,
    spam_model: SpamModel | None = None,
) -> Decision:
    """Turn ``findings`` into the action ``policy`` prescribes. Pure and deterministic.

    ``final=False`` lets a ``hold`` policy ask for a rescan (``Decision.rescan``) instead of
    deciding; the action it carries meanwhile is what the other rules alone call for.
    ``spam_model``: the trained combiner (data, like the policy); None: the score-sum rule.
    """
    action: Action = "deliver"
    reasons: dict[str, None] = {}  # ordered set

    def apply(candidate: Action, *why: str) -> None:
        nonlocal action
        if SEVERITY[candidate] > SEVERITY[action]:
            action = candidate
        for r in why:
            reasons.setdefault(r, None)

    for f in findings:
        symbols = f.symbols or ("unknown",)
        if f.outcome == "infected":
            apply(policy.on_virus, *(f"virus:{f.engine}:{s}" for s in symbols))
        elif f.outcome == "match":
            _match(f, symbols, policy, apply)
        elif f.outcome == "unscannable":
            apply(policy.on_unscannable, *(f"unscannable:{f.engine}:{s}" for s in symbols))
            if policy.on_unscannable in _LETS_THROUGH:
                apply(policy.on_unscannable, f"allowed:on_unscannable={policy.on_unscannable}")
        elif f.outcome == "timeout" and f.kind == "policy" and f.engine == "sandbox":
            apply(policy.on_sandbox_timeout, f"sandbox-timeout:{f.engine}")
        # A timeout may still carry the malscore of attachments that did finish.
        if (
            f.engine == "sandbox"
            and f.outcome in ("clean", "match", "timeout")
            and (f.score >= policy.sandbox_malicious)
        ):
            apply(policy.on_virus, *(f"sandbox:{f.engine}:{s}" for s in symbols))

    spam_score = _spam_score(findings, policy)
    probability: float | None = None
    if spam_model is not None and not spam_model.judges(findings):
        spam_model = None  # none of its engines answered: the score rule, as without one
    if spam_model is None:
        spam_action = _spam_action(spam_score, policy)
        summed = findings
    else:
        probability = spam_model.probability(findings)
        _, tag_at = spam_model.threshold(policy.spam_target_fpr)
        _, quarantine_at = spam_model.threshold(policy.spam_quarantine_fpr)
        model_action: Action = "deliver"
        if probability >= max(tag_at, quarantine_at):
            model_action = "quarantine"
        elif probability >= tag_at:
            model_action = "tag"
        if model_action != "deliver":
            apply(
                model_action,
                f"spam-probability:{probability:.4f}",
                f"spam-model:{spam_model.version}",
                *(
                    f"spam:{f.engine}:{s}"
                    for f in findings
                    if f.kind == "antispam" and f.engine in spam_model.engines
                    for s in f.symbols
                ),
            )
        known = set(spam_model.engines)
        summed = [f for f in findings if f.engine not in known]
        spam_action = _spam_action(_spam_score(summed, policy), policy)
        if spam_action != "discard" and spam_score >= policy.spam_discard:
            spam_action = "discard"
    if spam_action != "deliver":
        contributors = (
            f"spam:{f.engine}:{s}"
            for f in summed
            if f.kind == "antispam" and _weighted(f, policy) > 0
            for s in f.symbols
        )
        apply(spam_action, f"spam-score:{spam_score:.2f}", *contributors)

    av = [f for f in findings if f.kind == "antivirus"]
    missing = [f for f in av if f.outcome in _FAILED]
    failed = tuple(dict.fromkeys(f.engine for f in missing))
    rescan: tuple[str, ...] = ()
    if failed:
        if any(f.outcome == "clean" for f in av):
            field, mode, why = "on_av_partial_failure", policy.on_av_partial_failure, "av-degraded"
        else:
            field, mode, why = "on_engine_error", policy.on_engine_error, "av-unavailable"
        each = tuple(dict.fromkeys(f"av-missing:{f.engine}:{_why_missing(f)}" for f in missing))
        if mode == "hold":
            if final:
                expired = policy.on_hold_expired
                apply(expired, why, *each, "av-hold-expired")
                if expired in _LETS_THROUGH:
                    apply(expired, f"allowed:on_hold_expired={expired}")
            else:
                rescan = failed
        else:
            apply(mode, why, *each)
            if mode in _LETS_THROUGH:
                apply(mode, f"allowed:{field}={mode}")

    return Decision(
        action=action,
        reasons=tuple(reasons),
        spam_score=spam_score,
        policy_version=policy.version,
        rescan=rescan,
        spam_probability=probability,
        spam_model=spam_model.version if spam_model is not None else "",
    )


def _match(f: Finding, symbols: tuple[str, ...], policy: Policy, apply: Any) -> None:
    """A ``match`` finding: attachment/office/pdf symbols are judged against the tenant's lists."""
    auth = [s for s in symbols if s in _AUTH_RULES]
    if auth:
        # The other symbols of an authentication finding (dmarc=fail, header.from=…) explain
        # it; they are not content matches of their own.
        for s in auth:
            apply(getattr(policy, _AUTH_RULES[s]), f"auth:{f.engine}:{s}")
        return
    plain = []
    for s in symbols:
        family, _, what = s.partition(":")
        if family == "attachment" and what:
            if _listed(what, policy.blocked_attachments):
                apply(policy.on_blocked_attachment, f"attachment:{f.engine}:{what}")
        elif family == "office" and what:
            if _listed(what, policy.blocked_office):
                apply(policy.on_blocked_office, f"office:{f.engine}:{what}")
        elif family == "pdf" and what:
            if _listed(what, policy.blocked_pdf):
                apply(policy.on_blocked_pdf, f"pdf:{f.engine}:{what}")
        else:
            plain.append(s)
    if plain or not symbols:
        apply(policy.on_content_match, *(f"content:{f.engine}:{s}" for s in plain or symbols))


def _why_missing(f: Finding) -> str:
    """Why ``f`` has no verdict: ``detail["missing"]`` (disabled, circuit-open, queue-wait, ...),
    else its outcome (findings recorded before that key existed)."""
    return f.detail.get("missing") or f.outcome


def _listed(what: str, listed: Sequence[str]) -> bool:
    """``what`` or one of its ``:``-prefixes is in ``listed`` ("archive-limit" covers
    "archive-limit:ratio"); the ``*`` entry lists everything."""
    if "*" in listed:
        return True
    pieces = what.split(":")
    return any(":".join(pieces[:i]) in listed for i in range(1, len(pieces) + 1))


def _weighted(f: Finding, policy: Policy) -> float:
    value = f.score * policy.engine_weights.get(f.engine, 1.0)
    if math.isnan(value):
        return 0.0
    return max(-_SCORE_BOUND, min(_SCORE_BOUND, value))


def _spam_score(findings: Sequence[Finding], policy: Policy) -> float:
    # fsum is exact, so the score does not depend on the order the engines reported in.
    return math.fsum(_weighted(f, policy) for f in findings if f.kind == "antispam")


def _spam_action(score: float, policy: Policy) -> Action:
    # Each threshold is judged on its own, so a policy with thresholds out of order still gives
    # the most severe action any of them calls for.
    if score >= policy.spam_discard:
        return "discard"
    if score >= policy.spam_quarantine:
        return "quarantine"
    if score >= policy.spam_tag:
        return "tag"
    return "deliver"
