"""One definition of each option: the store's fixed configuration and the query options.

- :class:`StoreConfig`: fixed when a store is created and recorded in it;
  :func:`new_store_options` fills the defaults and validates the choices of a
  new store, :func:`check_reopen` compares what a caller asked for with what
  the store recorded.
- :class:`QueryOptions`: how a query searches; the same object (and the same
  defaults) for :meth:`Store.query`, :meth:`Store.query_many`, the RETRO
  functions, the HTTP models and the CLI.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigMismatchError, InvalidInputError

__all__ = [
    "StoreConfig",
    "QueryOptions",
    "SCHEMA_VERSION",
    "METRICS",
    "INDEX_DTYPES",
    "VECTOR_DTYPES",
    "MODES",
    "FUSIONS",
    "RRF_K",
    "STORE_DEFAULTS",
    "MAX_DOC_ID_BYTES",
    "MAX_SOURCE_CHARS",
    "MAX_SOURCE_BYTES",
    "new_store_options",
    "check_reopen",
]

SCHEMA_VERSION = 1
METRICS = ("cos", "ip", "l2sq")
INDEX_DTYPES = ("f32", "f16", "i8")
VECTOR_DTYPES: dict[str, np.dtype] = {"f32": np.dtype("<f4"), "f16": np.dtype("<f2")}
STORE_DEFAULTS: dict[str, Any] = dict(
    chunk_tokens=64,
    metric="cos",
    # f16 halves the index's memory against f32 with no measurable recall loss on
    # sentence embeddings; exact re-scoring from LMDB's f32 copies removes what is left.
    index_dtype="f16",
    vector_dtype="f32",
    connectivity=16,
)
MODES = ("dense", "lexical", "hybrid")
FUSIONS = ("rrf",)
RRF_K = 60  # reciprocal-rank fusion's constant (Cormack et al. 2009)
MAX_DOC_ID_BYTES = 480  # LMDB keys are limited to 511 bytes
MAX_SOURCE_CHARS = 200
# A source is also an LMDB key (b"s" + its UTF-8 bytes, at most 511): 200 characters
# of CJK or emoji are 600-800 bytes, so the bytes are bounded too.
MAX_SOURCE_BYTES = 480


@dataclass(frozen=True)
class StoreConfig:
    """Fixed at creation and recorded in the store."""

    schema_version: int
    embedder: str
    embedder_fingerprint: str
    dim: int
    normalized: bool
    tokenizer_hash: str
    chunk_tokens: int
    metric: str
    index_dtype: str
    vector_dtype: str
    connectivity: int
    created_at: float
    # the lexical index's settings (engine/analysis.py: analyzer, BM25 k1 and b), None
    # for a store without one (made before ragstore had it: Store.index_lexical() builds it)
    lexical: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["lexical"] is None:
            del d["lexical"]  # the record of a store without one stays that of ragstore 0.1
        return d

    @property
    def vector_numpy_dtype(self) -> np.dtype:
        """The dtype of the vector copies kept in LMDB."""
        return VECTOR_DTYPES[self.vector_dtype]

    @property
    def precomputed(self) -> bool:
        """True when the store has no embedder and takes vectors only."""
        return self.embedder.startswith("precomputed")


def new_store_options(given: Mapping[str, Any]) -> dict[str, Any]:
    """The options of a new store: ``given`` (None means default), validated."""
    opts = {k: (STORE_DEFAULTS[k] if given.get(k) is None else given[k]) for k in STORE_DEFAULTS}
    if opts["metric"] not in METRICS:
        raise InvalidInputError(f"metric must be one of {', '.join(METRICS)}, got {opts['metric']!r}")
    if opts["index_dtype"] not in INDEX_DTYPES:
        raise InvalidInputError(f"index_dtype must be one of {', '.join(INDEX_DTYPES)}, got {opts['index_dtype']!r}")
    if opts["index_dtype"] == "i8" and opts["metric"] != "cos":
        raise InvalidInputError(
            "index_dtype='i8' needs metric='cos' (usearch scales int8 for unit vectors); "
            "use index_dtype='f16' with this metric"
        )
    if opts["vector_dtype"] not in VECTOR_DTYPES:
        raise InvalidInputError(f"vector_dtype must be 'f32' or 'f16', got {opts['vector_dtype']!r}")
    if not isinstance(opts["connectivity"], int) or not 2 <= opts["connectivity"] <= 256:
        raise InvalidInputError(f"connectivity must be an integer in 2..256, got {opts['connectivity']!r}")
    return opts


def check_reopen(path: str, recorded: StoreConfig, given: Mapping[str, Any]) -> None:
    """Refuse options that differ from what the store at ``path`` recorded."""
    raw = recorded.to_dict()
    for key, value in given.items():
        if value is not None and value != raw[key]:
            raise ConfigMismatchError(
                f"store {path} was created with {key}={raw[key]!r}, not {value!r}; "
                f"leave {key} unset to use the store's, or create a new store"
            )


def _positive_int(name: str, value: Any, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")


# ``k`` left out of a query call: that of its options (10 by default); an explicit None is refused
NOT_GIVEN: Any = object()


@dataclass(frozen=True)
class QueryOptions:
    """How a query searches. Every default is defined here once.

    - ``k``: hits per query.
    - ``mode``: "dense" (the vector index), "lexical" (BM25 over the lexical
      index; texts only) or "hybrid" (both, fused). See docs/hybrid.md.
    - ``fusion``: how "hybrid" fuses its two rankings: "rrf", reciprocal-rank
      fusion (score = sum of 1 / (60 + rank)).
    - ``fusion_depth``: hits taken from each ranking before fusing. None:
      max(50, 4 * k).
    - ``sources``: search only these sources' shards (unknown names match
      nothing); None searches all.
    - ``exclude_docs``: never return chunks of these documents; k hits are
      still returned when k other chunks exist (the search widens as needed).
      In :meth:`Store.query_many` also one iterable of ids per query.
    - ``rerank``: re-score ``oversample * k`` index candidates with the exact
      vectors kept in LMDB, so scores are exact. None: on when the index is
      quantized (f16, i8), off for an f32 index (its scores are exact).
    - ``exact``: brute force over every stored vector (slow; ground truth).
    - ``expansion``: HNSW search breadth for this query (higher: better recall).
    - ``oversample``: candidates re-scored per hit. None: 1 for an f16 index
      (f16 ranks like f32: more candidates buy no recall, measured in
      docs/benchmarks.md; the scores are still exact) and 4 for i8.
    - ``min_score``: drop hits scoring below this (the score of the query's
      mode: similarity for "dense", BM25 for "lexical", the fused score for
      "hybrid"), so a query may return fewer than ``k`` hits. None keeps all.
    """

    k: int = 10
    sources: Sequence[str] | None = None
    exclude_docs: Iterable[Any] | None = None
    rerank: bool | None = None
    exact: bool = False
    expansion: int | None = None
    oversample: int | None = None
    mode: str = "dense"
    fusion: str = "rrf"
    fusion_depth: int | None = None
    min_score: float | None = None

    def replace(self, **changes: Any) -> QueryOptions:
        return dataclasses.replace(self, **changes)

    def validate(self) -> QueryOptions:
        """Raise :class:`InvalidInputError` for an option out of its range; returns self."""
        _positive_int("k", self.k)
        _positive_int("oversample", self.oversample, optional=True)
        _positive_int("expansion", self.expansion, optional=True)
        _positive_int("fusion_depth", self.fusion_depth, optional=True)
        if self.mode not in MODES:
            raise InvalidInputError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.fusion not in FUSIONS:
            raise InvalidInputError(f"fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        if self.mode != "dense" and self.exact:
            raise InvalidInputError(f"exact=True is a dense search; it cannot be combined with mode={self.mode!r}")
        for name in ("rerank",):
            v = getattr(self, name)
            if v is not None and not isinstance(v, bool):
                raise InvalidInputError(f"{name} must be true, false or None, got {v!r}")
        if not isinstance(self.exact, bool):
            raise InvalidInputError(f"exact must be true or false, got {self.exact!r}")
        ms = self.min_score
        if ms is not None and (isinstance(ms, bool) or not isinstance(ms, (int, float, np.integer, np.floating))
                               or not math.isfinite(ms)):
            raise InvalidInputError(f"min_score must be a finite number or None, got {ms!r}")
        return self

    def keep(self, results: list[list[Any]]) -> list[list[Any]]:
        """``results`` (hits per query) without the hits scoring below ``min_score``."""
        if self.min_score is None:
            return results
        floor = float(self.min_score)
        return [[h for h in hits if h.score >= floor] for hits in results]

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def of(cls, **given: Any) -> QueryOptions:
        """Options from keywords (None: the default); an unknown keyword is an input error."""
        try:
            return cls(**{k: v for k, v in given.items() if v is not None})
        except TypeError:
            return cls().merged(**given)  # raises, naming the unknown option

    @classmethod
    def for_call(cls, options: QueryOptions | None, k: Any, given: dict[str, Any]) -> QueryOptions:
        """A query call's options: ``options`` (or the defaults), then the keywords, then ``k``.

        ``k`` is :data:`NOT_GIVEN` when the caller left it out.
        """
        if options is None:  # the common call: one constructor, no copies
            merged = cls.of(**given)
            if k is not NOT_GIVEN:
                merged = merged.replace(k=k) if given else cls(k=k)
            return merged
        merged = options.merged(**given)
        return merged if k is NOT_GIVEN else merged.replace(k=k)

    def merged(self, **given: Any) -> QueryOptions:
        """These options with each of ``given`` that is not None put in its place."""
        changes = {k: v for k, v in given.items() if v is not None}
        unknown = set(changes) - set(self.names())
        if unknown:
            raise InvalidInputError(
                f"unknown query option(s) {', '.join(sorted(unknown))}; known: {', '.join(self.names())}"
            )
        return dataclasses.replace(self, **changes) if changes else self
