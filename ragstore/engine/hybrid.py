"""The lexical and hybrid query paths: BM25 over the postings in LMDB, and its fusion with dense search.

Lexical: each query's terms' postings are read (one cursor walk a term), BM25
is accumulated per chunk id with numpy, and the ranked ids are resolved in
windows (chunk records, then documents when sources are asked for) until k
pass the filters; the hits come from the same resolution as dense hits
(:meth:`Searcher.hits`), so every hit has its continuation. Hybrid: the
dense and the lexical top ``fusion_depth`` are fused by reciprocal rank.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import lmdb
import numpy as np

from ..config import RRF_K, QueryOptions
from ..errors import InvalidInputError
from ..types import Hit
from .analysis import Analyzer
from .chunking import check_text
from .lexical import LexicalIndex, LexicalMissingError
from .records import ChunkRecord, Records
from .search import Plan, Searcher

__all__ = ["LexicalSearcher", "LexicalScores", "bm25_scores", "query_texts", "rrf_ids"]


@dataclasses.dataclass
class LexicalScores:
    """One query's BM25 scores: chunk ids and scores, best first (ties by chunk id)."""

    ids: np.ndarray
    scores: np.ndarray


def query_texts(queries: Any, mode: str) -> list[str]:
    """The query texts of a lexical or hybrid search (vectors have no words to match)."""
    if isinstance(queries, str):
        queries = [queries]
    if isinstance(queries, np.ndarray) or not all(isinstance(q, str) for q in queries):
        raise InvalidInputError(
            f"mode={mode!r} searches words, so it needs query texts, not vectors; search vectors with mode='dense'"
        )
    return [check_text(q, "query text") for q in queries]


def bm25_scores(index: LexicalIndex, txn: lmdb.Transaction, terms: Sequence[str], settings: dict[str, Any],
                limit: int | None = None) -> LexicalScores:
    """Exact BM25 (Lucene's formula) of every chunk holding a query term, best first.

    idf = ln(1 + (N - df + 0.5) / (df + 0.5)); a term's part of a chunk's score
    is idf * tf / (tf + k1 * (1 - b + b * len / avglen)); each distinct query
    term counts once. ``limit``: only the best ``limit`` are sorted.
    """
    n, total = index.stats(txn)
    empty = LexicalScores(np.zeros(0, np.uint64), np.zeros(0, np.float32))
    if n <= 0:
        return empty
    k1, b = float(settings["k1"]), float(settings["b"])
    avg = total / n if total else 1.0
    ids_parts, contrib_parts = [], []
    for term in dict.fromkeys(terms):
        p = index.postings(txn, term)
        if not p.df:
            continue
        idf = math.log(1.0 + (n - p.df + 0.5) / (p.df + 0.5))
        norm = np.float32(k1) * (np.float32(1 - b) + np.float32(b / avg) * p.length)
        ids_parts.append(p.ids)
        contrib_parts.append(np.float32(idf) * p.tf / (p.tf + norm))
    if not ids_parts:
        return empty
    if len(ids_parts) == 1:
        ids, scores = ids_parts[0], contrib_parts[0]  # a term's postings hold each chunk once
    else:
        uniq, inv = np.unique(np.concatenate(ids_parts), return_inverse=True)
        ids, scores = uniq, np.bincount(inv, weights=np.concatenate(contrib_parts)).astype(np.float32)
    if limit is not None and len(ids) > 4 * limit:
        # the best `limit` only; ties at the cut are broken by id below, as in a full sort
        cut = np.partition(-scores, limit - 1)[limit - 1]
        keep = -scores <= cut
        ids, scores = ids[keep], scores[keep]
    order = np.lexsort((ids, -scores))
    return LexicalScores(ids[order], scores[order])


class LexicalSearcher:
    """Lexical and hybrid searches; the caller holds a read transaction (and has caught the index up)."""

    def __init__(self, records: Records, lexical: LexicalIndex, searcher: Searcher) -> None:
        self.records = records
        self.lexical = lexical
        self.searcher = searcher

    def search(self, txn: lmdb.Transaction, texts: list[str], Q: np.ndarray | None, opts: QueryOptions,
               index_dtype: str) -> list[list[Hit]]:
        settings = self.lexical.settings(txn)
        if settings is None or self.records.lex_post is None:
            raise LexicalMissingError(
                f"the store at {self.records.path} has no lexical index (made before ragstore had it, or "
                "with lexical=False): build it with Store.index_lexical() or `ragstore index-lexical STORE`, "
                "or query with mode='dense'"
            )
        plan = Plan(opts, index_dtype, len(texts))
        analyzer = Analyzer.of(settings)
        if opts.mode == "lexical":
            return [self._lexical(txn, analyzer.terms(t), settings, plan.k, plan, ex)
                    for t, ex in zip(texts, plan.excluded, strict=True)]
        depth = opts.fusion_depth or max(50, 4 * plan.k)
        assert Q is not None  # the facade embeds the texts of a hybrid query
        dense = self.searcher.search(txn, Q, Plan(opts.replace(k=depth, mode="dense"), index_dtype, len(texts)))
        fused_all, pending = [], []
        for t, ex, dh in zip(texts, plan.excluded, dense, strict=True):
            lex = self._chosen(txn, analyzer.terms(t), settings, depth, plan, ex)
            fused = rrf_ids([[h.chunk_id for h in dh], [cid for _, cid, _ in lex]], plan.k)
            by_id = {h.chunk_id: h for h in dh}
            records = {cid: c for _, cid, c in lex}
            fused_all.append((fused, by_id))
            # only the fused hits the dense side did not resolve are resolved here (with continuations)
            pending.append([(score, cid, records[cid]) for cid, score in fused if cid not in by_id])
        resolved = self.searcher.hits(txn, pending)
        out = []
        for (fused, by_id), extra in zip(fused_all, resolved, strict=True):
            more = {h.chunk_id: h for h in extra}
            out.append([dataclasses.replace(by_id[cid], score=score) if cid in by_id else more[cid]
                        for cid, score in fused])
        return out

    def _lexical(self, txn: lmdb.Transaction, terms: list[str], settings: dict[str, Any], k: int, plan: Plan,
                 excluded: frozenset) -> list[Hit]:
        return self.searcher.hits(txn, [self._chosen(txn, terms, settings, k, plan, excluded)])[0]

    def _chosen(self, txn: lmdb.Transaction, terms: list[str], settings: dict[str, Any], k: int, plan: Plan,
                excluded: frozenset) -> list[tuple[float, int, ChunkRecord]]:
        """The best ``k`` chunks passing the filters: (BM25 score, chunk id, chunk record), best first."""
        scored = bm25_scores(self.lexical, txn, terms, settings, limit=None if (excluded or plan.shards) else k)
        ids = scored.ids.tolist()
        scores = scored.scores.tolist()
        want = None if plan.shards is None else set(plan.shards)
        chosen: list[tuple[float, int, ChunkRecord]] = []
        start, window = 0, max(k, 16)
        while len(chosen) < k and start < len(ids):
            part = ids[start: start + window]
            records = self.records.get_chunks(txn, part)
            docs = None
            if want is not None:
                docs = self.records.get_docs(txn, {c.doc_id for c in records.values()})
            for j, cid in enumerate(part, start):
                c = records.get(cid)
                if c is None or c.doc_id in excluded:
                    continue  # (no record: the postings of a damaged store; check() reports it)
                if docs is not None:
                    d = docs.get(c.doc_id)
                    if d is None or d.source not in want:  # type: ignore[operator]
                        continue
                chosen.append((scores[j], cid, c))
                if len(chosen) == k:
                    break
            start += window
            window *= 4  # filters that reject much: fewer, larger reads
        return chosen


def rrf_ids(rankings: Sequence[Sequence[int]], k: int) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion of chunk-id rankings: (chunk id, sum over rankings of 1 / (RRF_K + rank)),
    best first, ties by chunk id."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, cid in enumerate(ranking, 1):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (RRF_K + rank)
    best = sorted(fused, key=lambda cid: (-fused[cid], cid))[:k]
    return [(cid, fused[cid]) for cid in best]
