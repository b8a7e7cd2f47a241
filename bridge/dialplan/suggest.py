"""Which categories a request's wording points to, from the plan's keywords.

Chinese has no spaces between words, so a keyword matches wherever it occurs as a substring.
Text and keywords are NFKC-normalised (full-width letters and digits become ASCII) and
lower-cased first. A category scores one point per keyword found, except that a keyword found
only as part of a longer keyword of the same category also found (停车 inside 违章停车) does not
count again. Ties go to the category whose hits cover more characters, then to plan order.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass


def normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class Suggestion:
    category: str
    score: int
    keywords: tuple[str, ...]


class KeywordIndex:
    def __init__(self, categories: Iterable[tuple[str, Iterable[str]]]) -> None:
        self._categories: list[tuple[str, tuple[str, ...]]] = []
        for key, keywords in categories:
            # Longest first (then plan order), so a short keyword inside a longer hit is skipped.
            unique = dict.fromkeys(normalise(k) for k in keywords if k.strip())
            self._categories.append((key, tuple(sorted(unique, key=len, reverse=True))))

    def suggest(self, text: str) -> list[Suggestion]:
        """Categories with at least one hit, best first."""
        wanted = normalise(text)
        ranked: list[tuple[int, int, int, Suggestion]] = []
        for order, (key, keywords) in enumerate(self._categories):
            hits: list[str] = []
            for keyword in keywords:
                if keyword in wanted and not any(keyword in longer for longer in hits):
                    hits.append(keyword)
            if hits:
                covered = sum(len(k) for k in hits)
                found = Suggestion(category=key, score=len(hits), keywords=tuple(hits))
                ranked.append((-len(hits), -covered, order, found))
        ranked.sort(key=lambda item: item[:3])
        return [item[3] for item in ranked]
