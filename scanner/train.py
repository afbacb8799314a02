"""Teach every learning engine at once: ``mxgate train --ham DIR --spam DIR``.

Learners: the in-process Bayes (always; its rocksdict store is opened for writing) and the
enabled external engines that can learn (SpamAssassin through spamd's TELL, rspamd through its
controller). Release and report-as-spam events are meant to feed :func:`learn_messages` too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from mxgate.settings import ScannerSettings
from scanner import mime
from scanner.bayes_store import BayesStore
from scanner.engines.base import ParsedMessage
from scanner.engines.bayes import tokenize
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
) -> dict[str, Any]:
    """Learn ``messages`` into the Bayes store and each external learner; returns counts."""
    from scanner.engines.registry import ENGINES

    wanted = list(engines if engines is not None else settings.engines)
    externals = [ENGINES[n](settings) for n in _LEARNERS if n in wanted]
    errors: dict[str, int] = {e.name: 0 for e in externals}
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
                    await e.learn(p, is_spam)  # type: ignore[attr-defined]
                except Exception:
                    errors[e.name] += 1
            if progress is not None:
                progress()

    try:
        await asyncio.gather(*(one(p, s) for p, s in parsed))
    finally:
        for e in externals:
            await e.aclose()
    return {
        "bayes": {"learnt": learnt, "spam_total": totals[0], "ham_total": totals[1]},
        **{n: {"learnt": len(parsed) - errors[n], "errors": errors[n]} for n in errors},
    }
