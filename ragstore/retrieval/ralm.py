"""In-Context RALM perplexity: a real LM consumes the store's [neighbour, continuation] pairs.

In-Context RALM (Ram et al. 2023) augments a frozen LM without training it:
the text is scored with a sliding window, and every ``stride`` tokens the last
``query_tokens`` tokens of the prefix are used as a retrieval query; the top
retrieved chunk(s), each with its continuation (RETRO's ``[N, F]`` pair), are
prepended to the LM's context, and only the next ``stride`` tokens are scored.
:func:`perplexity` does exactly that for any object following the :class:`LM`
protocol (a transformers GGUF model is in :mod:`.lm_gguf`); ``k=0`` or
``store=None`` is the no-retrieval baseline with the very same windows.

Retrieval options follow the rest of this package:

- ``subsample=p, seed=`` keeps a candidate iff the pipeline's consistent hash
  keeps its chunk (:func:`~ragstore.retrieval.pipeline.subsample_keep`): every
  query sees the same simulated ``p``-sized datastore (MassiveDS);
- ``leakage_max_overlap=t`` drops neighbours whose RETRO leakage (longest
  common token run with the tokens being scored, over their number) is
  above ``t`` (:func:`~ragstore.retrieval.leakage.leakage`), in LM tokens.

The queries depend only on the evaluated text, never on the LM's output, so
all of them are searched in one batched ``store.query_many`` call; this is
the same retrieval as one call per stride, just cheaper.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import InvalidInputError
from ..types import Hit
from .leakage import leakage
from .pipeline import subsample_keep

__all__ = ["LM", "Stride", "PerplexityResult", "plan_strides", "perplexity"]


@runtime_checkable
class LM(Protocol):
    """What :func:`perplexity` needs of a language model.

    - ``max_context``: the most tokens one call to ``logprobs`` may take
      (context plus targets);
    - ``tokenize(text)`` -> token ids, no special tokens;
    - ``detokenize(ids)`` -> text;
    - ``logprobs(context, targets)`` -> natural-log probabilities, one per
      target: ``log p(targets[i] | context + targets[:i])``. An empty context
      is allowed (the LM supplies its BOS token if it has one).
    """

    max_context: int

    def tokenize(self, text: str) -> list[int]: ...

    def detokenize(self, ids: Sequence[int]) -> str: ...

    def logprobs(self, context: Sequence[int], targets: Sequence[int]) -> np.ndarray: ...


@dataclass(frozen=True)
class Stride:
    """One scoring step of one text: targets ``ids[start:end]``, the prefix before them."""

    text: int  # index of the text in ``texts``
    start: int
    end: int
    query: str | None  # retrieval query (the last query_tokens tokens of the prefix); None for an empty prefix


@dataclass
class PerplexityResult:
    """Perplexity of ``texts`` under an LM, with or without retrieval.

    ``ppl = exp(nll / tokens)``. ``retrieved``: strides whose context held at
    least one passage; ``no_passage``: strides that queried but kept none
    (every candidate dropped by subsampling or the leakage filter).
    ``retrieval_s`` is the batched search of all queries (about 0 when
    ``candidates=`` were given), ``lm_s`` the LM calls; ``per_stride`` holds (start, n_targets, nll, passage tokens) per
    stride, text by text, for finer analysis.
    """

    ppl: float
    nll: float
    tokens: int
    strides: int
    queries: int
    retrieved: int
    no_passage: int
    passage_tokens: float  # mean LM tokens of retrieved text per retrieving stride
    dropped_subsample: int
    dropped_leakage: int
    retrieval_s: float
    lm_s: float
    lm_calls: int
    config: dict[str, Any] = field(default_factory=dict)
    per_stride: list[tuple[int, int, float, int]] = field(default_factory=list, repr=False)

    def summary(self) -> str:
        per_q = self.retrieval_s / self.queries * 1e3 if self.queries else 0.0
        per_lm = self.lm_s / self.lm_calls * 1e3 if self.lm_calls else 0.0
        return (
            f"ppl {self.ppl:.3f} over {self.tokens} tokens ({self.strides} strides; {self.retrieved} with passages, "
            f"{self.passage_tokens:.0f} passage tokens each); retrieval {per_q:.1f} ms/query, LM {per_lm:.0f} ms/step"
        )


def _positive(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def plan_strides(lm: LM, token_ids: Sequence[Sequence[int]], *, stride: int, query_tokens: int) -> list[Stride]:
    """The strides of each text, with their retrieval queries (decoded with ``lm``).

    Stride ``j`` of a text scores ``ids[j*stride:(j+1)*stride]``; its query is
    the detokenized last ``query_tokens`` ids before ``j*stride``.
    """
    out = []
    for t, ids in enumerate(token_ids):
        for s in range(0, len(ids), stride):
            q = lm.detokenize(ids[max(0, s - query_tokens) : s]) if s > 0 else None
            out.append(Stride(t, s, min(s + stride, len(ids)), q if q and q.strip() else None))
    return out


def _passage_ids(
    lm: LM, hits: Sequence[Hit], with_continuation: bool, budget: int, sep: list[int]
) -> tuple[list[int], list[list[int]]]:
    """Concatenated LM ids of the hits (best first), whole passages while they fit, then one cut."""
    bodies = []
    for h in hits:
        text = h.text + (" " + h.continuation if with_continuation and h.continuation else "")
        bodies.append(lm.tokenize(text))
    out: list[int] = []
    for b in bodies:
        room = budget - len(out) - len(sep)
        if room <= 0:
            break
        out.extend(b[:room])
        out.extend(sep)
    return out, bodies


def perplexity(
    lm: LM,
    store: Any,
    texts: Sequence[str],
    *,
    window: int = 512,
    stride: int = 64,
    query_tokens: int = 32,
    k: int = 1,
    with_continuation: bool = True,
    sources: Sequence[str] | None = None,
    leakage_max_overlap: float | None = None,
    subsample: float | None = None,
    seed: int = 0,
    fetch_k: int | None = None,
    max_passage_tokens: int | None = None,
    separator: str = "\n\n",
    candidates: Sequence[Sequence[Hit]] | None = None,
) -> PerplexityResult:
    """In-Context RALM perplexity of ``texts`` (each scored separately) under ``lm``.

    For every ``stride`` tokens: query ``store`` with the last ``query_tokens``
    tokens of the prefix, keep the top ``k`` hits that survive ``subsample``
    and ``leakage_max_overlap``, prepend them (best first, each with its
    continuation when ``with_continuation``, at most ``max_passage_tokens`` LM
    tokens in all, default half of ``window - stride``) and then as much of
    the prefix as fits in ``window``; score the stride's tokens. Every token
    is scored exactly once. ``k=0`` or ``store=None``: no retrieval.

    ``fetch_k`` candidates are searched per query (default ``k``, or
    ``max(8k, 64)`` with a filter; subsampling at small ``p`` needs a deep
    list: about ``fetch_k * p`` candidates survive). ``candidates=`` gives the
    candidate lists per query instead of searching (one list per stride with a
    query, in :func:`plan_strides` order), e.g. to reuse one deep search for
    several settings.
    """
    window = _positive("window", window, 2)
    stride = _positive("stride", stride)
    query_tokens = _positive("query_tokens", query_tokens)
    k = _positive("k", k, 0)
    if stride >= window:
        raise InvalidInputError(f"stride ({stride}) must be smaller than window ({window}) to leave room for context")
    if window > lm.max_context:
        raise InvalidInputError(f"window {window} exceeds the LM's max_context {lm.max_context}; pass a smaller window")
    if isinstance(texts, str):
        raise InvalidInputError("texts must be a sequence of strings, not one string; wrap it in a list")
    if leakage_max_overlap is not None and not 0.0 <= leakage_max_overlap <= 1.0:
        raise InvalidInputError(f"leakage_max_overlap must be in [0, 1], got {leakage_max_overlap!r}")
    if max_passage_tokens is None:
        max_passage_tokens = (window - stride) // 2
    max_passage_tokens = _positive("max_passage_tokens", max_passage_tokens, 0)
    if max_passage_tokens > window - stride:
        raise InvalidInputError(f"max_passage_tokens must be at most window - stride = {window - stride}")
    filtered = subsample is not None or leakage_max_overlap is not None
    if fetch_k is None:
        fetch_k = max(8 * k, 64) if filtered else max(k, 1)
    fetch_k = _positive("fetch_k", fetch_k, max(k, 1))
    use_store = store is not None and k > 0

    token_ids = [lm.tokenize(t) for t in texts]
    plan = plan_strides(lm, token_ids, stride=stride, query_tokens=query_tokens)
    asked = [p for p in plan if p.query is not None] if use_store else []

    t0 = time.perf_counter()
    found: list[Sequence[Hit]]
    if not asked:
        found = []
    elif candidates is not None:
        if len(candidates) != len(asked):
            raise InvalidInputError(f"candidates has {len(candidates)} lists for {len(asked)} queries")
        found = list(candidates)
    else:
        found = store.query_many([p.query for p in asked], fetch_k, sources=sources)
    retrieval_s = time.perf_counter() - t0
    by_stride = {(p.text, p.start): hits for p, hits in zip(asked, found, strict=True)}

    sep = lm.tokenize(separator) if separator else []
    nll = 0.0
    n_tok = retrieved = no_passage = drop_sub = drop_leak = lm_calls = 0
    passage_total = 0
    lm_s = 0.0
    rows: list[tuple[int, int, float, int]] = []
    for p in plan:
        ids = token_ids[p.text]
        targets = ids[p.start : p.end]
        passage: list[int] = []
        hits = by_stride.get((p.text, p.start))
        if hits is not None:
            hits = list(hits)
            if subsample is not None and hits:
                keep = subsample_keep([h.chunk_id for h in hits], subsample, seed)
                drop_sub += int(len(hits) - keep.sum())
                hits = [h for h, kept in zip(hits, keep, strict=True) if kept]
            chosen: list[Hit] = []
            for h in hits:
                if len(chosen) == k:
                    break
                if leakage_max_overlap is not None:
                    body = h.text + (" " + h.continuation if with_continuation and h.continuation else "")
                    if leakage(targets, lm.tokenize(body)) > leakage_max_overlap:
                        drop_leak += 1
                        continue
                chosen.append(h)
            if chosen:
                passage, _ = _passage_ids(lm, chosen, with_continuation, max_passage_tokens, sep)
                retrieved += 1
                passage_total += len(passage)
            else:
                no_passage += 1
        room = window - len(targets) - len(passage)
        context = passage + list(ids[max(0, p.start - room) : p.start])
        t1 = time.perf_counter()
        lp = np.asarray(lm.logprobs(context, targets), dtype=np.float64)
        lm_s += time.perf_counter() - t1
        lm_calls += 1
        if lp.shape != (len(targets),):
            raise InvalidInputError(f"the LM returned {lp.shape} log-probs for {len(targets)} targets")
        step = -float(lp.sum())
        nll += step
        n_tok += len(targets)
        rows.append((p.start, len(targets), step, len(passage)))
    if n_tok == 0:
        raise InvalidInputError("texts hold no tokens to score")
    config = dict(window=window, stride=stride, query_tokens=query_tokens, k=k if use_store else 0,
                  with_continuation=with_continuation, sources=list(sources) if sources else None,
                  leakage_max_overlap=leakage_max_overlap, subsample=subsample, seed=seed, fetch_k=fetch_k,
                  max_passage_tokens=max_passage_tokens)
    return PerplexityResult(
        ppl=math.exp(nll / n_tok), nll=nll, tokens=n_tok, strides=len(plan), queries=len(asked),
        retrieved=retrieved, no_passage=no_passage,
        passage_tokens=passage_total / retrieved if retrieved else 0.0,
        dropped_subsample=drop_sub, dropped_leakage=drop_leak, retrieval_s=retrieval_s, lm_s=lm_s,
        lm_calls=lm_calls, config=config, per_stride=rows,
    )
