"""The datastore scaling study: answer recall@k as the datastore is subsampled.

MassiveDS's reordering makes this cheap: candidates are retrieved once and the
:class:`~ragstore.retrieval.pipeline.Pipeline` is re-applied with
``subsample=p`` for each rate ``p`` (:func:`scaling_study`, giving a
:class:`ScalingResult`); :func:`answer_recall` scores result lists against
answer strings and :func:`plot_scaling` draws the curve (needs matplotlib).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError
from ..types import Hit

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = ["answer_recall", "ScalingResult", "scaling_study", "plot_scaling"]


# --------------------------------------------------------------------------- scaling study
def _contains_answer(text: str, answers: Sequence[str]) -> bool:
    t = " ".join(text.lower().split())
    return any(" ".join(a.lower().split()) in t for a in answers if a.strip())


def answer_recall(results: Sequence[Sequence[Hit]], answers: Sequence[Any], k: int | None = None) -> float:
    """Fraction of queries where any of the top-``k`` chunks contains an answer string.

    ``answers[i]``: a string or a list of acceptable strings (case and
    whitespace are normalized).
    """
    if len(results) != len(answers):
        raise InvalidInputError(f"{len(results)} result lists for {len(answers)} answers")
    if not results:
        return 0.0
    hit = 0
    for hits, ans in zip(results, answers, strict=True):
        ans = [ans] if isinstance(ans, str) else list(ans)
        top = hits if k is None else list(hits)[:k]
        hit += any(_contains_answer(h.text, ans) for h in top)
    return hit / len(results)


@dataclass(frozen=True)
class ScalingResult:
    """Answer-string recall@k per subsampling rate (mean over seeds)."""

    ps: list[float]
    recall: list[float]
    per_seed: list[list[float]]  # [len(ps)][len(seeds)]
    seeds: list[int]
    k: int
    fetch_k: int
    n_queries: int
    store_chunks: int | None = None

    def table(self) -> str:
        lines = [f"     p   ~chunks   recall@{self.k}"]
        for p, r in zip(self.ps, self.recall, strict=True):
            n = f"{round(p * self.store_chunks):>9,}" if self.store_chunks else "        ?"
            lines.append(f"{p:6.3f} {n}   {r:8.3f}")
        return "\n".join(lines)

    __str__ = table


def scaling_study(
    store: Any,
    queries: Sequence[str],
    answers: Sequence[Any],
    ps: Sequence[float] = (0.01, 0.03, 0.1, 0.3, 1.0),
    *,
    k: int = 5,
    fetch_k: int = 200,
    seeds: Sequence[int] = (0,),
    pipeline: Pipeline | None = None,
    plot: str | None = None,
    **query_kwargs: Any,
) -> ScalingResult:
    """Recall@k of answer strings as the datastore is subsampled to rate ``p``.

    Candidates are retrieved once (``fetch_k`` per query) and the pipeline
    (``pipeline``, default a plain one) is re-applied with ``subsample=p`` for
    each ``p`` and seed: MassiveDS's reordering, no index is rebuilt. With
    ``plot=PATH`` a PNG is written by :func:`plot_scaling` (needs matplotlib).
    """
    # the pipeline module re-exports this one's names, so it is imported on use
    from .pipeline import Pipeline

    if len(queries) != len(answers):
        raise InvalidInputError(f"{len(queries)} queries for {len(answers)} answers")
    base = pipeline if pipeline is not None else Pipeline(fetch_k=fetch_k, k=k)
    base = base.replace(fetch_k=fetch_k, k=k)
    kw = {**base.query_kwargs, **query_kwargs}
    if base.sources is not None:
        kw.setdefault("sources", base.sources)
    cands = store.query_many(list(queries), fetch_k, **kw) if queries else []
    if base.min_tokens is not None:
        from .retro import as_tokenizer

        base._tok = as_tokenizer(base.tokenizer if base.tokenizer is not None else store.chunker)
    per_seed: list[list[float]] = []
    for p in ps:
        row = []
        for s in seeds:
            pl = base.replace(subsample=float(p), seed=s)
            pl._tok = base._tok
            res = [pl.apply(q, c).hits for q, c in zip(queries, cands, strict=True)]
            row.append(answer_recall(res, answers, k))
        per_seed.append(row)
    try:
        n_chunks = int(sum(store.sources().values()))
    except Exception:
        n_chunks = None
    result = ScalingResult(
        ps=[float(p) for p in ps],
        recall=[float(np.mean(r)) for r in per_seed],
        per_seed=per_seed,
        seeds=list(seeds),
        k=k,
        fetch_k=fetch_k,
        n_queries=len(queries),
        store_chunks=n_chunks,
    )
    if plot:
        plot_scaling(result, plot)
    return result


def plot_scaling(result: ScalingResult, path: str, *, title: str | None = None) -> str | None:
    """Write recall@k against datastore size as a PNG; None (and a warning) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn(
            f"matplotlib is not installed: the scaling plot {path} was not written "
            "(pip install matplotlib to get it; the numbers are in the returned ScalingResult)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    xs = [p * result.store_chunks for p in result.ps] if result.store_chunks else result.ps
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    ax.plot(xs, result.recall, marker="o")
    if len(result.seeds) > 1:
        lo = [min(r) for r in result.per_seed]
        hi = [max(r) for r in result.per_seed]
        ax.fill_between(xs, lo, hi, alpha=0.2)
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{x:,.0f}" if result.store_chunks else f"{x:g}" for x in xs])
    ax.set_xlabel("datastore size (chunks kept)" if result.store_chunks else "subsampling rate p")
    ax.set_ylabel(f"answer recall@{result.k}")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"Datastore scaling ({result.n_queries} queries, fetch_k={result.fetch_k})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
