"""``query``, ``delete``, ``stats``, ``info``, ``check`` and ``compact``: each one
library call on an existing store, then its output as text or JSON."""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

import ragstore
from ragstore.config import QueryOptions
from ragstore.embedders.loading import load_embedder

from .options import (
    EMBEDDER_OPT,
    EXACT_OPT,
    EXCLUDE_DOCS_OPT,
    EXIT_USER,
    EXPANSION_OPT,
    FUSION_DEPTH_OPT,
    FUSION_OPT,
    JSON_OPT,
    K_OPT,
    MIN_SCORE_OPT,
    MODE_OPT,
    OVERSAMPLE_OPT,
    RERANK_OPT,
    SOURCES_OPT,
    STORE_ARG,
    stdout,
)
from .output import human_bytes, plural, print_hits, print_json, print_rows
from .readers import InputError

__all__ = ["query", "delete", "stats", "info", "check", "compact", "index_lexical", "query_options", "read_queries"]


def _open_existing(store: Path, *, readonly: bool, embedder: str | None = None) -> ragstore.Store:
    # create=False: a mistyped path is an error, never a new empty store; the embedder
    # spec goes through the one loader the servers use (module:attr imports included)
    return ragstore.open(store, create=False, readonly=readonly, embedder=load_embedder(embedder))


# ---------------------------------------------------------------------- arguments and options
# (those of one command only; the shared ones are in .options)
TEXT_ARG = typer.Argument(
    None, metavar="TEXT", help="The query text (leave out when using --file).", show_default=False,
)
FILE_OPT = typer.Option(
    None, "--file", "-f", metavar="FILE", help="Run one query per non-blank line of this file (- for standard "
    "input), in one batch.", show_default=False,
)
DOC_IDS_ARG = typer.Argument(..., metavar="DOC_ID", help="Ids of the documents to delete.", show_default=False)
MISSING_OK_OPT = typer.Option(
    False, "--missing-ok", help="Ignore ids that are not in the store (default: error, nothing deleted).",
)
FIX_OPT = typer.Option(
    False, "--fix", help="Rebuild what is derived (the index, the counters) when it disagrees with the records.",
)


# ---------------------------------------------------------------------- query
def query_options(**given: Any) -> QueryOptions:
    """QueryOptions from the command's values; a repeatable option given no times means None."""
    values: dict[str, Any] = {k: (None if v == [] else v) for k, v in given.items()}
    return QueryOptions(**values)


def read_queries(file: str) -> list[str]:
    """The non-blank lines of ``file`` (``-``: standard input), stripped."""
    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as e:
        raise InputError(f"{file}: cannot read queries: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{file}: not valid UTF-8 (byte {e.start})") from None
    queries = [q.strip() for q in text.splitlines() if q.strip()]
    if not queries:
        raise InputError(f"{file}: no queries (one query per non-blank line)")
    return queries


def query(
    store: Path = STORE_ARG,
    text: str | None = TEXT_ARG,
    k: int = K_OPT,
    sources: list[str] | None = SOURCES_OPT,
    exclude_docs: list[str] | None = EXCLUDE_DOCS_OPT,
    as_json: bool = JSON_OPT,
    file: str | None = FILE_OPT,
    exact: bool = EXACT_OPT,
    rerank: bool | None = RERANK_OPT,
    expansion: int | None = EXPANSION_OPT,
    oversample: int | None = OVERSAMPLE_OPT,
    mode: str = MODE_OPT,
    fusion: str = FUSION_OPT,
    fusion_depth: int | None = FUSION_DEPTH_OPT,
    min_score: float | None = MIN_SCORE_OPT,
    embedder: str | None = EMBEDDER_OPT,
) -> None:
    """Find the chunks nearest to a text.

    Each hit is a chunk with its score, document, source and its continuation
    (the next chunk of the same document). The store is opened read-only.
    """
    if (text is None) == (file is None):
        raise typer.BadParameter("give either a query TEXT or --file, not both or neither",
                                 param_hint="TEXT / --file")
    queries = [text] if text is not None else read_queries(file)  # type: ignore[arg-type]
    opts = query_options(k=k, sources=sources, exclude_docs=exclude_docs, rerank=rerank, exact=exact,
                         expansion=expansion, oversample=oversample, mode=mode, fusion=fusion,
                         fusion_depth=fusion_depth, min_score=min_score)
    with _open_existing(store, readonly=True, embedder=embedder) as st:
        # one query is a batch of one: the same call, the same checks
        results = st.query_many(queries, **{name: getattr(opts, name) for name in QueryOptions.names()})
    if as_json:
        if file is None:
            print_json({"query": queries[0], "k": k, "hits": [h.to_dict() for h in results[0]]})
        else:
            print_json({"k": k, "results": [{"query": q, "hits": [h.to_dict() for h in hs]}
                                            for q, hs in zip(queries, results, strict=True)]})
        return
    console = stdout()
    width = console.width if console.is_terminal else None
    for i, (q, hits) in enumerate(zip(queries, results, strict=True), 1):
        if file is not None:
            console.print(Text(f"query {i}: ", style="bold underline") + Text(q, style="bold"))
            console.print()
        print_hits(console, hits, width)


# ---------------------------------------------------------------------- delete
def delete(
    store: Path = STORE_ARG,
    doc_ids: list[str] = DOC_IDS_ARG,
    missing_ok: bool = MISSING_OK_OPT,
) -> None:
    """Delete documents by id.

    All the documents are deleted in one transaction with their chunks and
    vectors; a missing id is an error and deletes nothing, unless --missing-ok.
    Disk space is reused by later writes; `ragstore compact` gives it back.
    """
    with _open_existing(store, readonly=False) as st:
        # delete_many counts chunks; the documents present are counted for the message
        present = sum(1 for d in dict.fromkeys(doc_ids) if d in st)
        removed = st.delete_many(doc_ids, missing_ok=missing_ok)
    typer.echo(f"deleted {plural(present, 'document')} ({removed} chunks)")


# ---------------------------------------------------------------------- stats / info / check / compact
def stats(store: Path = STORE_ARG, as_json: bool = JSON_OPT) -> None:
    """Show counts and sizes of a store.

    Documents, chunks, tokens, chunks per source, bytes on disk, vectors in the
    index, deleted chunks not yet compacted and chunks not yet indexed.
    """
    with _open_existing(store, readonly=True) as st:
        s = st.stats()
    if as_json:
        print_json(s.to_dict())
        return
    sources = ", ".join(f"{name or '(none)'}: {n}" for name, n in sorted(s.sources.items())) or "-"
    print_rows([
        ("documents", f"{s.documents}"),
        ("chunks", f"{s.chunks}"),
        ("tokens", f"{s.tokens}"),
        ("chunks per source", sources),
        ("on disk", f"{human_bytes(s.bytes_on_disk)} (LMDB {human_bytes(s.lmdb_bytes)}, "
                    f"index {human_bytes(s.index_bytes)})"),
        ("index vectors", f"{s.index_vectors}"),
        ("deleted, not compacted", f"{s.deleted_not_compacted}"),
        ("unindexed", f"{s.unindexed}"),
    ])


def info(store: Path = STORE_ARG, as_json: bool = JSON_OPT) -> None:
    """Show a store's configuration.

    What was fixed at creation: embedder (name, dimension, fingerprint),
    tokenizer hash, chunk size, metric, index and vector dtypes, HNSW
    connectivity, schema version and creation time.
    """
    with _open_existing(store, readonly=True) as st:
        cfg = st.config
        path = st.path
    d = cfg.to_dict()
    if as_json:
        print_json({"path": path, **d})
        return
    created = _dt.datetime.fromtimestamp(cfg.created_at).astimezone().isoformat(timespec="seconds")
    print_rows([("path", str(path))] + [
        (k.replace("_", " "), created if k == "created_at" else str(v)) for k, v in d.items()
    ])


def check(
    store: Path = STORE_ARG,
    fix: bool = FIX_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Verify a store's consistency.

    Checks the records against each other and the vector index against the
    records. Exits 1 when a problem remains (with --fix, derived state is
    rebuilt first; damaged records are reported, never dropped).
    """
    with _open_existing(store, readonly=not fix) as st:
        r = st.check(fix=fix)
    if as_json:
        print_json({"ok": r.ok, "problems": r.problems, "fixed": r.fixed,
                    "documents": r.documents, "chunks": r.chunks})
    else:
        for p in r.problems:
            typer.echo(f"problem: {p}")
        if r.ok:
            typer.echo(f"{'fixed' if r.fixed else 'ok'}: {r.documents} documents, {r.chunks} chunks")
        else:
            hint = "" if fix else "; run with --fix to rebuild what is derived"
            typer.echo(f"NOT ok: {plural(len(r.problems), 'problem')}{hint}")
    if not r.ok:
        raise typer.Exit(EXIT_USER)


def compact(store: Path = STORE_ARG, as_json: bool = JSON_OPT) -> None:
    """Reclaim the space of deleted documents.

    Rebuilds the index without deleted chunks and rewrites the LMDB file
    compactly (only when no other process has the store open).
    """
    with _open_existing(store, readonly=False) as st:
        r = st.compact()
    if as_json:
        print_json({"bytes_before": r.bytes_before, "bytes_after": r.bytes_after,
                    "tombstones_removed": r.tombstones_removed, "lmdb_compacted": r.lmdb_compacted})
        return
    lmdb = "" if r.lmdb_compacted else " (LMDB file not rewritten: another process has the store open)"
    typer.echo(
        f"compacted: {human_bytes(r.bytes_before)} -> {human_bytes(r.bytes_after)}, "
        f"{r.tombstones_removed} deleted chunks removed{lmdb}"
    )


def index_lexical(store: Path = STORE_ARG, as_json: bool = JSON_OPT) -> None:
    """Build the BM25 lexical index of a store made without one.

    Stores made before ragstore had a lexical index (or with lexical=False)
    answer --mode lexical and hybrid queries only after this. Analyzes every
    chunk once, in one transaction: readers see no lexical index, then a whole
    one. Running it again rebuilds the index.
    """
    with _open_existing(store, readonly=False) as st:
        r = st.index_lexical()
    if as_json:
        print_json({"chunks": r.chunks, "postings": r.postings, "seconds": round(r.seconds, 3),
                    "lexical": r.config.lexical})
        return
    typer.echo(f"lexical index built: {r.chunks} chunks, {r.postings} postings in {r.seconds:.1f} s")
