"""Filters and duplicate removal, applied to the journalled records in input order when the output is written:
length bounds, regular expressions, refusals, exact and near duplicates (MinHash-LSH from ``datasketch``). Every
removed record is counted under its filter's name."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

from oa_augment.config import DedupSettings, FilterSettings
from oa_augment.records import key_text

REFUSALS = (
    r"\bas an ai(?: language)? model\b", r"\bas a (?:large )?language model\b", r"\bi(?:'m| am) sorry,? but i (?:can(?:'t|not)|am unable|won't)\b",
    r"\bi can(?:'t|not) (?:help|assist|provide|fulfil+|comply|create|write) (?:with )?(?:that|this|you)\b",
    r"\bi(?:'m| am) (?:unable|not able) to (?:help|assist|provide|fulfil+|comply)\b", r"\bi apologi[sz]e,? but\b",
    r"\bi must (?:decline|refuse)\b",
)


class RecordFilter:
    """``check(row) -> filter name | None`` for one record (a native row)."""

    def __init__(self, settings: FilterSettings):
        self.s = settings
        self.drop = [re.compile(p) for p in settings.drop_patterns]
        self.keep = [re.compile(p) for p in settings.keep_patterns]
        refusals = (REFUSALS if settings.refusals else ()) + tuple(settings.refusal_patterns)
        self.refusal = re.compile("|".join(f"(?:{p})" for p in refusals), re.I) if refusals else None

    def check(self, row: dict[str, Any]) -> str | None:
        s = self.s
        if s.min_chars is not None or s.max_chars is not None:
            n = len(key_text(row, s.length_of).strip())
            if s.min_chars is not None and n < s.min_chars:
                return "too short"
            if s.max_chars is not None and n > s.max_chars:
                return "too long"
        if self.drop or self.keep:
            text = key_text(row, s.patterns_on)
            if any(p.search(text) for p in self.drop):
                return "drop_patterns"
            if not all(p.search(text) for p in self.keep):
                return "keep_patterns"
        if self.refusal is not None and self.refusal.search(key_text(row, "response")):
            return "refusal"
        return None


def normalise(text: str) -> str:
    return " ".join(text.casefold().split())


class Dedup:
    """Exact and near duplicates of the records seen so far (``check`` adds a record it keeps)."""

    def __init__(self, settings: DedupSettings):
        self.s = settings
        self.seen: set[str] = set()
        self.lsh = None
        self._count = 0
        self._hashes: dict[str, Any] = {}
        if settings.near:
            from datasketch import MinHashLSH

            self.lsh = MinHashLSH(threshold=settings.threshold, num_perm=settings.num_perm)

    def add_inputs(self, rows: Iterable[Any]) -> None:
        """Index input records (``against_input``) so that records repeating one count as duplicates."""
        for row in rows:
            self._add(normalise(key_text(row, self.s.compare)))

    def check(self, row: dict[str, Any]) -> str | None:
        text = normalise(key_text(row, self.s.compare))
        digest = hashlib.sha256(text.encode()).hexdigest()
        if self.s.exact and digest in self.seen:
            return "exact duplicate"
        if self.lsh is not None:
            mh = self._minhash(text)
            for other in self.lsh.query(mh):
                if mh.jaccard(self._hashes[other]) >= self.s.threshold:
                    return "near duplicate"
        self._add(text, digest)
        return None

    def _add(self, text: str, digest: str | None = None) -> None:
        self.seen.add(digest or hashlib.sha256(text.encode()).hexdigest())
        if self.lsh is not None:
            key = str(self._count)
            self._count += 1
            mh = self._minhash(text)
            self._hashes[key] = mh
            self.lsh.insert(key, mh)

    def _minhash(self, text: str):
        from datasketch import MinHash

        n = self.s.ngram
        shingles = {text[i : i + n] for i in range(max(1, len(text) - n + 1))}
        mh = MinHash(num_perm=self.s.num_perm, seed=1)
        mh.update_batch([s.encode() for s in sorted(shingles)])
        return mh
