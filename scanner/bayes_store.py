"""Token counts of the in-process Bayes classifier, kept in rocksdict.

Key ``t:<token>`` -> 8 bytes: spam count, ham count (two little-endian uint32). Key
``meta:nspam`` / ``meta:nham`` -> messages learnt of each class. Learning a batch adds up
counts in memory and writes them in one WriteBatch, so a corpus trains in seconds.

rocksdict allows one writer process per directory: the scanner opens it read-only by default
(``mxgate train`` writes), and :meth:`BayesStore.reload` picks up what training wrote.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from rocksdict import AccessType, Options, Rdict, WriteBatch

__all__ = ["BayesStore"]

_PAIR = struct.Struct("<II")
_NSPAM = b"meta:nspam"
_NHAM = b"meta:nham"


class BayesStore:
    """Spam/ham counts per token, and of messages learnt."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        """Open (creating unless ``readonly``) the store at ``path``."""
        self.path = Path(path)
        self.readonly = readonly
        self._db = self._open()

    def _open(self) -> Rdict:
        opts = Options(raw_mode=True)
        if self.readonly:
            if not self.path.exists():
                self.path.mkdir(parents=True, exist_ok=True)
                Rdict(str(self.path), options=Options(raw_mode=True)).close()
            return Rdict(str(self.path), options=opts, access_type=AccessType.read_only())
        self.path.mkdir(parents=True, exist_ok=True)
        return Rdict(str(self.path), options=opts)

    def reload(self) -> None:
        """Reopen, to see what another process learnt since."""
        self._db.close()
        self._db = self._open()

    def totals(self) -> tuple[int, int]:
        """(spam messages, ham messages) learnt."""
        return _int(self._db.get(_NSPAM)), _int(self._db.get(_NHAM))

    def counts(self, tokens: list[str]) -> list[tuple[int, int]]:
        """(spam, ham) count of each token, in order (0, 0 for unknown ones)."""
        if not tokens:
            return []
        values = self._db[[b"t:" + t.encode("utf-8", "replace") for t in tokens]]
        if values is None:
            return [(0, 0)] * len(tokens)
        return [_PAIR.unpack(v) if v else (0, 0) for v in values]

    def learn(self, messages: Iterable[tuple[Iterable[str], bool]]) -> int:
        """Add each (token set, is_spam); returns how many messages were learnt."""
        spam: Counter[str] = Counter()
        ham: Counter[str] = Counter()
        n_spam = n_ham = 0
        for tokens, is_spam in messages:
            uniq = set(tokens)
            if is_spam:
                spam.update(uniq)
                n_spam += 1
            else:
                ham.update(uniq)
                n_ham += 1
        keys = list(set(spam) | set(ham))
        old = self.counts(keys)
        wb = WriteBatch(raw_mode=True)
        for k, (s, h) in zip(keys, old, strict=True):
            wb.put(b"t:" + k.encode("utf-8", "replace"), _PAIR.pack(s + spam[k], h + ham[k]))
        ts, th = self.totals()
        wb.put(_NSPAM, str(ts + n_spam).encode())
        wb.put(_NHAM, str(th + n_ham).encode())
        self._db.write(wb)
        self._db.flush()
        return n_spam + n_ham

    def close(self) -> None:
        """Close the database."""
        self._db.close()


def _int(v: bytes | None) -> int:
    return int(v) if v else 0
