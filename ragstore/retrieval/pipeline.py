"""Retrieval as MassiveDS uses it: domains and the reordered pipeline.

MassiveDS (Shao et al., 2024) builds one index over everything once, then, for
each query, retrieves a deep candidate list and applies what would otherwise
be datastore-construction steps to the candidates only: deduplication,
decontamination, subsampling (a simulated smaller datastore), filtering, then
reranking and top-k. Because subsampling is decided per chunk (not per
query), the result equals retrieval from a datastore that kept each chunk with
probability ``p``, as long as the candidate list is deep enough.

- :func:`domains`: what each source (domain, an index shard) holds.
- :func:`merge_hits`: merge per-domain result lists by score.
- :class:`Pipeline`: the reordered pipeline, with per-stage counts.
- :class:`EmbeddingReranker`: CompactDS's second stage (exact re-embedding).
- :func:`scaling_study`, :func:`answer_recall`, :func:`plot_scaling`:
  answer-string recall@k as a function of the subsampling rate ``p``
  (defined in :mod:`.scaling`, importable from here).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError
from ..types import Hit
from .scaling import ScalingResult, answer_recall, plot_scaling, scaling_study

if TYPE_CHECKING:
    from .lm_tokenizer import LMTokenizer

__all__ = [
    "DomainInfo",
    "domains",
    "merge_hits",
    "word_ngrams",
    "minhash_signature",
    "subsample_keep",
    "EmbeddingReranker",
    "PipelineResult",
    "Pipeline",
    "answer_recall",
    "ScalingResult",
    "scaling_study",
    "plot_scaling",
]

# --------------------------------------------------------------------------- domains
@dataclass(frozen=True)
class DomainInfo:
    """One source (domain) of a store: it has its own index shard."""

    name: str  # "" for documents added without a source
    documents: int
    chunks: int
    share: float  # of all chunks


def domains(store: Any) -> dict[str, DomainInfo]:
    """Per-source summary (documents, chunks, share of chunks), largest first."""
    counts = store.sources()
    total = sum(counts.values()) or 1
    out = {}
    for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if n <= 0:
            continue
        ndocs = sum(1 for _ in store.doc_ids(source=name or None)) if name else _count_unsourced(store)
        out[name] = DomainInfo(name=name, documents=ndocs, chunks=int(n), share=n / total)
    return out


def _count_unsourced(store: Any) -> int:
    sourced = sum(1 for s in store.sources() if s for _ in store.doc_ids(source=s))
    return len(store) - sourced


def merge_hits(results: Iterable[Sequence[Hit]], k: int) -> list[Hit]:
    """Merge result lists (per domain, or per store) by score; ties by chunk id.

    A chunk found in several lists is kept once. This is what
    ``store.query(sources=[...])`` does across shards; it is exposed for
    results searched separately (other stores, other processes).
    """
    best: dict[tuple[str, int], Hit] = {}
    for hits in results:
        for h in hits:
            key = (h.doc_id, h.chunk_id)
            if key not in best or h.score > best[key].score:
                best[key] = h
    return sorted(best.values(), key=lambda h: (-h.score, h.chunk_id))[:k]


# --------------------------------------------------------------------------- n-grams
_WORD = re.compile(r"\w+")
_MASK64 = (1 << 64) - 1
_word_cache: dict[str, int] = {}


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _word_hash(w: str) -> int:
    h = _word_cache.get(w)
    if h is None:
        h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
        if len(_word_cache) < 1_000_000:
            _word_cache[w] = h
    return h


def word_ngrams(text: str, n: int = 13) -> np.ndarray:
    """Sorted unique 64-bit hashes of the lower-cased word ``n``-grams of ``text``.

    A text of fewer than ``n`` words (but at least one) is one gram of all its
    words; an empty text has none.
    """
    words = _words(text)
    if not words:
        return np.zeros(0, dtype=np.uint64)
    wh = np.array([_word_hash(w) for w in words], dtype=np.uint64)
    m = min(n, len(wh))
    g = np.zeros(len(wh) - m + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(m):  # polynomial hash with wrap-around: order matters
            g = g * np.uint64(1_000_003) + wh[j : j + len(g)]
    return np.unique(g)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def minhash_signature(grams: np.ndarray, num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """MinHash signature (``num_perm`` uint64) of a set of 64-bit gram hashes.

    Permutations are ``splitmix64(gram XOR salt_i)`` with salts drawn from
    ``seed``: the same text gets the same signature in every run.
    """
    salts = np.random.default_rng(seed).integers(0, 2**63, size=num_perm, dtype=np.int64).astype(np.uint64)
    if len(grams) == 0:
        return np.full(num_perm, np.iinfo(np.uint64).max, dtype=np.uint64)
    return _splitmix64(grams[None, :] ^ salts[:, None]).min(axis=1)


def subsample_keep(chunk_ids: Sequence[int] | np.ndarray, p: float, seed: int = 0) -> np.ndarray:
    """Whether each chunk survives subsampling at rate ``p`` with ``seed``.

    ``hash(seed, chunk_id) < p``: a chunk's fate depends on the chunk only, so
    it is the same for every query (a consistent smaller datastore), and the
    chunks kept at ``p`` are a subset of those kept at any larger ``p``.
    """
    if not 0.0 <= float(p) <= 1.0:
        raise InvalidInputError(f"subsample rate must be in [0, 1], got {p!r}")
    ids = np.asarray(chunk_ids, dtype=np.uint64).reshape(-1)
    salt = np.uint64(int.from_bytes(hashlib.blake2b(str(int(seed)).encode(), digest_size=8).digest(), "little"))
    u = (_splitmix64(ids ^ salt) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return u < float(p)


# --------------------------------------------------------------------------- reranking
class EmbeddingReranker:
    """Rescore candidates by cosine between exact embeddings of another embedder.

    CompactDS's second stage: the first stage (the store's approximate index)
    proposes candidates; this embeds the query and the candidate texts with
    ``embedder`` (any object with ``encode(texts) -> array``, e.g. a ragstore
    embedder) and scores them by cosine similarity.
    """

    def __init__(self, embedder: Any, *, with_continuation: bool = False, batch_size: int = 64) -> None:
        if not hasattr(embedder, "encode"):
            raise InvalidInputError("embedder must have encode(texts) -> array")
        self.embedder = embedder
        self.with_continuation = with_continuation
        self.batch_size = batch_size

    def _encode(self, texts: list[str]) -> np.ndarray:
        parts = [
            np.asarray(self.embedder.encode(texts[i : i + self.batch_size]), dtype=np.float32)
            for i in range(0, len(texts), self.batch_size)
        ]
        v = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
        n = np.linalg.norm(v, axis=1, keepdims=True)
        return v / np.where(n == 0, 1.0, n)

    def __call__(self, query: str, hits: Sequence[Hit]) -> np.ndarray:
        if not hits:
            return np.zeros(0, dtype=np.float32)
        texts = [
            h.text + (" " + h.continuation if self.with_continuation and h.continuation else "") for h in hits
        ]
        v = self._encode([query] + texts)
        return v[1:] @ v[0]


def _as_reranker(rerank: Any) -> Callable[[str, Sequence[Hit]], Any] | None:
    if rerank is None:
        return None
    if hasattr(rerank, "encode") and hasattr(rerank, "dim"):
        return EmbeddingReranker(rerank)
    if callable(rerank):
        return rerank
    raise InvalidInputError("rerank must be None, a callable (query, hits) -> scores, or an embedder")


# --------------------------------------------------------------------------- the pipeline
@dataclass(frozen=True)
class PipelineResult:
    """The top-k after the pipeline, and what each stage did.

    ``dropped[stage]``: candidates removed by that stage (stages not run are
    absent). ``trace``: (stage, candidates in, candidates out) in order.
    ``hits`` carry the rerank score as ``score`` when a reranker ran; the
    first-stage scores are in ``retrieval_scores`` (by chunk id).
    """

    query: str
    hits: list[Hit]
    candidates: int
    dropped: dict[str, int]
    trace: list[tuple[str, int, int]]
    retrieval_scores: dict[int, float] = field(default_factory=dict, repr=False)

    def summary(self) -> str:
        steps = " -> ".join(f"{name} -{self.dropped[name]}" for name, _, _ in self.trace if name in self.dropped)
        return f"{self.candidates} candidates: {steps} -> {len(self.hits)} hits"


class Pipeline:
    """MassiveDS's reordered pipeline over a deep candidate list.

    ``Pipeline(fetch_k=1000, k=10, dedup=None, decontaminate=False,
    references=(), subsample=None, seed=0, min_chars=None, min_tokens=None,
    rerank=None)``; stages run in this order, each only when configured:

    1. ``dedup``: ``"minhash"`` (MinHash over ``ngram``-word shingles, 13 by
       default, ``num_perm`` permutations from ``dedup_seed``; estimated
       Jaccard >= ``dedup_threshold``) or ``"exact"`` (exact shingle
       Jaccard >= ``dedup_threshold``, default 0.8). Candidates are scanned
       best first, so the best-ranked copy is kept.
    2. ``decontaminate=True`` (against the query) and/or ``references=[texts]``
       (e.g. the evaluation set): drop a candidate whose ``ngram``-gram Jaccard
       with the query or a reference is >= ``decon_threshold`` (0.8), or, with
       ``decon_span=N``, that shares a run of N or more words with one.
    3. ``subsample=p``: keep a chunk iff ``hash(seed, chunk_id) < p``
       (:func:`subsample_keep`): the same chunks for every query.
    4. ``min_chars`` / ``min_tokens``: drop shorter chunks (tokens of
       ``tokenizer``, default the store's).
    5. ``rerank``: a callable ``(query, hits) -> scores`` or an embedder
       (:class:`EmbeddingReranker`), applied to the surviving candidates (the
       best ``rerank_top`` of them when given).
    6. top ``k``.

    ``run(store, query)`` / ``run_many(store, queries)`` retrieve ``fetch_k``
    candidates with ``store.query_many`` (``sources=``, other query options via
    ``query_kwargs``); ``apply(query, candidates)`` runs the stages on a
    candidate list you already have.
    """

    def __init__(
        self,
        fetch_k: int = 1000,
        k: int = 10,
        *,
        dedup: str | None = None,
        dedup_threshold: float = 0.8,
        num_perm: int = 128,
        dedup_seed: int = 1,
        ngram: int = 13,
        decontaminate: bool = False,
        references: Sequence[str] = (),
        decon_threshold: float | None = 0.8,
        decon_span: int | None = None,
        subsample: float | None = None,
        seed: int = 0,
        min_chars: int | None = None,
        min_tokens: int | None = None,
        tokenizer: Any = None,
        rerank: Any = None,
        rerank_top: int | None = None,
        sources: Sequence[str] | None = None,
        query_kwargs: dict | None = None,
    ) -> None:
        for name, v in (("fetch_k", fetch_k), ("k", k)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {v!r}")
        if k > fetch_k:
            raise InvalidInputError(f"k ({k}) must not exceed fetch_k ({fetch_k})")
        if dedup not in (None, "minhash", "exact"):
            raise InvalidInputError(f"dedup must be None, 'minhash' or 'exact', got {dedup!r}")
        if not 0.0 < dedup_threshold <= 1.0:
            raise InvalidInputError(f"dedup_threshold must be in (0, 1], got {dedup_threshold!r}")
        if subsample is not None and not 0.0 <= float(subsample) <= 1.0:
            raise InvalidInputError(f"subsample must be a probability in [0, 1], got {subsample!r}")
        if decon_span is not None and (not isinstance(decon_span, int) or decon_span < 1):
            raise InvalidInputError(f"decon_span must be a positive integer, got {decon_span!r}")
        if isinstance(references, str):
            references = [references]
        self.fetch_k = fetch_k
        self.k = k
        self.dedup = dedup
        self.dedup_threshold = float(dedup_threshold)
        self.num_perm = num_perm
        self.dedup_seed = dedup_seed
        self.ngram = ngram
        self.decontaminate = decontaminate
        self.references = list(references)
        self.decon_threshold = decon_threshold
        self.decon_span = decon_span
        self.subsample = subsample
        self.seed = seed
        self.min_chars = min_chars
        self.min_tokens = min_tokens
        self.tokenizer = tokenizer
        self.reranker = _as_reranker(rerank)
        self.rerank_top = rerank_top
        self.sources = sources
        self.query_kwargs = dict(query_kwargs or {})
        self._ref_index = self._index_references(self.references)
        self._tok: LMTokenizer | None = None

    def replace(self, **changes: Any) -> Pipeline:
        """A copy with some options changed (e.g. ``subsample=0.25``)."""
        opts = {
            name: getattr(self, name)
            for name in (
                "fetch_k", "k", "dedup", "dedup_threshold", "num_perm", "dedup_seed", "ngram",
                "decontaminate", "references", "decon_threshold", "decon_span", "subsample", "seed",
                "min_chars", "min_tokens", "tokenizer", "rerank_top", "sources", "query_kwargs",
            )
        }
        opts["rerank"] = self.reranker
        opts.update(changes)
        return Pipeline(**opts)

    # -- reference texts for decontamination ---------------------------------
    def _index_references(self, refs: list[str]):
        if not refs:
            return None
        inverted: dict[int, list[int]] = {}
        sizes = []
        spans: set[int] = set()
        for r, text in enumerate(refs):
            g = word_ngrams(text, self.ngram)
            sizes.append(len(g))
            for x in g.tolist():
                inverted.setdefault(x, []).append(r)
            if self.decon_span and len(_words(text)) >= self.decon_span:
                spans.update(word_ngrams(text, self.decon_span).tolist())
        return inverted, sizes, spans

    # -- running ---------------------------------------------------------------
    def run(self, store: Any, query: str, **query_kwargs: Any) -> PipelineResult:
        return self.run_many(store, [query], **query_kwargs)[0]

    def run_many(self, store: Any, queries: Sequence[str], **query_kwargs: Any) -> list[PipelineResult]:
        kw = {**self.query_kwargs, **query_kwargs}
        if self.sources is not None:
            kw.setdefault("sources", self.sources)
        cands = store.query_many(list(queries), self.fetch_k, **kw)
        if self.min_tokens is not None and self._tok is None:
            from .retro import as_tokenizer

            self._tok = as_tokenizer(self.tokenizer if self.tokenizer is not None else store.chunker)
        return [self.apply(q, c) for q, c in zip(queries, cands, strict=True)]

    def apply(self, query: str, candidates: Sequence[Hit]) -> PipelineResult:
        """Run the stages on ``candidates`` (best first, as a query returns them)."""
        hits = list(candidates)
        n0 = len(hits)
        dropped: dict[str, int] = {}
        trace: list[tuple[str, int, int]] = []
        retrieval_scores = {h.chunk_id: h.score for h in hits}

        def stage(name: str, new: list[Hit]) -> list[Hit]:
            dropped[name] = len(hits) - len(new)
            trace.append((name, len(hits), len(new)))
            return new

        if self.dedup:
            hits = stage("dedup", self._dedup(hits))
        if self.decontaminate or self._ref_index is not None:
            hits = stage("decontaminate", self._decontaminate(query, hits))
        if self.subsample is not None:
            keep = subsample_keep([h.chunk_id for h in hits], self.subsample, self.seed)
            hits = stage("subsample", [h for h, kp in zip(hits, keep, strict=True) if kp])
        if self.min_chars is not None or self.min_tokens is not None:
            hits = stage("min_length", self._min_length(hits))
        if self.reranker is not None:
            top = hits if self.rerank_top is None else hits[: self.rerank_top]
            scores = np.asarray(self.reranker(query, top), dtype=np.float64).reshape(-1)
            if len(scores) != len(top):
                raise InvalidInputError(f"reranker returned {len(scores)} scores for {len(top)} candidates")
            order = sorted(range(len(top)), key=lambda i: (-scores[i], i))
            hits = stage("rerank", [dataclasses.replace(top[i], score=float(scores[i])) for i in order])
        hits = stage("top_k", hits[: self.k])
        return PipelineResult(query, hits, n0, dropped, trace, retrieval_scores)

    # -- stages ------------------------------------------------------------------
    def _dedup(self, hits: list[Hit]) -> list[Hit]:
        grams = [word_ngrams(h.text, self.ngram) for h in hits]
        kept: list[Hit] = []
        if self.dedup == "minhash":
            sigs = np.zeros((len(hits), self.num_perm), dtype=np.uint64)
            n = 0
            for h, g in zip(hits, grams, strict=True):
                sig = minhash_signature(g, self.num_perm, self.dedup_seed)
                if len(g) and n and (sigs[:n] == sig).mean(axis=1).max() >= self.dedup_threshold:
                    continue
                sigs[n] = sig
                n += 1
                kept.append(h)
            return kept
        inverted: dict[int, list[int]] = {}
        sizes: list[int] = []
        for h, g in zip(hits, grams, strict=True):
            gl = g.tolist()
            shared = Counter(j for x in gl for j in inverted.get(x, ()))
            if any(c / (len(gl) + sizes[j] - c) >= self.dedup_threshold for j, c in shared.items()):
                continue
            j = len(sizes)
            sizes.append(len(gl))
            for x in gl:
                inverted.setdefault(x, []).append(j)
            kept.append(h)
        return kept

    def _decontaminate(self, query: str, hits: list[Hit]) -> list[Hit]:
        qg = set(word_ngrams(query, self.ngram).tolist()) if self.decontaminate else set()
        q_span: set[int] = set()
        if self.decontaminate and self.decon_span and len(_words(query)) >= self.decon_span:
            q_span = set(word_ngrams(query, self.decon_span).tolist())
        ref = self._ref_index
        out = []
        for h in hits:
            g = word_ngrams(h.text, self.ngram).tolist()
            bad = False
            if self.decon_threshold is not None and g:
                if qg:
                    c = len(qg.intersection(g))
                    bad = c / (len(qg) + len(g) - c) >= self.decon_threshold
                if not bad and ref is not None:
                    inverted, sizes, _ = ref
                    shared = Counter(r for x in g for r in inverted.get(x, ()))
                    bad = any(c / (len(g) + sizes[r] - c) >= self.decon_threshold for r, c in shared.items())
            if not bad and self.decon_span and (q_span or (ref is not None and ref[2])):
                if len(_words(h.text)) >= self.decon_span:
                    sg = word_ngrams(h.text, self.decon_span).tolist()
                    bad = any(x in q_span for x in sg) or (ref is not None and any(x in ref[2] for x in sg))
            if not bad:
                out.append(h)
        return out

    def _min_length(self, hits: list[Hit]) -> list[Hit]:
        out = []
        for h in hits:
            if self.min_chars is not None and len(h.text.strip()) < self.min_chars:
                continue
            if self.min_tokens is not None:
                if self._tok is None:
                    if self.tokenizer is None:
                        raise InvalidInputError("min_tokens needs tokenizer= when apply() is used without a store")
                    from .retro import as_tokenizer

                    self._tok = as_tokenizer(self.tokenizer)
                if self._tok.count(h.text) < self.min_tokens:
                    continue
            out.append(h)
        return out
