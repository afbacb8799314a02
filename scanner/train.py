"""Teach every learning engine at once: ``mxgate train --ham DIR --spam DIR``.

Learners: the in-process Bayes (always; its rocksdict store is opened for writing) and the
enabled external engines that can learn (SpamAssassin through spamd's TELL, rspamd through its
controller's ``/learnspam`` and ``/learnham``). Release and report-as-spam events are meant to
feed :func:`learn_messages` too.

A learner may decline a message without failing (rspamd: already learnt, or too few words to
learn from); those are counted as ``skipped``, apart from ``errors``, which fail the command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from mxgate.settings import ScannerSettings
from scanner import mime
from scanner.bayes_store import BayesStore
from scanner.engines.bayes import tokenize
from scanner.engines.common import ParsedMessage
from scanner.evaluate import Labelled

__all__ = ["learn_messages"]

_LEARNERS = ("spamassassin", "rspamd")


async def learn_messages(
    settings: ScannerSettings,
    messages: Sequence[Labelled],
    *,
    engines: Sequence[str] | None = None,
    progress: Callable[[], None] | None = None,
    concurrency: int = 4,
    bulk: bool = True,
) -> dict[str, Any]:
    """Learn ``messages`` into the Bayes store and each external learner; returns counts.

    ``bulk`` (a corpus, as ``mxgate train`` gives): rspamd learns every message, not only
    those its Bayes does not already classify; single corrections (release, report-as-spam)
    pass ``bulk=False`` so rspamd skips what it already knows.
    """
    from scanner.engines.registry import ENGINES

    wanted = list(engines if engines is not None else settings.engines)
    externals = [ENGINES[n].build(settings) for n in _LEARNERS if n in wanted]
    errors: dict[str, int] = {e.name: 0 for e in externals}
    skipped: dict[str, int] = {e.name: 0 for e in externals}
    first_error: dict[str, str] = {}
    parsed = []
    for i, m in enumerate(messages):
        parsed.append((mime.parse(m.raw, message_id=f"train-{i}", tenant="train"), m.is_spam))
    store = BayesStore(settings.spam.bayes_path)
    try:
        learnt = store.learn((list(tokenize(p)), s) for p, s in parsed)
        totals = store.totals()
    finally:
        store.close()
    sem = asyncio.Semaphore(concurrency)

    async def one(p: ParsedMessage, is_spam: bool) -> None:
        async with sem:
            for e in externals:
                try:
                    if e.name == "rspamd":  # the one learner with a bulk mode
                        took = await e.learn(p, is_spam, bulk=bulk)  # type: ignore[attr-defined]
                    else:
                        took = await e.learn(p, is_spam)  # type: ignore[attr-defined]
                except Exception as exc:
                    errors[e.name] += 1
                    # One example is enough to tell a down daemon from a bad password.
                    first_error.setdefault(e.name, repr(exc)[:300])
                else:
                    # None: a learner that does not say (spamd's TELL), so it learnt.
                    skipped[e.name] += took is False
            if progress is not None:
                progress()

    try:
        await asyncio.gather(*(one(p, s) for p, s in parsed))
    finally:
        for e in externals:
            await e.aclose()
    return {
        "bayes": {"learnt": learnt, "spam_total": totals[0], "ham_total": totals[1]},
        **{
            n: {
                "learnt": len(parsed) - errors[n] - skipped[n],
                "skipped": skipped[n],
                "errors": errors[n],
                **({"first_error": first_error[n]} if n in first_error else {}),
            }
            for n in errors
        },
    }
