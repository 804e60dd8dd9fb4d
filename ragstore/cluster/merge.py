"""Merging the shards' answers: cluster chunk ids, the global top-k, and hybrid fusion.

Each shard returns its own top k with exact scores (the shard store re-scores from its LMDB
vectors, or searches by brute force with ``exact=True``); the global top k is among the union
of those, so merging them by score is exact: the same hits and scores as one store holding
every document, ties broken by (document id, position).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..engine.hybrid import rrf_ids
from ..types import Hit
from .routing import global_chunk_id

__all__ = ["globalize", "merge_topk", "fuse_rrf"]


def globalize(hits: Sequence[Hit], shard: int, shards: int) -> list[Hit]:
    """A shard's hits with cluster chunk ids (see :func:`routing.global_chunk_id`)."""
    return [dataclasses.replace(h, chunk_id=global_chunk_id(h.chunk_id, shard, shards)) for h in hits]


def merge_topk(per_shard: Sequence[Sequence[Hit]], k: int) -> list[Hit]:
    """The best ``k`` of every shard's hits (already globalized): higher score first."""
    merged = [h for hits in per_shard for h in hits]
    merged.sort(key=lambda h: (-h.score, h.doc_id, h.position))
    return merged[:k]


def fuse_rrf(dense: Sequence[Hit], lexical: Sequence[Hit], k: int) -> list[Hit]:
    """Reciprocal-rank fusion of the global dense and lexical rankings (as ``mode="hybrid"``
    fuses one store's), scores replaced by the fused ones."""
    by_id = {h.chunk_id: h for h in lexical}
    by_id.update({h.chunk_id: h for h in dense})
    fused = rrf_ids([[h.chunk_id for h in dense], [h.chunk_id for h in lexical]], k)
    return [dataclasses.replace(by_id[cid], score=score) for cid, score in fused]
