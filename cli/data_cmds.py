"""The everyday data commands: ``list``, ``get``, ``chunks``, ``set-meta``, ``export``, ``import``,
``backup`` and ``reembed``: each one library call, then its output as text or JSON."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

import ragstore
from ragstore.embedders.loading import load_embedder
from ragstore.engine.transfer import read_header
from ragstore.errors import InvalidInputError
from ragstore.types import IngestProgress

from .options import EMBEDDER_OPT, JSON_OPT, STORE_ARG, stderr, stdout
from .output import human_bytes, print_json, print_rows

__all__ = ["list_docs", "get_doc", "chunks", "set_meta", "export", "import_", "backup", "reembed"]


def _open_existing(store: Path, *, readonly: bool, embedder: str | None = None) -> ragstore.Store:
    return ragstore.open(store, create=False, readonly=readonly, embedder=load_embedder(embedder))


# ---------------------------------------------------------------------- arguments and options
DOC_ID_ARG = typer.Argument(..., metavar="DOC_ID", help="The document's id.", show_default=False)
SOURCE_FILTER_OPT = typer.Option(
    None, "--source", "-s", metavar="NAME",
    help="Only documents of this source ('' for those without one).", show_default=False,
)
LIMIT_OPT = typer.Option(100, "--limit", min=1, max=10_000, metavar="N", help="Documents per page.")
AFTER_OPT = typer.Option(
    None, "--after", metavar="CURSOR",
    help="Start after this document id: the next_cursor printed by the previous page.", show_default=False,
)
VECTORS_OPT = typer.Option(False, "--vectors", help="Include the stored vectors of the chunks.")
META_ARG = typer.Argument(..., metavar="META_JSON", help="The new metadata, a JSON object.", show_default=False)
MERGE_OPT = typer.Option(False, "--merge", help="Update these keys, keeping the others (default: replace all).")
OUT_ARG = typer.Argument(..., metavar="FILE", help="The JSONL file to write (.gz: gzipped).", show_default=False)
IN_ARG = typer.Argument(..., metavar="FILE", help="A file written by `ragstore export`.", show_default=False)
IMPORT_VECTORS_OPT = typer.Option(
    None, "--vectors/--no-vectors",
    help="Use the file's vectors (nothing re-embedded; the store must embed and chunk as the exported one "
    "did) or embed the texts again. Default: the file's vectors when it has them.", show_default=False,
)
DEST_ARG = typer.Argument(..., metavar="DEST", help="A new (or empty) folder for the backup.", show_default=False)
TARGET_ARG = typer.Argument(..., metavar="TARGET", help="The store to write (created if new).", show_default=False)
CHUNK_TOKENS_OPT = typer.Option(
    None, "--chunk-tokens", min=1, metavar="N", help="Tokens per chunk of a new store.", show_default=False,
)
BATCH_OPT = typer.Option(256, "--batch", min=1, metavar="N", help="Chunks embedded and committed together.")


# ---------------------------------------------------------------------- reads
def list_docs(
    store: Path = STORE_ARG,
    source: str | None = SOURCE_FILTER_OPT,
    limit: int = LIMIT_OPT,
    after: str | None = AFTER_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """List documents: id, source, chunks and metadata, a page at a time.

    Documents come in id order; when more remain, the last line says the
    --after CURSOR that prints the next page. The store is opened read-only.
    """
    with _open_existing(store, readonly=True) as st:
        page = st.list_documents(source=source, after=after, limit=limit)
    if as_json:
        print_json(page.to_dict())
        return
    console = stdout()
    for d in page.documents:
        line = Text(d.id, style="bold") + Text(f"  [{d.source or ''}]  {d.n_chunks} chunks")
        if d.meta:
            line += Text("  " + json.dumps(d.meta, ensure_ascii=False, default=str), style="dim")
        console.print(line, soft_wrap=True)
    if page.next_cursor is not None:
        console.print(f"more: --after {page.next_cursor}", soft_wrap=True)


def get_doc(store: Path = STORE_ARG, doc_id: str = DOC_ID_ARG, as_json: bool = JSON_OPT) -> None:
    """Print one document: its text, rebuilt exactly, after its id, source and metadata."""
    with _open_existing(store, readonly=True) as st:
        d = st.get(doc_id)
    if as_json:
        print_json({"id": d.id, "source": d.source, "meta": d.meta, "text": d.text, "n_chunks": d.n_chunks,
                    "n_tokens": d.n_tokens, "content_hash": d.content_hash})
        return
    print_rows([("id", d.id), ("source", d.source or "-"), ("chunks", str(d.n_chunks)),
                ("meta", json.dumps(d.meta, ensure_ascii=False, default=str))])
    typer.echo()
    typer.echo(d.text)


def chunks(
    store: Path = STORE_ARG,
    doc_id: str | None = typer.Argument(None, metavar="DOC_ID", help="Only this document's chunks (default: "
                                        "every chunk of the store).", show_default=False),
    vectors: bool = VECTORS_OPT,
) -> None:
    """Print chunks as JSON lines (chunk_id, doc_id, source, position, text, offsets; optionally vector).

    One line per chunk, in chunk order: a document's, or the whole store's.
    """
    with _open_existing(store, readonly=True) as st:
        for c in st.iter_chunks(doc_id, vectors=vectors):
            sys.stdout.write(json.dumps(c.to_dict(), ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------- writes
def set_meta(
    store: Path = STORE_ARG,
    doc_id: str = DOC_ID_ARG,
    meta: str = META_ARG,
    merge: bool = MERGE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Set a document's metadata without re-embedding it.

    Replaces the metadata with META_JSON (with --merge: updates those keys).
    One transaction; the chunks, vectors and indexes are untouched.
    """
    try:
        value = json.loads(meta)
    except ValueError as e:
        raise InvalidInputError(f"META_JSON is not JSON ({e}); give an object such as '{{\"year\": 2024}}'") from None
    if not isinstance(value, dict):
        raise InvalidInputError(f"META_JSON must be a JSON object, got {type(value).__name__}; nothing was changed")
    with _open_existing(store, readonly=False) as st:
        info = st.update_meta(doc_id, value, merge=merge)
    if as_json:
        print_json(info.to_dict())
        return
    typer.echo(f"updated {info.id}: {json.dumps(info.meta, ensure_ascii=False, default=str)}")


def export(
    store: Path = STORE_ARG,
    file: Path = OUT_ARG,
    vectors: bool = VECTORS_OPT,
    source: str | None = SOURCE_FILTER_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Export the documents to JSONL: id, text, source, meta (and, with --vectors, vectors).

    A consistent snapshot, also while another process writes. The first line
    is a header saying what made the vectors; `ragstore import` reads it.
    """
    with _open_existing(store, readonly=True) as st:
        r = st.export_jsonl(file, vectors=vectors, source=source)
    if as_json:
        print_json({"documents": r.documents, "chunks": r.chunks, "vectors": r.vectors, "path": r.path})
        return
    typer.echo(f"exported {r.documents} documents ({r.chunks} chunks{', with vectors' if r.vectors else ''}) "
               f"to {r.path}")


def import_(
    store: Path = STORE_ARG,
    file: Path = IN_ARG,
    vectors: bool | None = IMPORT_VECTORS_OPT,
    embedder: str | None = EMBEDDER_OPT,
    chunk_tokens: int | None = CHUNK_TOKENS_OPT,
    batch: int = BATCH_OPT,
) -> None:
    """Import a `ragstore export` file into a store, creating it if needed.

    The whole file is checked before anything is written. With its vectors
    nothing is re-embedded. A new store is made with the exported store's
    chunk size unless --chunk-tokens says otherwise. Documents already stored
    unchanged are skipped, so an interrupted import resumes when run again.
    """
    if chunk_tokens is None and not (store / "data.mdb").exists():
        chunk_tokens = read_header(str(file)).get("chunk_tokens")
    with ragstore.open(store, create=True, embedder=load_embedder(embedder), chunk_tokens=chunk_tokens) as st:
        summary = st.import_jsonl(file, vectors=vectors, batch_size=batch)
    typer.echo(str(summary))


def backup(store: Path = STORE_ARG, dest: Path = DEST_ARG, as_json: bool = JSON_OPT) -> None:
    """Copy a store consistently, also while another process writes to it.

    The copy (LMDB's compacting copy from one read transaction, with the
    index's last checkpoint) opens as a store: restore by using DEST.
    """
    with _open_existing(store, readonly=True) as st:
        r = st.backup(dest)
    if as_json:
        print_json({"path": r.path, "documents": r.documents, "bytes": r.bytes, "index_included": r.index_included})
        return
    index = "with the index" if r.index_included else "the index is rebuilt from the records when it is opened"
    typer.echo(f"backed up {r.documents} documents to {r.path} ({human_bytes(r.bytes)}; {index})")


def reembed(
    store: Path = STORE_ARG,
    target: Path = TARGET_ARG,
    embedder: str | None = EMBEDDER_OPT,
    chunk_tokens: int | None = CHUNK_TOKENS_OPT,
    batch: int = BATCH_OPT,
) -> None:
    """Re-embed every document of STORE into TARGET with another embedder (a migration).

    --embedder and --chunk-tokens are those of TARGET. Resumable: run it
    again after an interrupt and the documents already in TARGET are skipped.
    Progress is shown on standard error when it is a terminal.
    """
    view = _Progress()
    with _open_existing(store, readonly=True) as st:
        view.total = len(st)
        with view:
            summary = st.reembed(target, embedder=load_embedder(embedder), chunk_tokens=chunk_tokens,
                                 batch_size=batch, on_progress=view.update)
    typer.echo(str(summary))


class _Progress:
    """A rich progress bar of documents on stderr, or nothing when stderr is not a terminal."""

    def __init__(self) -> None:
        self.console = stderr()
        self.total: int | None = None
        self._bar: Any = None
        self._task: Any = None
        self.t0 = time.perf_counter()

    def __enter__(self) -> _Progress:
        if self.console.is_terminal:
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("re-embedding"), BarColumn(), TaskProgressColumn(),
                                 TextColumn("{task.completed} docs"), TimeRemainingColumn(), console=self.console)
            self._task = self._bar.add_task("reembed", total=self.total)
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, p: IngestProgress) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=p.documents)
