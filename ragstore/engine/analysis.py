"""Text analysis for the lexical index: words, lower-cased, stopwords dropped, stemmed.

The settings are recorded in the store's config when its lexical index is made
(:data:`LEXICAL_DEFAULTS`), and a store is always analyzed with its recorded
settings: a query's terms must be cut exactly as the chunks' were. So a
stopword list, once named here, never changes; a new list gets a new name.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigMismatchError, InvalidInputError

__all__ = ["Analyzer", "LEXICAL_DEFAULTS", "STOPWORDS", "lexical_settings"]

# Unicode word segmentation by the regex \w+ (letters, digits, underscore of any
# script): no model, no dictionary, the same on every machine.
_WORD = re.compile(r"\w+")

# Lucene's English stop set (also that of bm25s): short, so that rare uses of
# common words ("to be or not to be") lose little; BM25's idf discounts the rest.
STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        "a an and are as at be but by for if in into is it no not of on or such that the their then there "
        "these they this to was will with".split()
    ),
    "none": frozenset(),
}

LEXICAL_DEFAULTS: dict[str, Any] = dict(
    version=1,  # of the postings layout (engine/lexical.py)
    words=r"\w+",
    lowercase=True,
    stopwords="en",
    stemmer="english",  # a Snowball language of PyStemmer, or None
    # BM25 (Lucene's formula); 1.2 / 0.75 are Lucene's and Elasticsearch's defaults
    k1=1.2,
    b=0.75,
)


def lexical_settings(given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The settings of a new lexical index: the defaults with ``given`` in their place, checked."""
    s = dict(LEXICAL_DEFAULTS)
    unknown = set(given or {}) - set(s)
    if unknown:
        raise InvalidInputError(f"unknown lexical setting(s) {', '.join(sorted(unknown))}; known: {', '.join(s)}")
    s.update(given or {})
    if s["stopwords"] not in STOPWORDS:
        raise InvalidInputError(f"stopwords must be one of {', '.join(STOPWORDS)}, got {s['stopwords']!r}")
    for name in ("k1", "b"):
        v = s[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (name == "b" and v > 1):
            raise InvalidInputError(f"BM25 {name} must be a number {'in 0..1' if name == 'b' else '>= 0'}, got {v!r}")
        s[name] = float(v)
    Analyzer(s)  # refuses an unknown stemmer language now, not at the first write
    return s


def _stemmer(language: str) -> Any:
    try:
        import Stemmer  # PyStemmer: Snowball stemmers in C
    except ImportError:  # pragma: no cover - a core dependency
        raise ConfigMismatchError(
            "the lexical index stems words with PyStemmer, which is not installed: pip install PyStemmer"
        ) from None
    try:
        return Stemmer.Stemmer(language)
    except (KeyError, ValueError):
        raise InvalidInputError(
            f"no Snowball stemmer for {language!r}; one of {', '.join(Stemmer.algorithms())}, or None"
        ) from None


@dataclass(frozen=True)
class _Key:
    words: str
    lowercase: bool
    stopwords: str
    stemmer: str | None


_CACHE: dict[_Key, Analyzer] = {}
_MEMO_MAX = 1_000_000  # words remembered per analyzer (~100 MB at most)


class Analyzer:
    """Text to terms as the store's settings say: ``terms(text)``, ``counts(text)``."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        if settings.get("words", r"\w+") != r"\w+":
            raise ConfigMismatchError(f"this ragstore segments words by \\w+ only, not {settings['words']!r}")
        self.lowercase = bool(settings.get("lowercase", True))
        name = settings.get("stopwords", "en")
        if name not in STOPWORDS:
            raise ConfigMismatchError(f"the store's stopword list {name!r} is unknown to this ragstore; upgrade it")
        self.stopwords = STOPWORDS[name]
        lang = settings.get("stemmer")
        self._stem = None if lang is None else _stemmer(lang).stemWord
        # word -> its term ("" for a stopword): a dict lookup is ~10x cheaper than a
        # stemmer call, and a corpus repeats its words (bounded by clearing)
        self._memo: dict[str, str] = {}

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> Analyzer:
        """One analyzer per distinct settings in a process (a stemmer keeps a cache of its words)."""
        key = _Key(settings.get("words", r"\w+"), bool(settings.get("lowercase", True)),
                   settings.get("stopwords", "en"), settings.get("stemmer"))
        a = _CACHE.get(key)
        if a is None:
            a = _CACHE[key] = cls(settings)
        return a

    def terms(self, text: str) -> list[str]:
        """The text's terms in order (repeats kept)."""
        words = _WORD.findall(text.lower() if self.lowercase else text)
        memo = self._memo
        try:
            return [t for t in map(memo.__getitem__, words) if t]
        except KeyError:
            pass
        if len(memo) > _MEMO_MAX:
            memo.clear()
        stop, stem = self.stopwords, self._stem
        for w in set(words).difference(memo):
            memo[w] = "" if w in stop else (stem(w) if stem is not None else w)
        return [t for t in map(memo.__getitem__, words) if t]

    def counts(self, text: str) -> tuple[Counter[str], int]:
        """(term -> occurrences, number of terms): a chunk's postings and its length."""
        t = self.terms(text)
        return Counter(t), len(t)
