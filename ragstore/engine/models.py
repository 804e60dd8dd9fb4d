"""A store's models: the tokenizer that cuts chunks and the embedder that makes vectors.

Both are fixed when the store is created (their hashes and fingerprint are in
its config) and loaded on first use when it is reopened; another model than
the store's is refused, since its vectors or chunks would not match.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..config import SCHEMA_VERSION, StoreConfig, check_reopen, new_store_options
from ..embedders import base as embedders
from ..errors import ConfigMismatchError, CorruptStoreError, InvalidInputError, NotFoundError
from .analysis import lexical_settings
from .chunking import Chunker
from .inputs import VectorRules
from .records import Records

__all__ = ["Models", "open_config"]


class Models:
    """The store's embedder and chunker, loaded lazily and checked against ``config``."""

    def __init__(
        self,
        config: StoreConfig,
        records: Records,
        path: str,
        *,
        embedder: Any = None,
        chunker: Chunker | None = None,
    ) -> None:
        self.config = config
        self.records = records
        self.path = path
        self.rules = VectorRules(config)
        self._embedder = embedder
        self._chunker = chunker
        if embedder is not None:
            self.check_embedder(embedder)

    def check_embedder(self, emb: Any) -> None:
        cfg = self.config
        if int(emb.dim) != cfg.dim or emb.fingerprint != cfg.embedder_fingerprint:
            raise ConfigMismatchError(
                f"store {self.path} was made with embedder {cfg.embedder!r} (dim {cfg.dim}, fingerprint "
                f"{cfg.embedder_fingerprint}); {emb.name!r} (dim {emb.dim}, fingerprint {emb.fingerprint}) "
                "makes vectors that cannot be compared with its own. Open it without embedder= to use "
                "its own, or create a new store for this model"
            )

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            name = self.config.embedder
            emb: Any
            if self.config.precomputed:
                emb = embedders.Precomputed(self.config.dim, name=name)
            else:
                emb = embedders.resolve(name)
            self.check_embedder(emb)
            self._embedder = emb
        return self._embedder

    @property
    def chunker(self) -> Chunker:
        if self._chunker is None:
            with self.records.read() as txn:
                tok = self.records.get_meta(txn, "tokenizer")
            if tok is None:
                raise CorruptStoreError(f"store {self.path} lost its tokenizer record; restore a backup")
            self._chunker = Chunker(tok, self.config.chunk_tokens)
        return self._chunker

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts``, checked (shape, finite) and normalized for cosine stores."""
        return self.rules.check(self.embedder.encode(list(texts)), len(texts), "embedder output")


def open_config(
    records: Records,
    path: str,
    *,
    create: bool,
    readonly: bool,
    embedder: Any,
    tokenizer: Any,
    given: dict[str, Any],
    take_writer: Callable[[], None],
) -> Models:
    """The store's config, created in its first transaction if it has none yet.

    ``given`` holds the creation options (None: default, or as recorded);
    ``take_writer`` is called before a new store's first write. Its
    ``lexical`` (None or True: the default settings, a dict: these, False: no
    lexical index) is for a new store only.
    """
    given = dict(given)
    lexical = given.pop("lexical", None)
    with records.read() as txn:
        raw = records.get_meta(txn, "config")
    if raw is None:
        # A creation interrupted before its first commit: the next opener creates it.
        if readonly or not create:
            raise NotFoundError(f"{path} holds no ragstore configuration; it was never initialized")
        return _create(records, path, embedder, tokenizer, given, take_writer, lexical)
    if raw.get("schema_version", 0) > SCHEMA_VERSION:
        raise ConfigMismatchError(
            f"store {path} has schema version {raw['schema_version']}, newer than this ragstore "
            f"understands ({SCHEMA_VERSION}); upgrade ragstore"
        )
    config = StoreConfig(**raw)
    check_reopen(path, config, given)
    if lexical is not None and lexical is not False and config.lexical is None:
        raise ConfigMismatchError(
            f"store {path} has no lexical index (it was made without one, or before ragstore had it); "
            "build it with Store.index_lexical() or `ragstore index-lexical STORE`"
        )
    chunker = None
    if tokenizer is not None:
        chunker = Chunker(tokenizer, config.chunk_tokens)
        if chunker.tokenizer_hash != config.tokenizer_hash:
            raise ConfigMismatchError(
                f"store {path} chunks with another tokenizer (hash {config.tokenizer_hash}, "
                f"given {chunker.tokenizer_hash}); leave tokenizer unset to use the store's own"
            )
    emb = None if embedder is None else embedders.resolve(embedder)
    return Models(config, records, path, embedder=emb, chunker=chunker)


def _create(
    records: Records, path: str, embedder: Any, tokenizer: Any, given: dict[str, Any], take_writer: Callable[[], None],
    lexical: Any = None,
) -> Models:
    opts = new_store_options(given)
    emb = embedders.resolve(embedder if embedder is not None else embedders.DEFAULT_EMBEDDER)
    tok = tokenizer if tokenizer is not None else emb.tokenizer_json()
    if tok is None:
        raise InvalidInputError(
            f"embedder {emb.name!r} brings no tokenizer to cut chunks with: pass tokenizer= "
            "(a tokenizer.json path, its JSON text or a tokenizers.Tokenizer)"
        )
    limit = getattr(emb, "max_seq_length", None)
    if isinstance(limit, int) and opts["chunk_tokens"] + 2 > limit:
        raise InvalidInputError(
            f"chunk_tokens={opts['chunk_tokens']} is more than embedder {emb.name!r} reads "
            f"({limit} tokens with [CLS] and [SEP]): the end of each chunk would be ignored. "
            f"Use chunk_tokens <= {limit - 2}"
        )
    chunker = Chunker(tok, opts["chunk_tokens"])
    cfg = StoreConfig(
        schema_version=SCHEMA_VERSION,
        embedder=emb.name,
        embedder_fingerprint=emb.fingerprint,
        dim=int(emb.dim),
        normalized=bool(getattr(emb, "normalized", False)),
        tokenizer_hash=chunker.tokenizer_hash,
        chunk_tokens=opts["chunk_tokens"],
        metric=opts["metric"],
        index_dtype=opts["index_dtype"],
        vector_dtype=opts["vector_dtype"],
        connectivity=opts["connectivity"],
        created_at=time.time(),
        lexical=_lexical_choice(lexical),
    )
    take_writer()
    if cfg.lexical is not None:
        records.ensure_lexical_tables()  # before the transaction: LMDB makes a table in one of its own

    def init(txn: Any) -> dict:
        existing = records.get_meta(txn, "config")
        if existing is not None:
            return existing  # another process created it meanwhile
        records.put_meta(txn, "config", cfg.to_dict())
        records.put_meta(txn, "tokenizer", chunker.tokenizer_json)
        records.put_meta(txn, "next_chunk", 1)  # 0 marks "no result" in searches
        return cfg.to_dict()

    config = StoreConfig(**records.write(init))
    return Models(config, records, path, embedder=emb, chunker=chunker)


def _lexical_choice(lexical: Any) -> dict[str, Any] | None:
    """A new store's lexical settings: on by default (see docs/hybrid.md)."""
    if lexical is None or lexical is True:
        return lexical_settings()
    if lexical is False:
        return None
    if isinstance(lexical, dict):
        return lexical_settings(lexical)
    raise InvalidInputError(f"lexical must be true, false or a dict of settings, got {lexical!r}")
