"""``ragstore ingest``: the reader's documents into ``Store.add_many``, with a
progress bar, malformed inputs reported at their file and line, and a summary."""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

import ragstore
from ragstore.config import STORE_DEFAULTS
from ragstore.embedders.loading import load_embedder
from ragstore.files import stored_file_meta
from ragstore.types import Doc, IngestProgress, IngestSummary

from .options import EMBEDDER_OPT, EXIT_INTERRUPTED, EXIT_USER, STORE_ARG, error, stderr, warn
from .readers import Malformed, Reader

__all__ = ["ingest", "OnError"]


class OnError(enum.StrEnum):
    skip = "skip"
    stop = "stop"


class _Stop(Exception):
    """Raised from the malformed-input report to end the ingest there (--on-error stop).

    An Exception, not a BaseException: raised inside ``add_many`` (through
    ``on_invalid``) it makes the store commit the documents before it, as for
    any error there.
    """


class _ProgressView:
    """A rich progress bar on stderr, or nothing when stderr is not a terminal."""

    def __init__(self) -> None:
        self.console = stderr()
        self._progress: Any = None
        self._task: Any = None
        self._last = 0.0
        self.t0 = time.perf_counter()
        if self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                Progress,
                SpinnerColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("ingesting"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[docs]} docs · {task.fields[chunks]} chunks · {task.fields[rate]} chunks/s"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._task = self._progress.add_task("ingest", total=None, docs=0, chunks=0, rate="-")

    def set_total(self, total_bytes: int | None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, total=total_bytes)

    def __enter__(self) -> _ProgressView:
        self.t0 = time.perf_counter()
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, *, docs: int, chunks: int, bytes_done: int, force: bool = False) -> None:
        if self._progress is None:
            return
        now = time.perf_counter()
        if not force and now - self._last < 0.1:  # redrawing costs more than a document
            return
        self._last = now
        elapsed = now - self.t0
        rate = f"{chunks / elapsed:.0f}" if elapsed > 0 and chunks else "-"
        self._progress.update(self._task, completed=bytes_done, docs=docs, chunks=chunks, rate=rate)

    def message(self, text: Text) -> None:
        # through the progress bar's console, so the bar is redrawn below the message
        self.console.print(text)


def _with_unchanged_files(summary: IngestSummary, n: int) -> IngestSummary:
    """``summary`` counting the ``n`` files the reader skipped as unchanged."""
    return dataclasses.replace(summary, documents=summary.documents + n, unchanged=summary.unchanged + n)


def _summary_so_far(p: IngestProgress | None, t0: float) -> IngestSummary:
    """What was committed when add_many ended early (add_many returned nothing)."""
    if p is None:
        return IngestSummary(documents=0, added=0, replaced=0, unchanged=0, chunks=0, tokens=0,
                             seconds=time.perf_counter() - t0)
    return IngestSummary(documents=p.documents, added=p.added, replaced=p.replaced, unchanged=p.unchanged,
                         chunks=p.chunks, tokens=p.tokens, seconds=time.perf_counter() - t0, skipped=p.skipped)


# ---------------------------------------------------------------------- arguments and options
PATHS_ARG = typer.Argument(
    ..., metavar="PATH", help="Files (.txt, .md, .html, .pdf, .jsonl, .jsonl.gz), folders (searched "
    "recursively) or - for standard input. .html and .pdf need ragstore[files].", show_default=False,
)
SOURCE_OPT = typer.Option(
    None, "--source", "-s", metavar="NAME", help="Source name for documents that have none of their own "
    "(text files, JSONL lines without a 'source' field).", show_default=False,
)
CHUNK_TOKENS_OPT = typer.Option(
    None, "--chunk-tokens", min=1, metavar="N",
    help=f"Tokens per chunk for a new store (default {STORE_DEFAULTS['chunk_tokens']}). "
    "An existing store keeps its own; a different value is an error.", show_default=False,
)
BATCH_OPT = typer.Option(
    256, "--batch", min=1, metavar="N", help="Chunks embedded and committed together. Batches commit in "
    "order (one is embedded while the one before it commits); an interrupted run keeps every committed batch.",
)
LEXICAL_OPT = typer.Option(
    True, "--lexical/--no-lexical", help="For a new store: keep a BM25 lexical index beside the vectors "
    "(query --mode lexical / hybrid). --no-lexical makes the store without one: ingest does less work "
    "(measured 17-33% less with precomputed vectors) and each chunk takes ~460 fewer bytes; build it later "
    "with `ragstore index-lexical`. An existing store keeps what it has.",
)
ON_ERROR_OPT = typer.Option(
    OnError.skip, "--on-error", help="What to do with a malformed input (bad JSON, missing id or "
    "text, invalid UTF-8, a document the store refuses such as one with empty text): skip it and go on, "
    "or stop there (exit 1). Either way everything before it is kept.", case_sensitive=False,
)
LIMIT_OPT = typer.Option(
    None, "--limit", min=1, metavar="N", help="Read at most N documents in all (a quick slice of a large "
    "corpus); running again with a larger N adds the rest.", show_default=False,
)


def ingest(
    store: Path = STORE_ARG,
    paths: list[str] = PATHS_ARG,
    source: str | None = SOURCE_OPT,
    chunk_tokens: int | None = CHUNK_TOKENS_OPT,
    batch: int = BATCH_OPT,
    on_error: OnError = ON_ERROR_OPT,
    embedder: str | None = EMBEDDER_OPT,
    limit: int | None = LIMIT_OPT,
    lexical: bool = LEXICAL_OPT,
) -> None:
    """Add documents to a store, creating it if needed.

    Reads .txt/.md/.html/.pdf files (one document each: the main text of a
    web page, the text layer of a PDF; the file's path, size, mtime, type,
    sha256 and title in its metadata), .jsonl/.jsonl.gz files (one document
    per line: id, text, optional source, title, meta), folders (recursively)
    and - (standard input). Documents already in the store with the same id
    are replaced when their text, source or metadata changed and skipped when
    not (files whose size and mtime, or bytes, are those stored are not even
    read), so an interrupted ingest is resumed, and a changed folder brought
    up to date, by running the same command again.
    """
    stop = on_error == OnError.stop
    view = _ProgressView()

    def on_malformed(m: Malformed) -> None:
        view.message(Text(str(m.origin), style="bold") + Text(": ") + Text(m.message))
        if stop:
            raise _Stop()

    reader = Reader(paths, default_source=source, on_malformed=on_malformed)  # checks paths before the store
    view.set_total(reader.bytes_total)
    last: IngestProgress | None = None
    read = 0
    stopped = False
    t0 = time.perf_counter()

    def docs_in() -> Iterator[Doc]:
        nonlocal read, stopped
        try:
            for doc in reader:
                if limit is not None and read >= limit:
                    break
                read += 1
                view.update(docs=read, chunks=last.chunks if last else 0, bytes_done=reader.bytes_done)
                yield doc
        except _Stop:  # a malformed line with --on-error stop: the input ends before it
            stopped = True

    def on_progress(p: IngestProgress) -> None:
        nonlocal last
        last = p
        view.update(docs=read, chunks=p.chunks, bytes_done=reader.bytes_done, force=True)

    with ragstore.open(store, create=True, embedder=load_embedder(embedder), chunk_tokens=chunk_tokens,
                       lexical=None if lexical else False) as st:
        reader.previous = stored_file_meta(st, reader.file_ids())  # unchanged files are not read again
        try:
            with view:
                try:
                    summary = st.add_many(docs_in(), replace=True, batch_size=batch, on_progress=on_progress,
                                          on_invalid=reader.rejected)
                except _Stop:  # a document the store refused, with --on-error stop
                    stopped = True
                    summary = _summary_so_far(last, t0)
                summary = _with_unchanged_files(summary, reader.unchanged)
                view.update(docs=read, chunks=summary.chunks, bytes_done=reader.bytes_done, force=True)
        except KeyboardInterrupt:
            docs_done, chunks_done = (last.documents, last.chunks) if last is not None else (0, 0)
            stderr().print(
                Text("interrupted: ", style="bold yellow")
                + Text(
                    f"at least {docs_done} documents ({chunks_done} chunks) were committed to "
                    f"{st.path} before the interrupt and are kept; run the same command again to resume "
                    "(documents already stored unchanged are skipped)."
                )
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
    typer.echo(str(summary))
    if stopped:
        error(
            "stopped at the malformed input above (--on-error stop); the documents before it were "
            "committed. Fix the input and run the same command again."
        )
        raise typer.Exit(EXIT_USER)
    if reader.malformed:
        warn(f"{reader.malformed} malformed input{'s' if reader.malformed != 1 else ''} skipped (listed above)")
