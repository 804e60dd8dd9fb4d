"""A store's contents moved out and back in: JSONL export and import, hot backup, re-embedding.

- :func:`export_jsonl`: one header line (the store's embedder, dimension,
  tokenizer and chunk size), then one line per document (``id``, ``text``,
  ``source``, ``meta``; with ``vectors=True`` also the stored vectors of its
  chunks), all read under one read transaction: a consistent snapshot.
- :func:`read_export`: the documents of such a file, as :class:`Doc`\\ s for
  ``add_many``. With their vectors, an import takes the precomputed path
  (nothing is re-embedded); that is refused unless the target store cuts and
  embeds as the exported one did (same embedder fingerprint, tokenizer and
  chunk size), since the vectors belong to those chunks.
- :func:`backup`: a consistent copy of a live store (a writer may be running)
  as a folder that opens as a store. The LMDB file is copied compacted from
  one read transaction; the vector index's last checkpoint is copied before
  it, so the copy's records are never older than its index. Opening the copy
  replays the change log after that checkpoint, or rebuilds the index from
  the records when the log no longer covers it (the index is derived from
  LMDB, so the copy is always whole).
- :func:`migrate`: every document of one store re-embedded into another
  (another embedder, chunk size ...), resumable: documents already in the
  target with the same text, source and metadata are skipped.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Callable, Iterator
from typing import IO, Any

import lmdb
import numpy as np

from ..config import StoreConfig
from ..errors import InvalidInputError, NotFoundError, RagstoreError
from ..types import BackupResult, Doc, Exported
from .catalog import doc_text
from .codecs import DocRecord
from .damage import key_str
from .index import MANIFEST, _parse_manifest
from .records import Records
from .storage import storage_error

__all__ = ["EXPORT_FORMAT", "ExportHeader", "backup", "copy_docs", "export_jsonl", "read_export", "read_header",
           "unless_unchanged"]

EXPORT_FORMAT = "ragstore-export/1"


class ExportHeader(dict):
    """The first line of an export: what the vectors were made with."""

    @classmethod
    def of(cls, config: StoreConfig, *, vectors: bool) -> ExportHeader:
        return cls(format=EXPORT_FORMAT, embedder=config.embedder, embedder_fingerprint=config.embedder_fingerprint,
                   dim=config.dim, tokenizer_hash=config.tokenizer_hash, chunk_tokens=config.chunk_tokens,
                   metric=config.metric, vectors=vectors)


def _open_out(path: str) -> IO[str]:
    if path.endswith(".gz"):
        return gzip.open(path, "wt", encoding="utf-8")
    return open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by the caller


def _meta_json(o: Any) -> Any:
    if isinstance(o, (bytes, bytearray, memoryview)):
        raise InvalidInputError("a document's metadata holds bytes, which JSON cannot carry; nothing was exported")
    raise TypeError(type(o).__name__)


def export_jsonl(records: Records, config: StoreConfig, path: str, *, vectors: bool = False,
                 source: str | None = None) -> Exported:
    """Write every document (of one ``source``; "": those without one) to ``path`` (.jsonl or .jsonl.gz)."""
    from .inputs import check_source_filter

    want = None if source is None else check_source_filter(source)
    path = os.path.abspath(os.fspath(path))
    tmp = path + ".tmp" + (".gz" if path.endswith(".gz") else "")
    n_docs = n_chunks = 0
    try:
        with _open_out(tmp) as f, records.read() as txn:
            f.write(json.dumps(ExportHeader.of(config, vectors=vectors)) + "\n")
            for doc_id, doc in records.iter_docs(txn):
                if want is not None and doc.source != want:
                    continue
                line: dict[str, Any] = {"id": doc_id, "text": doc_text(records, txn, doc_id, doc),
                                        "source": doc.source or None, "meta": doc.meta}
                if vectors:
                    vecs = records.doc_vectors(txn, doc, config.vector_numpy_dtype, config.dim)
                    if vecs is None:
                        raise NotFoundError(f"document {doc_id!r} lacks vectors; run `ragstore check` "
                                            "(or export without vectors); nothing was exported")
                    line["vectors"] = vecs.tolist()
                f.write(json.dumps(line, ensure_ascii=False, allow_nan=False, default=_meta_json) + "\n")
                n_docs += 1
                n_chunks += doc.n_chunks
        os.replace(tmp, path)
    except OSError as e:
        _unlink(tmp)
        err = storage_error(e, path, "writing the export", lost="the store is unchanged")
        if err is None:
            raise InvalidInputError(f"cannot write the export to {path}: {e.strerror or e}") from None
        raise err from None
    except BaseException:
        _unlink(tmp)
        raise
    return Exported(documents=n_docs, chunks=n_chunks, vectors=vectors, path=path)


def _unlink(p: str) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def read_header(path: str) -> dict[str, Any]:
    """The header line of an export file (checked)."""
    for line in _lines(path):
        return _header(path, line)
    raise InvalidInputError(f"{path} is empty: not a ragstore export")


def _header(path: str, line: str) -> dict[str, Any]:
    try:
        head = json.loads(line)
    except ValueError:
        head = None
    if not isinstance(head, dict) or head.get("format") != EXPORT_FORMAT:
        raise InvalidInputError(f"{path} is not a ragstore export (its first line is not a {EXPORT_FORMAT} "
                                "header); write one with `ragstore export`")
    return head


def _lines(path: str) -> Iterator[str]:
    opener: Callable[..., IO[str]] = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            yield from f
    except FileNotFoundError:
        raise NotFoundError(f"no export file {path}: check the path") from None
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise InvalidInputError(f"cannot read the export {path}: {e}") from None


def vectors_fit(head: dict[str, Any], config: StoreConfig) -> str | None:
    """Why the exported vectors cannot go into a store of ``config`` as they are, or None."""
    for key, have in (("embedder_fingerprint", config.embedder_fingerprint), ("dim", config.dim),
                      ("tokenizer_hash", config.tokenizer_hash), ("chunk_tokens", config.chunk_tokens)):
        if head.get(key) != have:
            return (f"its vectors were made with {key} {head.get(key)!r}, the store has {have!r}; import without "
                    "vectors (they are embedded again) or into a store made like the exported one")
    return None


def read_export(path: str, config: StoreConfig, *, vectors: bool | None = None) -> Iterator[Doc]:
    """The documents of an export, checked against the target's ``config`` before the first is read.

    ``vectors``: None uses the file's vectors when it has them; False embeds
    the texts again; True requires them.
    """
    path = os.fspath(path)
    head = read_header(path)  # (refused before anything is written)
    has = bool(head.get("vectors"))
    use = has if vectors is None else vectors
    if use and not has:
        raise InvalidInputError(f"{path} holds no vectors (exported without --vectors); import it without them")
    if use:
        why = vectors_fit(head, config)
        if why is not None:
            raise InvalidInputError(f"cannot import {path} with its vectors: {why}; nothing was written")
    for _ in _docs(path, use):  # the whole file checked first: a bad line writes nothing
        pass
    return _docs(path, use)


def unless_unchanged(records: Records, docs: Iterator[Doc]) -> Iterator[Doc]:
    """``docs``, without the vectors of those stored unchanged (so ``add_many`` skips them:
    given vectors would make it replace them; a rerun of an import resumes it)."""
    from .inputs import content_hash

    for d in docs:
        if d.vectors is not None and isinstance(d.id, str) and d.id and isinstance(d.text, str):
            try:
                with records.read() as txn:
                    old = records.get_doc(txn, d.id)
                h = content_hash(d.text, d.source or "", dict(d.meta or {}))
            except (RagstoreError, TypeError, ValueError):
                old = None  # (a bad id or metadata: add_many says what is wrong with it)
            if old is not None and old.content_hash == h:
                d = Doc(d.id, d.text, d.source, d.meta)
        yield d


def _docs(path: str, use_vectors: bool) -> Iterator[Doc]:
    lines = _lines(path)
    next(lines, None)  # the header
    for n, line in enumerate(lines, 2):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except ValueError as e:
            raise InvalidInputError(f"{path} line {n}: not JSON ({e}); nothing was imported") from None
        if not isinstance(d, dict) or "id" not in d or "text" not in d:
            raise InvalidInputError(f"{path} line {n}: not a document (an object with id and text); "
                                    "nothing was imported")
        vecs = None
        if use_vectors:
            try:
                vecs = np.asarray(d.get("vectors"), dtype=np.float32)
            except (TypeError, ValueError):
                vecs = None
            if vecs is None or vecs.ndim != 2 or not np.isfinite(vecs).all():
                raise InvalidInputError(f"{path} line {n}: its vectors are missing or not a matrix of finite "
                                        "numbers; nothing was imported (import with vectors=False to embed)")
        yield Doc(d["id"], d["text"], d.get("source"), d.get("meta"), vecs)


# ---------------------------------------------------------------------- backup
def backup(records: Records, index_dir: str, dest: str) -> BackupResult:
    """A consistent, openable copy of the store in the new folder ``dest``."""
    dest = os.path.abspath(os.fspath(dest))
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        raise InvalidInputError(f"{dest} exists and is not an empty folder; back up into a new folder "
                                "(nothing was written)")
    try:
        os.makedirs(dest, exist_ok=True)
        index_included = _copy_index(index_dir, os.path.join(dest, "index"))
        # after the index: the records copied are at least as new as the checkpoint
        with records.read() as txn:
            records.env.copy(dest, compact=True, txn=txn)
            docs = records.counts(txn).documents
    except (OSError, lmdb.Error) as e:
        shutil.rmtree(dest, ignore_errors=True)
        err = storage_error(e, dest, "writing the backup", lost="the store is unchanged; no backup was made")
        if err is None:
            raise RagstoreError(f"the backup to {dest} failed ({e}); the store is unchanged") from None
        raise err from None
    size = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(dest) for f in files)
    return BackupResult(path=dest, documents=docs, bytes=size, index_included=index_included)


def _copy_index(src: str, dst: str) -> bool:
    """The index's last checkpoint copied; False (the copy rebuilds it on open) if none could be."""
    for _ in range(5):  # a checkpoint saved meanwhile removes the files of the previous one: try again
        try:
            with open(os.path.join(src, MANIFEST), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return False
        manifest = _parse_manifest(raw)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), dict):
            return False
        os.makedirs(dst, exist_ok=True)
        try:
            for fname in manifest["shards"].values():
                shutil.copyfile(os.path.join(src, fname), os.path.join(dst, fname))
        except FileNotFoundError:
            shutil.rmtree(dst, ignore_errors=True)
            continue
        with open(os.path.join(dst, MANIFEST), "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        return True
    shutil.rmtree(dst, ignore_errors=True)
    return False


# ---------------------------------------------------------------------- migration
def copy_docs(records: Records, *, page: int = 256) -> Iterator[Doc]:
    """Every document's id, text, source and metadata (no vectors), a page per read transaction."""
    after: bytes | None = None
    while True:
        out: list[Doc] = []
        last = after
        with records.read() as txn:
            cur = txn.cursor(db=records.docs)
            positioned = cur.first() if after is None else cur.set_range(after)
            while positioned and len(out) < page:
                k = bytes(cur.key())
                if k != after:
                    doc_id = key_str(k)
                    doc = DocRecord.decode(cur.value())
                    out.append(Doc(doc_id, doc_text(records, txn, doc_id, doc), doc.source or None, doc.meta))
                    last = k
                positioned = cur.next()
            if not out:
                return
            after = last
        yield from out
