"""Prefetching RETRO neighbours: the search for chunk ``u`` runs while the LM generates.

:class:`Prefetcher` runs searches on a background thread pool; its *stale*
mode serves chunk ``u-1``'s neighbours when ``u``'s are not ready in time
(:class:`PrefetchResult` says which it served).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine.chunking import check_text
from ..errors import InvalidInputError
from ..types import Hit
from .lm_tokenizer import LMTokenizer, _is_token_ids, _store_tokenizer, as_tokenizer

__all__ = ["PrefetchResult", "Prefetcher"]


# --------------------------------------------------------------------------- prefetching
@dataclass(frozen=True)
class PrefetchResult:
    """What :meth:`Prefetcher.get` served for chunk ``chunk``.

    ``served`` is the chunk whose neighbours ``hits`` are: ``chunk`` itself,
    or ``chunk - 1`` when ``stale`` (None, with no hits, when chunk 0 was not
    ready in stale mode). ``waited`` is the time ``get`` blocked, in seconds.
    """

    chunk: int
    served: int | None
    hits: list[Hit]
    stale: bool
    waited: float

    def __iter__(self):
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)


class Prefetcher:
    """Hide retrieval latency behind generation with a background thread pool.

    ``submit(chunk)`` starts the search for the next chunk (text or token ids
    of ``tokenizer``) and returns its index ``u``; the LM keeps generating;
    ``get(u)`` returns its neighbours, blocking only if the search is not done.

    ``mode="exact"`` (default) always serves chunk ``u``'s own neighbours.
    ``mode="stale"`` serves chunk ``u-1``'s when ``u``'s are not ready within
    ``max_wait`` seconds (chunk 0: no neighbours): the search for ``u`` then
    overlaps the generation of the next chunk, at the price of neighbours one
    chunk older (the reviewer's "K-2" trade-off). ``stats`` counts both.

    ``store`` is anything with ``query_many(texts, k, **kwargs)``. Use as a
    context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        store: Any,
        k: int = 2,
        *,
        mode: str = "exact",
        max_wait: float = 0.0,
        workers: int = 2,
        tokenizer: Any = None,
        **query_kwargs: Any,
    ) -> None:
        if mode not in ("exact", "stale"):
            raise InvalidInputError(f"mode must be 'exact' or 'stale', got {mode!r}")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        if not isinstance(workers, int) or workers < 1:
            raise InvalidInputError(f"workers must be a positive integer, got {workers!r}")
        self.store = store
        self.k = k
        self.mode = mode
        self.max_wait = float(max_wait)
        self.query_kwargs = query_kwargs
        self._tokenizer = tokenizer
        self._tok: LMTokenizer | None = None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ragstore-prefetch")
        self._futures: list[Future] = []
        self._lock = threading.Lock()
        self._closed = False
        self.stats = {"submitted": 0, "served": 0, "stale": 0, "waited": 0.0}

    def _text(self, chunk: Any) -> str:
        if _is_token_ids(chunk):
            if self._tok is None:
                if self._tokenizer is None:
                    if not hasattr(self.store, "chunker"):
                        raise InvalidInputError("pass tokenizer= to submit token ids")
                    self._tok = _store_tokenizer(self.store)
                else:
                    self._tok = as_tokenizer(self._tokenizer)
            return self._tok.decode(np.asarray(chunk).reshape(-1).tolist())
        return check_text(chunk, "chunk text")

    def _search(self, text: str) -> list[Hit]:
        if not text.strip():
            return []
        return self.store.query_many([text], self.k, **self.query_kwargs)[0]

    def submit(self, chunk: Any) -> int:
        """Start searching the neighbours of the next chunk; returns its index."""
        if self._closed:
            raise InvalidInputError("this Prefetcher is closed")
        text = self._text(chunk)
        with self._lock:
            u = len(self._futures)
            self._futures.append(self._pool.submit(self._search, text))
            self.stats["submitted"] += 1
        return u

    def ready(self, u: int) -> bool:
        return self._future(u).done()

    def _future(self, u: int) -> Future:
        with self._lock:
            if not isinstance(u, int) or not 0 <= u < len(self._futures):
                raise InvalidInputError(f"chunk {u!r} was never submitted ({len(self._futures)} so far)")
            return self._futures[u]

    def get(self, u: int, timeout: float | None = None) -> PrefetchResult:
        """Neighbours for chunk ``u`` (see the class doc for stale mode)."""
        fut = self._future(u)
        t0 = time.perf_counter()
        if self.mode == "stale" and not fut.done():
            if self.max_wait > 0:
                try:
                    fut.result(timeout=self.max_wait)
                except TimeoutError:
                    pass
            if not fut.done():
                if u == 0:
                    res = PrefetchResult(u, None, [], True, time.perf_counter() - t0)
                else:
                    hits = self._future(u - 1).result(timeout=timeout)
                    res = PrefetchResult(u, u - 1, hits, True, time.perf_counter() - t0)
                self._count(res)
                return res
        hits = fut.result(timeout=timeout)
        res = PrefetchResult(u, u, hits, False, time.perf_counter() - t0)
        self._count(res)
        return res

    def _count(self, res: PrefetchResult) -> None:
        with self._lock:
            self.stats["served"] += 1
            self.stats["stale"] += int(res.stale)
            self.stats["waited"] += res.waited

    def close(self) -> None:
        """Stop the threads (pending searches are cancelled)."""
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
