"""The store: the one entry object of ragstore.

LMDB (``records``) is the system of record; the usearch index (``vindex``) is
derived from it. Every write is one LMDB transaction that also appends an
entry to the change log; the index applies the log after the commit, and on
open it replays whatever LMDB committed after the index's last checkpoint. So
an acknowledged write is never lost, whatever happens to the index files.
See docs/durability.md.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import threading
import time
from typing import Any, Iterable, Iterator, Mapping, Sequence

import msgpack
import numpy as np

from .embedders import base as _embed
from .engine.chunking import ChunkedDoc, Chunker, check_text
from .errors import (
    AlreadyExistsError,
    ConfigMismatchError,
    CorruptStoreError,
    InvalidInputError,
    NotFoundError,
    ReadOnlyError,
    StoreClosedError,
    StoreLockedError,
)
from .engine.records import ADD, DEL, Records, pack, u64, unpack
from .engine.search import QueryMixin
from .types import (
    AddResult,
    CheckReport,
    Chunk,
    CompactResult,
    Doc,
    Document,
    Hit,
    IngestProgress,
    IngestSummary,
    Stats,
    StoreConfig,
)
from .engine.index import VectorIndex, fsync_path

__all__ = ["Store", "open", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
METRICS = ("cos", "ip", "l2sq")
INDEX_DTYPES = ("f32", "f16", "i8")
VECTOR_DTYPES = {"f32": np.dtype("<f4"), "f16": np.dtype("<f2")}
DEFAULTS = dict(
    chunk_tokens=64,
    metric="cos",
    # f16 halves the index's memory against f32 with no measurable recall loss on
    # sentence embeddings; exact re-scoring from LMDB's f32 copies removes what is left.
    index_dtype="f16",
    vector_dtype="f32",
    connectivity=16,
)
MAX_DOC_ID_BYTES = 480  # LMDB keys are limited to 511 bytes


def _canonical(obj: Any) -> Any:
    """Meta with dict keys sorted, so equal dicts hash equal whatever their order."""
    if isinstance(obj, Mapping):
        return [[k, _canonical(obj[k])] for k in sorted(obj)]
    if isinstance(obj, (list, tuple)):
        return [_canonical(x) for x in obj]
    return obj


def open(path: "str | os.PathLike[str]", **kwargs: Any) -> "Store":  # noqa: A001 - mirrors lmdb.open
    """Open (or create) the store at ``path``. See :class:`Store` for options."""
    return Store(path, **kwargs)


class _NoFlush(Exception):
    """Marker for failures after which pending documents must not be committed."""


class _Prepared:
    """A document validated, chunked and (after embedding) ready to commit."""

    __slots__ = ("doc_id", "source", "meta", "hash", "chunked", "vectors", "status")

    def __init__(self, doc_id: str, source: str, meta: dict, h: str, chunked: ChunkedDoc, vectors, status: str):
        self.doc_id = doc_id
        self.source = source
        self.meta = meta
        self.hash = h
        self.chunked = chunked
        self.vectors = vectors
        self.status = status


class Store(QueryMixin):
    """An on-disk datastore of chunks, their continuations and their vectors.

    ``Store(path, *, create=True, readonly=False, embedder=None, tokenizer=None,
    chunk_tokens=None, metric=None, index_dtype=None, vector_dtype=None,
    connectivity=None, expansion_add=128, expansion_search=64, sync=True,
    lock_timeout=0.0, map_size=None, checkpoint_every=100_000, threads=0)``

    - ``embedder``: None uses the embedder the store was made with ("minilm"
      for a new store); a spec string ("minilm", "sentence-transformers:NAME",
      "onnx:PATH") or an embedder object. Another model than the store's is
      refused with :class:`ConfigMismatchError`.
    - ``tokenizer``: tokenizer.json (path, JSON text or ``tokenizers.Tokenizer``)
      used to cut chunks; defaults to the embedder's.
    - ``chunk_tokens``, ``metric`` ("cos", "ip", "l2sq"), ``index_dtype`` ("f32",
      "f16", "i8"), ``vector_dtype`` ("f32", "f16": the copies kept in LMDB for
      re-scoring and rebuilds), ``connectivity``: fixed at creation; None means
      "as recorded" (or the default for a new store).
    - ``sync``: fsync every commit (True). False keeps atomicity and
      consistency but a power loss may drop the last commits (never a process
      crash).
    - ``lock_timeout``: seconds to wait for the writer lock held by another
      process before :class:`StoreLockedError`. Readers never wait.
    - ``checkpoint_every``: chunks written after which the index is saved.

    A store is a context manager; ``close()`` is safe twice. One process
    writes at a time (the lock is taken at the first write); any number of
    processes read, each seeing a writer's commits at its next query.
    """

    def __init__(
        self,
        path: "str | os.PathLike[str]",
        *,
        create: bool = True,
        readonly: bool = False,
        embedder: "str | _embed.Embedder | None" = None,
        tokenizer: Any = None,
        chunk_tokens: int | None = None,
        metric: str | None = None,
        index_dtype: str | None = None,
        vector_dtype: str | None = None,
        connectivity: int | None = None,
        expansion_add: int = 128,
        expansion_search: int = 64,
        sync: bool = True,
        lock_timeout: float = 0.0,
        map_size: int | None = None,
        checkpoint_every: int = 100_000,
        threads: int = 0,
    ) -> None:
        self._closed = True
        self.path = os.path.abspath(os.fspath(path))
        self.readonly = readonly
        self._lock_timeout = lock_timeout
        self._checkpoint_every = checkpoint_every
        self._writer_fd: int | None = None
        self._open_fd: int | None = None
        self._mutex = threading.RLock()
        self._embedder_obj: Any = None
        self._chunker: Chunker | None = None
        self._chunks_since_checkpoint = 0
        self._rec: Records | None = None

        exists = os.path.exists(os.path.join(self.path, "data.mdb"))
        if not exists:
            if readonly or not create:
                raise NotFoundError(
                    f"no ragstore store at {self.path}: check the path, or create the store first "
                    "(`ragstore ingest STORE FILES`, or ragstore.open(path) with create=True)"
                )
            if os.path.isfile(self.path):
                raise InvalidInputError(f"{self.path} is a file; a store is a folder: choose another path")
            if os.path.isdir(self.path) and os.listdir(self.path):
                raise InvalidInputError(
                    f"{self.path} is a non-empty folder that is not a ragstore store; choose an empty or new path"
                )
            os.makedirs(self.path, exist_ok=True)
        try:
            self._take_open_lock()
            self._rec = Records.acquire(self.path, sync=sync, map_size=map_size)
            self._closed = False
            self._init_config(
                create=create,
                embedder=embedder,
                tokenizer=tokenizer,
                given=dict(
                    chunk_tokens=chunk_tokens,
                    metric=metric,
                    index_dtype=index_dtype,
                    vector_dtype=vector_dtype,
                    connectivity=connectivity,
                ),
            )
            cfg = self.config
            self._vdtype = VECTOR_DTYPES[cfg.vector_dtype]
            self._index = VectorIndex(
                os.path.join(self.path, "index"),
                dim=cfg.dim,
                metric=cfg.metric,
                dtype=cfg.index_dtype,
                connectivity=cfg.connectivity,
                expansion_add=expansion_add,
                expansion_search=expansion_search,
                threads=threads,
            )
            self._load_index()
        except BaseException:
            self._release()
            raise

    # ------------------------------------------------------------------ setup
    def _init_config(self, *, create: bool, embedder: Any, tokenizer: Any, given: dict) -> None:
        assert self._rec is not None
        with self._rec.read() as txn:
            raw = self._rec.get_meta(txn, "config")
        if raw is None:
            # A creation interrupted before its first commit: the next opener creates it.
            if self.readonly or not create:
                raise NotFoundError(f"{self.path} holds no ragstore configuration; it was never initialized")
            self._create_config(embedder, tokenizer, given)
            return
        if raw.get("schema_version", 0) > SCHEMA_VERSION:
            raise ConfigMismatchError(
                f"store {self.path} has schema version {raw['schema_version']}, newer than this ragstore "
                f"understands ({SCHEMA_VERSION}); upgrade ragstore"
            )
        self.config = StoreConfig(**raw)
        for key, value in given.items():
            if value is not None and value != raw[key]:
                raise ConfigMismatchError(
                    f"store {self.path} was created with {key}={raw[key]!r}, not {value!r}; "
                    f"leave {key} unset to use the store's, or create a new store"
                )
        if embedder is not None:
            emb = _embed.resolve(embedder)
            self._check_embedder(emb)
            self._embedder_obj = emb
        if tokenizer is not None:
            chunker = Chunker(tokenizer, self.config.chunk_tokens)
            if chunker.tokenizer_hash != self.config.tokenizer_hash:
                raise ConfigMismatchError(
                    f"store {self.path} chunks with another tokenizer (hash {self.config.tokenizer_hash}, "
                    f"given {chunker.tokenizer_hash}); leave tokenizer unset to use the store's own"
                )
            self._chunker = chunker

    def _create_config(self, embedder: Any, tokenizer: Any, given: dict) -> None:
        opts = {k: (DEFAULTS[k] if v is None else v) for k, v in given.items()}
        if opts["metric"] not in METRICS:
            raise InvalidInputError(f"metric must be one of {', '.join(METRICS)}, got {opts['metric']!r}")
        if opts["index_dtype"] not in INDEX_DTYPES:
            raise InvalidInputError(
                f"index_dtype must be one of {', '.join(INDEX_DTYPES)}, got {opts['index_dtype']!r}"
            )
        if opts["index_dtype"] == "i8" and opts["metric"] != "cos":
            raise InvalidInputError(
                "index_dtype='i8' needs metric='cos' (usearch scales int8 for unit vectors); "
                "use index_dtype='f16' with this metric"
            )
        if opts["vector_dtype"] not in VECTOR_DTYPES:
            raise InvalidInputError(f"vector_dtype must be 'f32' or 'f16', got {opts['vector_dtype']!r}")
        if not isinstance(opts["connectivity"], int) or not 2 <= opts["connectivity"] <= 256:
            raise InvalidInputError(f"connectivity must be an integer in 2..256, got {opts['connectivity']!r}")
        emb = _embed.resolve(embedder if embedder is not None else _embed.DEFAULT_EMBEDDER)
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
        )
        self._acquire_writer()

        def init(txn):
            if self._rec.get_meta(txn, "config") is None:
                self._rec.put_meta(txn, "config", cfg.to_dict())
                self._rec.put_meta(txn, "tokenizer", chunker.tokenizer_json)
                self._rec.put_meta(txn, "next_chunk", 1)  # 0 marks "no result" in searches
                return cfg.to_dict()
            return self._rec.get_meta(txn, "config")

        self.config = StoreConfig(**self._rec.write(init))
        self._embedder_obj = emb
        self._chunker = chunker

    def _check_embedder(self, emb: Any) -> None:
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
        """The store's embedder, loaded on first use."""
        self._check_open()
        if self._embedder_obj is None:
            name = self.config.embedder
            if name.startswith("precomputed"):
                emb: Any = _embed.Precomputed(self.config.dim, name=name)
            else:
                emb = _embed.resolve(name)
            self._check_embedder(emb)
            self._embedder_obj = emb
        return self._embedder_obj

    @property
    def chunker(self) -> Chunker:
        self._check_open()
        if self._chunker is None:
            with self._rec.read() as txn:
                tok = self._rec.get_meta(txn, "tokenizer")
            if tok is None:
                raise CorruptStoreError(f"store {self.path} lost its tokenizer record; restore a backup")
            self._chunker = Chunker(tok, self.config.chunk_tokens)
        return self._chunker

    # ------------------------------------------------------------------ locks
    def _take_open_lock(self) -> None:
        # Shared by every open Store; compact() needs it exclusive to rewrite the LMDB file.
        try:
            self._open_fd = os.open(os.path.join(self.path, "open.lock"), os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._open_fd, fcntl.LOCK_SH)
        except OSError:
            self._open_fd = None  # read-only filesystem: nobody can compact anyway

    def _acquire_writer(self) -> None:
        with self._mutex:  # two threads' first writes must not race for the same lock
            self._acquire_writer_locked()

    def _acquire_writer_locked(self) -> None:
        if self._writer_fd is not None:
            return
        if self.readonly:
            raise ReadOnlyError(f"store {self.path} was opened with readonly=True; reopen it without to write")
        fd = os.open(os.path.join(self.path, "writer.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + max(0.0, self._lock_timeout)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    try:
                        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    except OSError:
                        holder = "?"
                    os.close(fd)
                    raise StoreLockedError(
                        f"store {self.path} is being written by another writer (pid {holder}); one writer "
                        "at a time: wait for it to close, pass lock_timeout=SECONDS to wait, or open with "
                        "readonly=True to read meanwhile"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._writer_fd = fd
        # only a writer makes it: a leftover is from a compaction that was killed
        shutil.rmtree(os.path.join(self.path, "compact.tmp"), ignore_errors=True)
        if getattr(self, "_index", None) is not None:
            with self._mutex, self._rec.read() as txn:
                self._catch_up(txn)  # another writer may have committed since our last look

    def _release(self) -> None:
        for attr in ("_writer_fd", "_open_fd"):
            fd = getattr(self, attr)
            if fd is not None:
                try:
                    os.close(fd)  # closing drops the flock
                except OSError:
                    pass
                setattr(self, attr, None)
        if self._rec is not None:
            self._rec.release()
            self._rec = None
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"store {self.path} is closed; open it again with ragstore.open()")

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise ReadOnlyError(f"store {self.path} was opened with readonly=True; reopen it without to write")
        self._acquire_writer()

    # ------------------------------------------------------------------ index upkeep
    def _load_index(self) -> None:
        with self._mutex:
            loaded = self._index.load_checkpoint()
            with self._rec.read() as txn:
                replayed = self._catch_up(txn, loaded=loaded)
            if replayed >= max(1, self._checkpoint_every // 10) and not self.readonly:
                self._checkpoint_if_free()

    def _checkpoint_if_free(self) -> None:
        """After a long recovery, save it for the next opener if no one else is writing."""
        had = self._writer_fd is not None
        try:
            self._acquire_writer()
        except StoreLockedError:
            return
        self.checkpoint()
        if not had and self._writer_fd is not None:
            os.close(self._writer_fd)
            self._writer_fd = None

    def _catch_up(self, txn, loaded: bool = True) -> int:
        """Apply what LMDB committed after the index's state; returns chunks applied."""
        seq = self._rec.seq(txn)
        ix = self._index
        if loaded and ix.applied_seq == seq:
            return 0
        if loaded and self._log_covers(txn, ix.applied_seq, seq):
            return self._replay(txn, seq)
        # The log was trimmed past our state (a newer checkpoint exists) or we have
        # no checkpoint yet: load the newest checkpoint, else rebuild from the records.
        if ix.load_checkpoint() and self._log_covers(txn, ix.applied_seq, seq):
            return self._replay(txn, seq)
        return self._rebuild(txn)

    def _log_covers(self, txn, applied: int, seq: int) -> bool:
        if applied > seq:
            return False  # the index holds commits LMDB lost (sync=False and a power cut)
        if applied == seq:
            return True
        first = self._rec.first_log_seq(txn)
        return first is not None and first <= applied + 1

    def _doc_vectors(self, txn, c0: int, n: int) -> np.ndarray | None:
        found, rows = self._rec.read_vectors(txn, list(range(c0, c0 + n)))
        if len(found) != n:
            return None  # deleted (later in the log), or damaged: check() reports it
        return np.frombuffer(b"".join(rows), dtype=self._vdtype).reshape(n, self.config.dim).astype(np.float32)

    def _replay(self, txn, seq: int) -> int:
        ix = self._index
        n = 0
        for s, ops in self._rec.log_since(txn, ix.applied_seq):
            for op, source, c0, count in ops:
                keys = np.arange(c0, c0 + count, dtype=np.uint64)
                if op == ADD:
                    vecs = self._doc_vectors(txn, c0, count)
                    if vecs is None:
                        continue  # deleted later in the log
                    ix.add(source, keys, vecs)
                    n += count
                else:
                    ix.remove(source, keys)
            ix.applied_seq = s
        ix.applied_seq = seq
        self._chunks_since_checkpoint += n
        return n

    def _rebuild(self, txn) -> int:
        ix = self._index
        ix.reset()
        pending: dict[str, tuple[list, list]] = {}
        total = 0

        def flush(source: str) -> None:
            ks, vs = pending.pop(source)
            ix.add(source, np.concatenate(ks), np.concatenate(vs))

        for _, raw in txn.cursor(db=self._rec.docs):
            doc = unpack(raw)
            vecs = self._doc_vectors(txn, doc["c0"], doc["n"])
            if vecs is None:
                continue  # reported by check()
            ks, vs = pending.setdefault(doc["s"], ([], []))
            ks.append(np.arange(doc["c0"], doc["c0"] + len(vecs), dtype=np.uint64))
            vs.append(vecs)
            total += len(vecs)
            if sum(len(k) for k in ks) >= 65536:
                flush(doc["s"])
        for source in list(pending):
            flush(source)
        ix.applied_seq = self._rec.seq(txn)
        ix.dirty = set(ix.shards)
        self._chunks_since_checkpoint += total
        return total

    def checkpoint(self) -> None:
        """Save the index atomically and trim the change log it now covers."""
        self._check_writable()
        with self._mutex:
            with self._rec.read() as txn:
                self._catch_up(txn)
            ix = self._index
            if ix.checkpoint_seq == ix.applied_seq and not ix.dirty and os.path.exists(ix.dir):
                return
            ix.save_checkpoint(gen=time.time_ns())
            upto = ix.checkpoint_seq
            self._rec.write(lambda txn: self._rec.trim_log(txn, upto))
            self._chunks_since_checkpoint = 0

    def refresh(self) -> None:
        """See what other processes committed (queries do this by themselves)."""
        self._check_open()
        with self._mutex, self._rec.read() as txn:
            self._catch_up(txn)

    # ------------------------------------------------------------------ input checks
    def _check_doc_id(self, doc_id: object) -> str:
        if not isinstance(doc_id, str) or not doc_id:
            raise InvalidInputError(f"document id must be a non-empty str, got {doc_id!r}")
        try:
            b = doc_id.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(f"document id {doc_id!r} is not valid Unicode") from None
        if len(b) > MAX_DOC_ID_BYTES:
            raise InvalidInputError(
                f"document id is {len(b)} bytes long; at most {MAX_DOC_ID_BYTES} are allowed (hash longer ids)"
            )
        return doc_id

    @staticmethod
    def _check_source(source: object) -> str:
        if source is None:
            return ""
        if not isinstance(source, str) or not source or len(source) > 200 or "\x00" in source:
            raise InvalidInputError(f"source must be None or a non-empty str of at most 200 characters, got {source!r}")
        return source

    @staticmethod
    def _check_meta(meta: object) -> dict:
        if meta is None:
            return {}
        if not isinstance(meta, Mapping):
            raise InvalidInputError(f"meta must be a dict, got {type(meta).__name__}")
        meta = dict(meta)
        if not all(isinstance(k, str) for k in meta):
            raise InvalidInputError("meta keys must be str")
        try:
            pack(meta)
        except (TypeError, ValueError, OverflowError) as e:
            raise InvalidInputError(f"meta is not serializable (str, numbers, lists, dicts, bytes): {e}") from None
        return meta

    def _check_vectors(self, vectors: object, n: int | None, what: str = "vectors") -> np.ndarray:
        d = self.config.dim
        try:
            arr = np.asarray(vectors)
        except (TypeError, ValueError) as e:
            raise InvalidInputError(f"{what} is not an array: {e}") from None
        if arr.dtype.kind not in "fiu":
            raise InvalidInputError(f"{what} must be numbers, got dtype {arr.dtype}")
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != d or (n is not None and arr.shape[0] != n):
            want = f"({n}, {d})" if n is not None else f"(n, {d})"
            raise InvalidInputError(
                f"{what} have shape {arr.shape}, expected {want}"
                + (f": this text makes {n} chunks (see Store.chunk())" if n is not None else "")
                + f"; the store's embedder {self.config.embedder!r} has dimension {d}"
            )
        wide = np.asarray(arr, dtype=np.float64)  # float64: huge or tiny values normalize without over/underflow
        if not np.isfinite(wide).all():
            raise InvalidInputError(f"{what} contain NaN or infinity")
        if self.config.metric == "cos":
            norms = np.linalg.norm(wide, axis=1, keepdims=True)
            if (norms == 0).any():
                raise InvalidInputError(f"{what} contain an all-zero vector, which has no cosine direction")
            wide = wide / norms
        elif (np.abs(wide) > np.finfo(np.float32).max).any():
            raise InvalidInputError(f"{what} hold values beyond float32's range (about 3.4e38)")
        return np.ascontiguousarray(wide, dtype=np.float32)

    @staticmethod
    def _content_hash(text: str, source: str, meta: dict) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(text.encode("utf-8"))
        h.update(b"\x00" + source.encode() + b"\x00")
        h.update(msgpack.packb(_canonical(meta), use_bin_type=True))
        return h.hexdigest()

    # ------------------------------------------------------------------ writes
    def chunk(self, text: str) -> list[Chunk]:
        """The chunks ``add`` would make of ``text`` (to precompute their vectors)."""
        return self.chunker.chunk(check_text(text)).chunks

    def add(
        self,
        doc_id: str,
        text: str,
        *,
        source: str | None = None,
        meta: Mapping[str, Any] | None = None,
        vectors: Any = None,
        replace: bool = False,
    ) -> AddResult:
        """Add one document; durable when this returns.

        ``vectors``: optional precomputed (n_chunks, dim) array for ``chunk(text)``.
        An existing ``doc_id`` raises :class:`AlreadyExistsError` unless
        ``replace=True``; replacing with the same content does nothing.
        """
        summary, results = self._ingest([Doc(doc_id, text, source, meta, vectors)], replace=replace, collect=True)
        return results[0]

    def update(self, doc_id: str, text: str, **kwargs: Any) -> AddResult:
        """Replace an existing document (:class:`NotFoundError` if there is none)."""
        self._check_open()
        if doc_id not in self:
            raise NotFoundError(f"no document {doc_id!r} in {self.path}; use add() to create it")
        return self.add(doc_id, text, replace=True, **kwargs)

    def add_many(
        self,
        docs: Iterable["Doc | Mapping[str, Any]"],
        *,
        replace: bool = False,
        batch_size: int = 256,
        on_progress: Any = None,
        on_invalid: Any = None,
    ) -> IngestSummary:
        """Add many documents, committing every ``batch_size`` chunks.

        Each batch is durable before the next starts, so an interrupted call
        keeps every batch it committed. With ``replace=True``, unchanged
        documents are skipped and changed ones replaced: re-running an ingest
        resumes it.

        A bad document (:class:`InvalidInputError`) raises after the documents
        before it are committed, unless ``on_invalid(index, doc_id, error)`` is
        given: then it is reported there and skipped (``doc_id`` is None when
        the id itself is bad). ``on_progress(IngestProgress)`` is called after
        each commit and every 1,000 documents skipped as unchanged or invalid.
        """
        summary, _ = self._ingest(
            docs, replace=replace, batch_size=batch_size, on_progress=on_progress, on_invalid=on_invalid
        )
        return summary

    def _coerce_doc(self, d: Any, i: int) -> Doc:
        if isinstance(d, Doc):
            return d
        if isinstance(d, Mapping):
            if "id" not in d or "text" not in d:
                raise InvalidInputError(f"document #{i} lacks an 'id' or 'text' field")
            return Doc(d["id"], d["text"], d.get("source"), d.get("meta"), d.get("vectors"))
        if isinstance(d, tuple) and len(d) == 2:
            return Doc(d[0], d[1])
        raise InvalidInputError(f"document #{i} must be a ragstore.Doc, a mapping or an (id, text) pair")

    def _ingest(self, docs, *, replace: bool, batch_size: int = 256, on_progress=None, on_invalid=None, collect=False):
        self._check_writable()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        t0 = time.perf_counter()
        counts = dict.fromkeys(("added", "replaced", "unchanged", "skipped", "chunks", "tokens"), 0)
        results: list[AddResult] = []
        pending: list[_Prepared] = []
        pending_ids: set[str] = set()
        pending_chunks = 0
        quiet = 0  # documents since the last progress report
        chunker = self.chunker

        def report() -> None:
            nonlocal quiet
            quiet = 0
            if on_progress is not None:
                on_progress(self._progress(counts, t0))

        def flush() -> None:
            nonlocal pending_chunks
            if not pending:
                return
            self._commit(pending)
            for p in pending:
                counts[p.status] += 1
                counts["chunks"] += len(p.chunked.chunks)
                counts["tokens"] += p.chunked.n_tokens
            pending.clear()
            pending_ids.clear()
            pending_chunks = 0
            report()

        # Documents are checked one by one, then cut into chunks a stage at a time:
        # the tokenizer encodes a whole stage in parallel (one call per document
        # left a core idle). Stages are handled in input order, so errors, results
        # and commits come in the order of the input.
        # A stage also ends once it may hold enough chunks to fill the batch (a
        # token covers at least one UTF-8 byte, so bytes / chunk_tokens bounds a
        # document's chunks): commits come at the same documents as when each
        # was chunked alone, which matters for a slow stream such as stdin.
        # (i, raw, c): c is (id, text, source, meta, hash, vectors, status), or (id, n) when unchanged
        staged: list[tuple] = []
        staged_ids: set[str] = set()
        staged_chars = 0
        staged_most = 0  # most chunks the staged documents can make
        ct = self.config.chunk_tokens

        def check(i: int, raw: Any) -> tuple:
            d = self._coerce_doc(raw, i)
            doc_id = self._check_doc_id(d.id)
            text = check_text(d.text, f"text of document {doc_id!r}")
            source = self._check_source(d.source)
            meta = self._check_meta(d.meta)
            h = self._content_hash(text, source, meta)
            if doc_id in pending_ids or doc_id in staged_ids:
                run_stage()
                flush()  # the same id twice in one call: the later one wins
            with self._rec.read() as txn:
                old = self._rec.get_doc(txn, doc_id)
            if old is not None:
                if not replace:
                    raise AlreadyExistsError(
                        f"document {doc_id!r} already exists in {self.path}; pass replace=True to "
                        "overwrite it (or `ragstore ingest`, which replaces changed documents)"
                    )
                if old["h"] == h and d.vectors is None:
                    return (doc_id, old["n"])
            if d.vectors is None and self.config.embedder.startswith("precomputed"):
                raise InvalidInputError(
                    f"document {doc_id!r} has no vectors, and this store has no embedder to make them: "
                    "pass vectors= (one row per chunk of Store.chunk(text))"
                )
            return (doc_id, text, source, meta, h, d.vectors, "added" if old is None else "replaced")

        def invalid(i: int, raw: Any, e: InvalidInputError) -> None:
            if on_invalid is None:
                raise e
            counts["skipped"] += 1
            doc_id = getattr(raw, "id", None) if not isinstance(raw, Mapping) else raw.get("id")
            on_invalid(i, doc_id if isinstance(doc_id, str) else None, e)
            skipped_quietly()

        def skipped_quietly() -> None:
            nonlocal quiet
            quiet += 1
            if quiet >= 1000:
                report()

        def run_stage() -> None:
            nonlocal pending_chunks, staged_chars, staged_most
            if not staged:
                return
            items = list(staged)
            staged.clear()
            staged_ids.clear()
            staged_chars = staged_most = 0
            todo = [(j, it[2]) for j, it in enumerate(items) if len(it[2]) > 2]
            cut = dict(zip((j for j, _ in todo), chunker.chunk_each([c[1] for _, c in todo])))
            for j, (i, raw, c) in enumerate(items):
                if len(c) == 2:  # unchanged
                    counts["unchanged"] += 1
                    if collect:
                        results.append(AddResult(c[0], "unchanged", c[1]))
                    skipped_quietly()
                    continue
                doc_id, _text, source, meta, h, vectors, status = c
                try:
                    chunked = cut[j]
                    if isinstance(chunked, InvalidInputError):
                        raise chunked
                    vecs = None if vectors is None else self._check_vectors(vectors, len(chunked.chunks))
                except InvalidInputError as e:
                    invalid(i, raw, e)
                    continue
                p = _Prepared(doc_id, source, meta, h, chunked, vecs, status)
                pending.append(p)
                pending_ids.add(p.doc_id)
                pending_chunks += len(p.chunked.chunks)
                if collect:
                    results.append(AddResult(p.doc_id, p.status, len(p.chunked.chunks)))
                if pending_chunks >= batch_size:
                    flush()

        with self._mutex:
            try:
                for i, raw in enumerate(docs):
                    try:
                        c = check(i, raw)
                    except InvalidInputError as e:
                        run_stage()  # the documents before it come first
                        invalid(i, raw, e)
                        continue
                    except Exception:
                        run_stage()  # committed below, as the documents before a bad one are
                        raise
                    staged.append((i, raw, c))
                    if len(c) > 2:
                        staged_ids.add(c[0])
                        staged_chars += len(c[1])
                        staged_most += -(-len(c[1].encode("utf-8", "surrogatepass")) // ct)
                    if len(staged) >= 64 or staged_chars >= 1 << 18 or pending_chunks + staged_most >= batch_size:
                        run_stage()
                run_stage()
                flush()
            except BaseException as e:
                # A bad document: commit the good ones before it, as documented.
                # An interrupt keeps only what was already committed.
                if pending and isinstance(e, Exception) and not isinstance(e, _NoFlush):
                    flush()
                raise
        summary = IngestSummary(
            documents=counts["added"] + counts["replaced"] + counts["unchanged"] + counts["skipped"],
            added=counts["added"],
            replaced=counts["replaced"],
            unchanged=counts["unchanged"],
            skipped=counts["skipped"],
            chunks=counts["chunks"],
            tokens=counts["tokens"],
            seconds=time.perf_counter() - t0,
        )
        return summary, results

    @staticmethod
    def _progress(counts: dict, t0: float) -> IngestProgress:
        return IngestProgress(
            documents=counts["added"] + counts["replaced"] + counts["unchanged"] + counts["skipped"],
            chunks=counts["chunks"],
            tokens=counts["tokens"],
            added=counts["added"],
            replaced=counts["replaced"],
            unchanged=counts["unchanged"],
            skipped=counts["skipped"],
            seconds=time.perf_counter() - t0,
        )

    def _commit(self, batch: list[_Prepared]) -> None:
        need = [p for p in batch if p.vectors is None]
        if need:
            texts = [c.text for p in need for c in p.chunked.chunks]
            vecs = self._check_vectors(self.embedder.encode(texts), len(texts), "embedder output")
            i = 0
            for p in need:
                n = len(p.chunked.chunks)
                p.vectors = vecs[i : i + n]
                i += n
        rec = self._rec
        vdtype = self._vdtype

        def write(txn):
            ops: list[list] = []
            next_chunk = rec.get_meta(txn, "next_chunk", 1)
            d_docs = d_chunks = d_tokens = 0
            for p in batch:
                old = rec.get_doc(txn, p.doc_id)
                if old is not None:
                    self._delete_records(txn, p.doc_id, old)
                    ops.append([DEL, old["s"], old["c0"], old["n"]])
                    d_docs -= 1
                    d_chunks -= old["n"]
                    d_tokens -= old["t"]
                c0 = next_chunk
                chunks = p.chunked.chunks
                next_chunk += len(chunks)
                # chunk ids only grow, so both tables take them as appends
                txn.cursor(db=rec.chunks).putmulti(
                    [
                        (u64(c0 + c.position), pack([p.doc_id, c.position, c.text, c.start, c.end, c.n_tokens, pre]))
                        for c, pre in zip(chunks, p.chunked.pres)
                    ],
                    append=True,
                )
                rows = p.vectors.astype(vdtype)
                txn.cursor(db=rec.vectors).putmulti(
                    [(u64(c0 + j), rows[j].tobytes()) for j in range(len(chunks))], append=True
                )
                ntok = p.chunked.n_tokens
                txn.put(
                    p.doc_id.encode(),
                    pack({"s": p.source, "m": p.meta, "c0": c0, "n": len(chunks), "t": ntok, "h": p.hash, "tail": p.chunked.tail}),
                    db=rec.docs,
                )
                rec.add_source_count(txn, p.source, len(chunks))
                ops.append([ADD, p.source, c0, len(chunks)])
                d_docs += 1
                d_chunks += len(chunks)
                d_tokens += ntok
            rec.put_meta(txn, "next_chunk", next_chunk)
            rec.add_counter(txn, "n_docs", d_docs)
            rec.add_counter(txn, "n_chunks", d_chunks)
            rec.add_counter(txn, "n_tokens", d_tokens)
            return rec.append_log(txn, ops)

        rec.write(write)
        self._after_write()

    def _delete_records(self, txn, doc_id: str, old: dict) -> None:
        rec = self._rec
        for cid in range(old["c0"], old["c0"] + old["n"]):
            txn.delete(u64(cid), db=rec.chunks)
            txn.delete(u64(cid), db=rec.vectors)
        txn.delete(doc_id.encode(), db=rec.docs)
        rec.add_source_count(txn, old["s"], -old["n"])
        rec.add_counter(txn, "tombstones", old["n"])

    def _after_write(self) -> None:
        with self._rec.read() as txn:
            self._catch_up(txn)
        if self._chunks_since_checkpoint >= self._checkpoint_every:
            self.checkpoint()

    def delete(self, doc_id: str) -> int:
        """Delete a document, its chunks and vectors; returns the chunks removed."""
        return self.delete_many([doc_id])

    def delete_many(self, doc_ids: Iterable[str], *, missing_ok: bool = False) -> int:
        """Delete several documents in one transaction; returns the chunks removed.

        A missing id raises :class:`NotFoundError` (and deletes nothing) unless
        ``missing_ok=True``.
        """
        self._check_writable()
        ids = [self._check_doc_id(d) for d in doc_ids]
        rec = self._rec

        def write(txn):
            ops, removed, d_tok, n_docs = [], 0, 0, 0
            for doc_id in dict.fromkeys(ids):
                old = rec.get_doc(txn, doc_id)
                if old is None:
                    if missing_ok:
                        continue
                    raise NotFoundError(f"no document {doc_id!r} in {self.path}; nothing was deleted")
                self._delete_records(txn, doc_id, old)
                ops.append([DEL, old["s"], old["c0"], old["n"]])
                removed += old["n"]
                d_tok += old["t"]
                n_docs += 1
            if ops:
                rec.add_counter(txn, "n_docs", -n_docs)
                rec.add_counter(txn, "n_chunks", -removed)
                rec.add_counter(txn, "n_tokens", -d_tok)
                rec.append_log(txn, ops)
            return removed

        with self._mutex:
            removed = rec.write(write)
            self._after_write()
        return removed

    # ------------------------------------------------------------------ reads
    def get(self, doc_id: str) -> Document:
        """The stored document, with its text rebuilt exactly from its chunks."""
        self._check_open()
        doc_id = self._check_doc_id(doc_id)
        with self._rec.read() as txn:
            doc = self._rec.get_doc(txn, doc_id)
            if doc is None:
                raise NotFoundError(f"no document {doc_id!r} in {self.path}")
            parts = []
            for cid in range(doc["c0"], doc["c0"] + doc["n"]):
                c = self._rec.get_chunk(txn, cid)
                parts.append(c[6])
                parts.append(c[2])
            parts.append(doc["tail"])
        return Document(
            id=doc_id,
            source=doc["s"] or None,
            meta=doc["m"],
            text="".join(parts),
            n_chunks=doc["n"],
            n_tokens=doc["t"],
            content_hash=doc["h"],
            first_chunk_id=doc["c0"],
        )

    def __contains__(self, doc_id: object) -> bool:
        self._check_open()
        if not isinstance(doc_id, str) or not doc_id:
            return False
        with self._rec.read() as txn:
            return txn.get(doc_id.encode(), db=self._rec.docs) is not None

    def __len__(self) -> int:
        self._check_open()
        with self._rec.read() as txn:
            return self._rec.get_meta(txn, "n_docs", 0)

    def doc_ids(self, *, source: str | None = None) -> Iterator[str]:
        """Document ids in byte order, optionally of one source."""
        self._check_open()
        want = None if source is None else self._check_source(source)
        with self._rec.read() as txn:
            ids = []
            for k, v in txn.cursor(db=self._rec.docs):
                if want is None or unpack(v)["s"] == want:
                    ids.append(bytes(k).decode())
        return iter(ids)

    def sources(self) -> dict[str, int]:
        """Live chunks per source ("" for documents without one)."""
        self._check_open()
        with self._rec.read() as txn:
            return self._rec.source_counts(txn)

    def get_chunk(self, chunk_id: int) -> Hit:
        """One chunk with its continuation (score 0)."""
        self._check_open()
        if isinstance(chunk_id, bool) or not isinstance(chunk_id, (int, np.integer)) or not 0 <= chunk_id < 2**64:
            raise NotFoundError(f"no chunk {chunk_id!r} in {self.path} (chunk ids are integers from 1)")
        with self._rec.read() as txn:
            hit = self._make_hit(txn, int(chunk_id), 0.0)
        if hit is None:
            raise NotFoundError(f"no chunk {chunk_id} in {self.path}")
        return hit

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts`` by the store's embedder (normalized for cosine)."""
        self._check_open()
        return self._check_vectors(self.embedder.encode(list(texts)), len(texts), "embedder output")

    def retrieve_sequence(self, text_or_token_ids: Any, **kwargs: Any) -> Any:
        """RETRO retrieval for a whole sequence: k neighbours (+ continuations) per chunk.

        See :func:`ragstore.retrieval.retro.retrieve_sequence` for the options (``k``,
        ``shift``, ``exclude_docs``, ``tokenizer``, ``max_overlap`` ...).
        """
        from .retrieval.retro import retrieve_sequence  # the RETRO layer builds on the store, not the reverse

        return retrieve_sequence(self, text_or_token_ids, **kwargs)

    # ------------------------------------------------------------------ maintenance
    def stats(self) -> Stats:
        """Counts and sizes: documents, chunks, tokens, bytes on disk, index state."""
        self._check_open()
        with self._mutex, self._rec.read() as txn:
            self._catch_up(txn)
            g = lambda key: self._rec.get_meta(txn, key, 0)  # noqa: E731
            n_chunks = g("n_chunks")
            sources = {(s or ""): n for s, n in self._rec.source_counts(txn).items()}
            tomb = g("tombstones")
            docs = g("n_docs")
            tokens = g("n_tokens")
        lmdb_bytes = self._rec.file_bytes()
        index_bytes = self._index.file_bytes()
        n_index = len(self._index)
        return Stats(
            documents=docs,
            chunks=n_chunks,
            tokens=tokens,
            sources=sources,
            bytes_on_disk=lmdb_bytes + index_bytes,
            lmdb_bytes=lmdb_bytes,
            index_bytes=index_bytes,
            index_vectors=n_index,
            deleted_not_compacted=tomb,
            unindexed=max(0, n_chunks - n_index),
        )

    def check(self, fix: bool = False) -> CheckReport:
        """Verify LMDB's records against each other and the index against LMDB.

        With ``fix=True`` rebuild what is derived (the index, the counters).
        Damage to the records themselves is reported, never silently dropped.
        """
        self._check_open()
        if fix:
            self._check_writable()
        problems: list[str] = []
        derived: list[str] = []  # problems a rebuild of derived state mends
        d = self.config.dim
        with self._mutex, self._rec.read() as txn:
            self._catch_up(txn)
            rec = self._rec
            expected: dict[str, list[np.ndarray]] = {}
            n_docs = n_chunks = n_tokens = 0
            per_source: dict[str, int] = {}
            starts = set()
            for kraw, raw in txn.cursor(db=rec.docs):
                doc_id = bytes(kraw).decode()
                doc = unpack(raw)
                n_docs += 1
                n_chunks += doc["n"]
                n_tokens += doc["t"]
                per_source[doc["s"]] = per_source.get(doc["s"], 0) + doc["n"]
                starts.add(doc["c0"])
                found, rows = rec.read_vectors(txn, list(range(doc["c0"], doc["c0"] + doc["n"])))
                row = d * self._vdtype.itemsize
                if len(found) != doc["n"] or any(len(r) != row for r in rows):
                    problems.append(f"document {doc_id!r}: vectors missing or of the wrong size")
                for pos in range(doc["n"]):
                    c = rec.get_chunk(txn, doc["c0"] + pos)
                    if c is None or c[0] != doc_id or c[1] != pos:
                        problems.append(f"document {doc_id!r}: chunk {pos} missing or misfiled")
                        break
                expected.setdefault(doc["s"], []).append(
                    np.arange(doc["c0"], doc["c0"] + doc["n"], dtype=np.uint64)
                )
            total_chunk_records = txn.stat(rec.chunks)["entries"]
            if total_chunk_records != n_chunks:
                problems.append(f"{total_chunk_records - n_chunks} chunk records belong to no document")
            vec_records = txn.stat(rec.vectors)["entries"]
            if vec_records != n_chunks:
                problems.append(f"{vec_records - n_chunks} vector records belong to no document")
            for key, actual in (("n_docs", n_docs), ("n_chunks", n_chunks), ("n_tokens", n_tokens)):
                if rec.get_meta(txn, key, 0) != actual:
                    derived.append(f"counter {key} is {rec.get_meta(txn, key, 0)}, records say {actual}")
            if {s: n for s, n in rec.source_counts(txn).items()} != per_source:
                derived.append("per-source chunk counts disagree with the records")
            index_keys = self._index.keys()
            for source in set(expected) | set(index_keys):
                want = np.concatenate(expected[source]) if source in expected else np.zeros(0, np.uint64)
                have = index_keys.get(source, np.zeros(0, np.uint64))
                missing = np.setdiff1d(want, have)
                extra = np.setdiff1d(have, want)
                label = source or "(no source)"
                if len(missing):
                    derived.append(f"index shard {label!r}: {len(missing)} chunks have no vector in the index")
                if len(extra):
                    derived.append(f"index shard {label!r}: {len(extra)} vectors belong to no chunk")
        fixed = False
        if fix and derived:
            self._fix_derived(n_docs, n_chunks, n_tokens, per_source)
            fixed = True
        all_problems = problems + derived
        ok = not problems and (not derived or fixed)
        return CheckReport(ok=ok, problems=all_problems, fixed=fixed, documents=n_docs, chunks=n_chunks)

    def _fix_derived(self, n_docs: int, n_chunks: int, n_tokens: int, per_source: dict[str, int]) -> None:
        rec = self._rec

        def write(txn):
            rec.put_meta(txn, "n_docs", n_docs)
            rec.put_meta(txn, "n_chunks", n_chunks)
            rec.put_meta(txn, "n_tokens", n_tokens)
            txn.drop(rec.sources, delete=False)
            for s, n in per_source.items():
                rec.add_source_count(txn, s, n)

        with self._mutex:
            rec.write(write)
            with rec.read() as txn:
                self._rebuild(txn)
            self._index.save_checkpoint(gen=time.time_ns())
            self._chunks_since_checkpoint = 0

    def compact(self) -> CompactResult:
        """Rebuild the index without tombstones and give freed space back to the disk.

        The LMDB file is rewritten only when no other process has the store
        open (otherwise its free pages are reused by later writes instead).
        """
        self._check_writable()
        before = self._rec.file_bytes() + self._index.file_bytes()
        with self._mutex:
            with self._rec.read() as txn:
                tomb = self._rec.get_meta(txn, "tombstones", 0)
                self._rebuild(txn)
            self._index.save_checkpoint(gen=time.time_ns())
            upto = self._index.checkpoint_seq

            def reset(txn):
                self._rec.trim_log(txn, upto)
                self._rec.put_meta(txn, "tombstones", 0)

            self._rec.write(reset)
            self._chunks_since_checkpoint = 0
            lmdb_done = self._compact_lmdb()
        after = self._rec.file_bytes() + self._index.file_bytes()
        return CompactResult(bytes_before=before, bytes_after=after, tombstones_removed=tomb, lmdb_compacted=lmdb_done)

    def _compact_lmdb(self) -> bool:
        if self._open_fd is None:
            return False
        try:
            fcntl.flock(self._open_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fcntl.flock(self._open_fd, fcntl.LOCK_SH)  # conversion may have dropped it
            return False
        try:
            tmpdir = os.path.join(self.path, "compact.tmp")
            os.makedirs(tmpdir, exist_ok=True)
            tmpfile = os.path.join(tmpdir, "data.mdb")
            if os.path.exists(tmpfile):
                os.unlink(tmpfile)
            self._rec.env.copy(tmpdir, compact=True)
            fsync_path(tmpfile)
            os.replace(tmpfile, os.path.join(self.path, "data.mdb"))
            fsync_path(self.path)
            os.rmdir(tmpdir)
            self._rec.reopen()  # no one else has the store open: we hold open.lock exclusively
            return True
        finally:
            fcntl.flock(self._open_fd, fcntl.LOCK_SH)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Save the index if this process wrote, release locks. Safe to call twice."""
        if self._closed:
            return
        try:
            if self._writer_fd is not None:
                ix = self._index
                if ix.applied_seq != ix.checkpoint_seq or ix.dirty:
                    self.checkpoint()
        finally:
            self._release()

    def __enter__(self) -> "Store":
        self._check_open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._closed:
                self._release()  # no checkpoint from a finalizer: LMDB has everything
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("readonly" if self.readonly else "open")
        return f"Store({self.path!r}, {state})"
