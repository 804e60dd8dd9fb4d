"""Prompts for in-context retrieval augmentation (In-Context RALM, MassiveDS).

Any LM can use a datastore without retraining by prepending the top-k
retrieved passages to its input. The prompt must fit the LM's context, so the
budget is counted in the LM's own tokenizer: :func:`build_prompt` keeps the
best-ranked passages that fit whole, then truncates the next one at a token
boundary to fill what is left, and never exceeds the budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError
from ..types import Hit
from .retro import LMTokenizer, as_tokenizer

__all__ = ["DEFAULT_TEMPLATE", "DEFAULT_PASSAGE_TEMPLATE", "Prompt", "build_prompt", "ralm_prompt"]

DEFAULT_TEMPLATE = "{passages}\n\n{query}"
DEFAULT_PASSAGE_TEMPLATE = "{text}"


@dataclass(frozen=True)
class Prompt:
    """A built prompt. ``passages``: the hits it holds, best first; when
    ``truncated`` the last of them was cut (its text in the prompt is a prefix
    of ``text``). ``dropped``: hits left out. ``n_tokens <= budget`` always."""

    text: str
    n_tokens: int
    budget: int
    passages: list[Hit]
    dropped: int
    truncated: bool
    truncated_tokens: int = 0  # tokens of the truncated passage's body that were kept

    def __str__(self) -> str:
        return self.text


class _Renderer:
    def __init__(self, template: str, passage_template: str, separator: str, order: str, query: str) -> None:
        self.template = template
        self.passage_template = passage_template
        self.separator = separator
        self.order = order
        self.query = query

    def passage(self, rank: int, hit: Hit, body: str) -> str:
        meta = hit.meta or {}
        return self.passage_template.format(
            i=rank,
            text=body,
            doc_id=hit.doc_id,
            source=hit.source or "",
            score=hit.score,
            continuation=hit.continuation or "",
            meta=meta,
            title=meta.get("title", ""),
        )

    def __call__(self, parts: list[tuple[Hit, str]]) -> str:
        rendered = [self.passage(i + 1, h, b) for i, (h, b) in enumerate(parts)]
        if self.order == "best_last":
            rendered.reverse()
        text = self.template.format(passages=self.separator.join(rendered), query=self.query)
        return text if parts else text.lstrip("\n")


def build_prompt(
    query: str,
    hits: Sequence[Hit],
    *,
    tokenizer: Any,
    budget: int,
    template: str = DEFAULT_TEMPLATE,
    passage_template: str = DEFAULT_PASSAGE_TEMPLATE,
    separator: str = "\n\n",
    order: str = "best_first",
    with_continuation: bool = False,
    truncate: bool = True,
    min_passage_tokens: int = 8,
    truncation_marker: str = "",
    add_special_tokens: bool = True,
) -> Prompt:
    """Prepend retrieved passages to ``query`` within ``budget`` LM tokens.

    - ``tokenizer``: the LM's tokenizer (tokenizer.json path, JSON text or
      ``tokenizers.Tokenizer``); the whole prompt is measured with it
      (``add_special_tokens``: count the special tokens the LM adds, e.g.
      BOS/[CLS]).
    - ``template``: must hold ``{passages}`` and ``{query}``;
      ``passage_template`` may use ``{i}`` (rank, 1 = best), ``{text}``,
      ``{doc_id}``, ``{source}``, ``{score}``, ``{title}`` (``meta["title"]``),
      ``{meta[...]}`` and ``{continuation}``; passages are joined with
      ``separator``, best first (``order="best_last"`` puts the best next to
      the query).
    - ``with_continuation``: a passage's body is the chunk and its
      continuation (RETRO's [N, F]) instead of the chunk alone.

    Budgeting: hits are taken in rank order; the lowest-ranked are dropped
    first. The first hit that does not fit whole is truncated at a token
    boundary of its body (kept if at least ``min_passage_tokens`` tokens fit,
    ``truncate=False`` drops it instead) and the rest are dropped. If the
    template and query alone exceed the budget, :class:`InvalidInputError`.
    """
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise InvalidInputError(f"budget must be a positive integer, got {budget!r}")
    if "{passages}" not in template or "{query}" not in template:
        raise InvalidInputError("template must contain {passages} and {query}")
    if order not in ("best_first", "best_last"):
        raise InvalidInputError(f"order must be 'best_first' or 'best_last', got {order!r}")
    if not isinstance(query, str):
        raise InvalidInputError(f"query must be a str, got {type(query).__name__}")
    tok: LMTokenizer = as_tokenizer(tokenizer)
    render = _Renderer(template, passage_template, separator, order, query)

    def count(text: str) -> int:
        return tok.count(text, add_special_tokens=add_special_tokens)

    def body(h: Hit) -> str:
        if with_continuation and h.continuation:
            return h.text + " " + h.continuation
        return h.text

    ranked = list(hits)
    full = [(h, body(h)) for h in ranked]
    text = render([])
    n = count(text)
    if n > budget:
        raise InvalidInputError(
            f"the template and query alone take {n} tokens, more than the budget of {budget}; "
            "shorten the query or raise the budget"
        )
    m = 0
    while m < len(full):
        cand = render(full[: m + 1])
        c = count(cand)
        if c > budget:
            break
        text, n, m = cand, c, m + 1
    truncated, kept_tokens = False, 0
    if m < len(full) and truncate:
        h, b = full[m]
        _, offsets = tok.encode_offsets(b)

        def attempt(j: int) -> tuple[str, int]:
            t = render(full[:m] + [(h, b[: offsets[j - 1][1]].rstrip() + truncation_marker)])
            return t, count(t)

        lo, hi = 0, len(offsets)  # the largest j that fits lies in [lo, hi]
        best: tuple[int, str, int] | None = None
        while lo < hi:  # token counts grow with j (up to retokenization at the cut)
            mid = (lo + hi + 1) // 2
            t, c = attempt(mid)
            if c <= budget:
                best, lo = (mid, t, c), mid
            else:
                hi = mid - 1
        if best is not None:
            # whitespace tokens at the cut are stripped: count what is shown
            shown = tok.count(b[: offsets[best[0] - 1][1]].rstrip())
            if shown >= min_passage_tokens:
                _, text, n = best
                kept_tokens, truncated = shown, True
    used = ranked[: m + (1 if truncated else 0)]
    if n > budget:  # cannot happen: every candidate was measured
        raise AssertionError("prompt exceeds budget")
    return Prompt(
        text=text,
        n_tokens=n,
        budget=budget,
        passages=used,
        dropped=len(ranked) - len(used),
        truncated=truncated,
        truncated_tokens=kept_tokens,
    )


def ralm_prompt(
    store: Any,
    prefix: str,
    *,
    k: int = 4,
    tokenizer: Any,
    budget: int,
    query_tokens: int | None = None,
    sources: Sequence[str] | None = None,
    exclude_docs: Sequence[str] | None = None,
    **build_kwargs: Any,
) -> Prompt:
    """Retrieve for ``prefix`` and build its In-Context RALM prompt.

    The retrieval query is the last ``query_tokens`` LM tokens of ``prefix``
    (In-Context RALM queries with a short recent window, e.g. 32), or all of
    it; the prompt is the top-``k`` passages then ``prefix``.
    """
    tok = as_tokenizer(tokenizer)
    q = prefix
    if query_tokens is not None:
        if not isinstance(query_tokens, int) or query_tokens < 1:
            raise InvalidInputError(f"query_tokens must be a positive integer, got {query_tokens!r}")
        _, offsets = tok.encode_offsets(prefix)
        if len(offsets) > query_tokens:
            q = prefix[offsets[-query_tokens][0] :]
    hits = store.query(q, k, sources=sources, exclude_docs=exclude_docs)
    return build_prompt(prefix, hits, tokenizer=tok, budget=budget, **build_kwargs)
