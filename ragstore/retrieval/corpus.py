"""Neighbours for every chunk of a training corpus, precomputed into memory-mapped arrays.

RETRO trains on sequences whose chunks each come with ``k`` retrieved
``[N, F]`` pairs, computed once before training. :func:`retrieve_corpus`
splits each document of a corpus into chunks of the LM's tokenizer, searches
the store for all of them in batches (each chunk never retrieves its own
document, and the leakage filter of :func:`~.retro.retrieve_sequence` is
available), and appends to flat files in ``out_dir``:

- ``tokens.i32``: int32 ``[N, k, 2 * chunk_tokens]``, the neighbour N then its
  continuation F in the LM's token ids, left-aligned, padded with ``pad_id``;
- ``mask.u8``: 1 on real tokens, same shape;
- ``chunk_ids.u64`` ``[N, k]`` (0: no neighbour) and ``scores.f32`` ``[N, k]``;
- ``docs.jsonl``: one line per finished document (its id, first row, rows);
- ``meta.json``: shapes and settings, rewritten atomically after each batch.

It is resumable: a batch's rows are fsync'd before its documents are listed
in ``docs.jsonl`` (and that line fsync'd), so after a crash or ^C the rerun
cuts the files back to the listed rows and goes on with the next document.
:func:`open_corpus` maps the files as numpy arrays (read-only).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .lm_tokenizer import as_tokenizer
from .retro import QueryChunk, _query_neighbours, neighbour_arrays, split_sequence

__all__ = ["retrieve_corpus", "open_corpus", "CorpusNeighbours", "CorpusProgress"]

_FILES = {"tokens": ("tokens.i32", np.int32), "mask": ("mask.u8", np.uint8),
          "chunk_ids": ("chunk_ids.u64", np.uint64), "scores": ("scores.f32", np.float32)}


@dataclass(frozen=True)
class CorpusProgress:
    documents: int  # finished, this run and earlier ones
    rows: int  # chunks with their neighbours written
    skipped: int  # documents found done by an earlier run


@dataclass(frozen=True)
class CorpusNeighbours:
    """The arrays of a finished (or partial) :func:`retrieve_corpus` run, memory-mapped."""

    tokens: np.ndarray  # int32 [N, k, 2 * chunk_tokens]
    mask: np.ndarray  # bool view: uint8 [N, k, 2 * chunk_tokens]
    chunk_ids: np.ndarray  # uint64 [N, k]
    scores: np.ndarray  # float32 [N, k]
    doc_ids: list[str]
    doc_rows: np.ndarray  # int64 [n_docs + 1]: rows of document i are doc_rows[i]:doc_rows[i + 1]
    k: int
    chunk_tokens: int
    pad_id: int

    def __len__(self) -> int:
        return len(self.tokens)


def _docs(items: Iterable[Any]) -> Iterator[tuple[str, str]]:
    for i, d in enumerate(items):
        if isinstance(d, str):
            yield str(i), d
        elif isinstance(d, dict) and isinstance(d.get("id"), str) and isinstance(d.get("text"), str):
            yield d["id"], d["text"]
        elif isinstance(d, (tuple, list)) and len(d) == 2 and isinstance(d[0], str) and isinstance(d[1], str):
            yield d[0], d[1]
        else:
            raise InvalidInputError(
                f"document #{i} is a {type(d).__name__}; give texts, (id, text) pairs or {{'id':, 'text':}} dicts"
            )


def _fsync_append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_meta(out: Path, meta: dict) -> None:
    tmp = out / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, out / "meta.json")


def _done(out: Path) -> list[dict]:
    """The documents an earlier run finished; lines after a torn last one are ignored."""
    try:
        lines = (out / "docs.jsonl").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    done = []
    for line in lines:
        try:
            done.append(json.loads(line))
        except json.JSONDecodeError:
            break  # the line being written when the run stopped: its rows are cut below
    return done


def retrieve_corpus(
    store: Any,
    docs: Iterable[Any],
    out_dir: str | os.PathLike[str],
    *,
    tokenizer: Any,
    k: int = 2,
    chunk_tokens: int | None = None,
    exclude_own_doc: bool = True,
    max_overlap: float | None = None,
    pad_id: int | None = None,
    batch_chunks: int = 1024,
    on_progress: Callable[[CorpusProgress], Any] | None = None,
    **query_kwargs: Any,
) -> CorpusNeighbours:
    """Precompute ``k`` neighbours with continuations for every chunk of ``docs`` into ``out_dir``.

    - ``docs``: texts, ``(doc_id, text)`` pairs or ``{"id", "text"}`` dicts, in
      a fixed order (a rerun resumes by position and checks the ids).
    - ``tokenizer``: the LM's tokenizer (tokenizer.json path or ``Tokenizer``):
      it cuts the chunks and encodes the neighbour arrays.
    - ``chunk_tokens``: default the store's; ``exclude_own_doc``: a chunk of
      document ``d`` never retrieves from a stored document with id ``d``
      (RETRO's rule for training data); ``max_overlap``: the leakage filter.
    - other keywords (``sources=``, ``mode=`` ...) go to ``store.query_many``.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    if not isinstance(batch_chunks, int) or batch_chunks < 1:
        raise InvalidInputError(f"batch_chunks must be a positive integer, got {batch_chunks!r}")
    tok = as_tokenizer(tokenizer)
    ct = store.config.chunk_tokens if chunk_tokens is None else chunk_tokens
    if pad_id is None:
        pad_id = tok.default_pad_id()
        if pad_id is None:
            raise InvalidInputError("this tokenizer has no pad token: pass pad_id= (the mask marks padding anyway)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"k": k, "chunk_tokens": ct, "pad_id": int(pad_id), "exclude_own_doc": exclude_own_doc,
                "max_overlap": max_overlap, "store": str(getattr(store, "path", ""))}
    if (out / "meta.json").exists():
        old = json.loads((out / "meta.json").read_text())
        if {key: old.get(key) for key in settings} != settings:
            raise InvalidInputError(
                f"{out} holds a run with other settings ({ {key: old.get(key) for key in settings} }); "
                "use another out_dir, or the same settings to resume it"
            )
    done = _done(out)
    rows = done[-1]["row"] + done[-1]["rows"] if done else 0
    row_shapes = {"tokens": (k, 2 * ct), "mask": (k, 2 * ct), "chunk_ids": (k,), "scores": (k,)}
    for name, (fname, dtype) in _FILES.items():  # cut what a stopped run wrote past its last listed document
        path = out / fname
        path.touch()
        size = rows * int(np.prod(row_shapes[name])) * np.dtype(dtype).itemsize
        if path.stat().st_size < size:
            raise InvalidInputError(f"{path} is shorter than its {rows} listed rows: it was damaged; use a new out_dir")
        os.truncate(path, size)
    (out / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in done), encoding="utf-8")
    n_done = len(done)

    def meta() -> dict:
        return {**settings, "rows": rows, "documents": n_done}

    batch: list[tuple[str, list[QueryChunk]]] = []
    pending = 0

    def flush() -> None:
        nonlocal rows, n_done, batch, pending
        if not batch:
            return
        chunks = [c for _, cs in batch for c in cs]
        exclude = [frozenset([d]) if exclude_own_doc else frozenset() for d, cs in batch for _ in cs]
        neigh, _ = _query_neighbours(store, chunks, k, exclude_docs=None, max_overlap=max_overlap,
                                     with_overlap=False, overlap_continuation=True, tok=tok,
                                     query_kwargs=query_kwargs, exclude_each=exclude)
        arr = neighbour_arrays(neigh, tok, chunk_tokens=ct, k=k, pad_id=pad_id)
        ids = np.zeros((len(chunks), k), np.uint64)
        scores = np.zeros((len(chunks), k), np.float32)
        for u, hits in enumerate(neigh):
            for j, h in enumerate(hits[:k]):
                ids[u, j], scores[u, j] = h.chunk_id, h.score
        for name, data in (("tokens", arr.tokens), ("mask", arr.mask.astype(np.uint8)),
                           ("chunk_ids", ids), ("scores", scores)):
            _fsync_append(out / _FILES[name][0], np.ascontiguousarray(data, dtype=_FILES[name][1]).tobytes())
        lines = []
        for d, cs in batch:
            lines.append(json.dumps({"id": d, "row": rows, "rows": len(cs)}) + "\n")
            rows += len(cs)
        _fsync_append(out / "docs.jsonl", "".join(lines).encode("utf-8"))
        n_done += len(batch)
        _write_meta(out, meta())
        batch, pending = [], 0
        if on_progress is not None:
            on_progress(CorpusProgress(documents=n_done, rows=rows, skipped=len(done)))

    for i, (doc_id, text) in enumerate(_docs(docs)):
        if i < len(done):
            if done[i]["id"] != doc_id:
                raise InvalidInputError(
                    f"document #{i} is {doc_id!r}, but the run in {out} did {done[i]['id']!r} there: "
                    "resume with the same documents in the same order, or use another out_dir"
                )
            continue
        chunks = split_sequence(store, text, chunk_tokens=ct, tokenizer=tok)
        batch.append((doc_id, chunks))
        pending += len(chunks)
        if pending >= batch_chunks:
            flush()
    flush()
    _write_meta(out, meta())
    return open_corpus(out)


def open_corpus(out_dir: str | os.PathLike[str]) -> CorpusNeighbours:
    """The arrays written by :func:`retrieve_corpus` in ``out_dir``, memory-mapped read-only."""
    out = Path(out_dir)
    try:
        meta = json.loads((out / "meta.json").read_text())
    except FileNotFoundError:
        raise InvalidInputError(f"{out} holds no retrieve_corpus run (no meta.json)") from None
    done = _done(out)
    rows = done[-1]["row"] + done[-1]["rows"] if done else 0
    k, ct = int(meta["k"]), int(meta["chunk_tokens"])
    shapes = {"tokens": (rows, k, 2 * ct), "mask": (rows, k, 2 * ct), "chunk_ids": (rows, k), "scores": (rows, k)}

    def mapped(name: str) -> np.ndarray:
        fname, dtype = _FILES[name]
        if rows == 0:
            return np.zeros(shapes[name], dtype)
        return np.memmap(out / fname, dtype=dtype, mode="r", shape=shapes[name])

    bounds = np.array([d["row"] for d in done] + [rows], dtype=np.int64)
    return CorpusNeighbours(tokens=mapped("tokens"), mask=mapped("mask").view(bool), chunk_ids=mapped("chunk_ids"),
                            scores=mapped("scores"), doc_ids=[d["id"] for d in done], doc_rows=bounds, k=k,
                            chunk_tokens=ct, pad_id=int(meta["pad_id"]))
