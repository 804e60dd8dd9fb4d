"""RETRO's leakage analysis: how much of a query chunk its neighbours contain.

Leakage of a neighbour is the longest common contiguous token run between the
query chunk and the neighbour (with its continuation), as a fraction of the
chunk (:func:`longest_common_run`, :func:`leakage`).
:func:`~ragstore.retrieval.retro.retrieve_sequence` filters with the metric
(``max_overlap=``), and :func:`~ragstore.retrieval.retro.leakage_report`
gives its distribution over many sequences (:class:`LeakageReport`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..types import Hit

__all__ = ["longest_common_run", "leakage", "LeakageReport"]


# --------------------------------------------------------------------------- leakage
def longest_common_run(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common contiguous run of tokens of ``a`` and ``b``."""
    short = np.asarray(a, dtype=np.int64).reshape(-1)
    long = np.asarray(b, dtype=np.int64).reshape(-1)
    if len(short) == 0 or len(long) == 0:
        return 0
    if len(short) > len(long):
        short, long = long, short
    prev = np.zeros(len(long) + 1, dtype=np.int32)
    cur = np.zeros_like(prev)
    best = 0
    for x in short.tolist():
        eq = long == x
        cur[0] = 0
        np.multiply(prev[:-1] + 1, eq, out=cur[1:])
        m = int(cur.max())
        if m > best:
            best = m
        prev, cur = cur, prev
    return best


def leakage(chunk_ids: Sequence[int], neighbour_ids: Sequence[int]) -> float:
    """RETRO's leakage of a neighbour: longest common token run / chunk length (0..1)."""
    n = len(chunk_ids)
    if n == 0:
        return 0.0
    return min(1.0, longest_common_run(chunk_ids, neighbour_ids) / n)


def _neighbour_text(hit: Hit, with_continuation: bool) -> str:
    if with_continuation and hit.continuation:
        return hit.text + " " + hit.continuation
    return hit.text


# --------------------------------------------------------------------------- leakage report
@dataclass(frozen=True)
class LeakageReport:
    """Distribution of neighbour leakage over a set of query chunks.

    ``pair_values``: leakage of each (query chunk, neighbour) pair;
    ``chunk_values``: per query chunk, the maximum over its neighbours
    (RETRO's filter criterion). ``histogram`` counts ``chunk_values`` in
    ``bin_edges``; ``quantiles`` and ``run_tokens_quantiles`` (the longest
    common run in tokens) are over ``chunk_values``.
    """

    n_chunks: int
    n_pairs: int
    mean: float
    quantiles: dict[float, float]
    run_tokens_quantiles: dict[float, float]
    bin_edges: list[float]
    histogram: list[int]
    pair_values: np.ndarray = field(repr=False)
    chunk_values: np.ndarray = field(repr=False)
    chunk_runs: np.ndarray = field(repr=False)

    def fraction_above(self, threshold: float) -> float:
        """Share of query chunks whose most-leaking neighbour exceeds ``threshold``."""
        if self.n_chunks == 0:
            return 0.0
        return float((self.chunk_values > threshold).mean())

    def summary(self) -> str:
        q = ", ".join(f"p{int(p * 100)}={v:.3f}" for p, v in self.quantiles.items())
        t = ", ".join(f"p{int(p * 100)}={v:.0f}" for p, v in self.run_tokens_quantiles.items())
        lines = [
            f"{self.n_chunks} query chunks, {self.n_pairs} neighbour pairs; mean max-leakage {self.mean:.3f}",
            f"quantiles of max-leakage per chunk: {q}",
            f"longest common run in tokens: {t}",
            "histogram (max-leakage per chunk):",
        ]
        total = max(1, sum(self.histogram))
        for lo, hi, c in zip(self.bin_edges[:-1], self.bin_edges[1:], self.histogram, strict=True):
            lines.append(f"  [{lo:.1f}, {hi:.1f}{']' if hi >= 1.0 else ')'} {c:6d} {'#' * round(40 * c / total)}")
        return "\n".join(lines)

    __str__ = summary

