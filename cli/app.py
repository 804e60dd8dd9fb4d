"""The ``ragstore`` command line: a thin layer over the library, one command per method.

Exit codes: 0 success, 1 user error (bad input, missing store, ...), 2 usage
error, 3 internal error (traceback written to a log file), 130 interrupted.
"""

from __future__ import annotations

import datetime as _dt
import enum
import functools
import json
import sys
import tempfile
import textwrap
import time
import traceback
from pathlib import Path
from typing import Any, Callable, List, Optional, TypeVar

import typer
from rich.console import Console
from rich.text import Text

import ragstore
from ragstore.errors import RagstoreError
from ragstore.types import IngestProgress, IngestSummary

from .readers import InputError, Malformed, Reader
from .serve_cmds import register as _register_server_commands

__all__ = ["app", "main"]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_USER = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="ragstore",
    help="ragstore: an embedded on-disk datastore for retrieval-based language models.\n\n"
    "Documents are cut into fixed-size token chunks, embedded and stored; a query returns "
    "the nearest chunks with their continuations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# ---------------------------------------------------------------------- output helpers
def _stderr() -> Console:
    # looked up at call time: CliRunner swaps sys.stderr
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def _stdout() -> Console:
    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def _error(message: str) -> None:
    _stderr().print(Text("error: ", style="bold red") + Text(message))


def _warn(message: str) -> None:
    _stderr().print(Text("warning: ", style="yellow") + Text(message))


def _json_default(o: Any) -> Any:
    if isinstance(o, (bytes, bytearray, memoryview)):
        return bytes(o).hex()
    if hasattr(o, "tolist"):  # numpy scalars and arrays
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def _command(*args: Any, **kwargs: Any) -> Callable[[F], F]:
    """``app.command`` that turns library errors into exit 1 and Ctrl-C into exit 130."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            try:
                return fn(*a, **k)
            except (RagstoreError, InputError) as e:
                _error(str(e))
                raise typer.Exit(EXIT_USER) from None
            except KeyboardInterrupt:
                _stderr().print("interrupted")
                raise typer.Exit(EXIT_INTERRUPTED) from None

        app.command(*args, **kwargs)(wrapper)
        return fn

    return decorate


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"ragstore {ragstore.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True,
        help="Print the ragstore version and exit.",
    ),
) -> None:
    """ragstore: an embedded on-disk datastore for retrieval-based language models."""


STORE_ARG = typer.Argument(..., metavar="STORE", help="Path of the store (a folder).", show_default=False)


def _open_existing(store: Path, *, readonly: bool) -> "ragstore.Store":
    return ragstore.open(store, create=False, readonly=readonly)


# ---------------------------------------------------------------------- ingest
class OnError(str, enum.Enum):
    skip = "skip"
    stop = "stop"


class _Stop(Exception):
    """Raised inside the reader to end the input at a malformed line (--on-error stop)."""


class _ProgressView:
    """A rich progress bar on stderr, or nothing when stderr is not a terminal."""

    def __init__(self, total_bytes: int | None) -> None:
        self.console = _stderr()
        self.enabled = self.console.is_terminal
        self._progress = None
        self._task = None
        self._last = 0.0
        self.t0 = time.perf_counter()
        if self.enabled:
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
            self._task = self._progress.add_task("ingest", total=total_bytes, docs=0, chunks=0, rate="-")

    def __enter__(self) -> "_ProgressView":
        self.t0 = time.perf_counter()
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, *, docs: int, chunks: int, bytes_done: int, force: bool = False) -> None:
        if self._progress is None:
            return
        now = time.perf_counter()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        elapsed = now - self.t0
        rate = f"{chunks / elapsed:.0f}" if elapsed > 0 and chunks else "-"
        self._progress.update(self._task, completed=bytes_done, docs=docs, chunks=chunks, rate=rate)

    def message(self, text: Text) -> None:
        self.console.print(text)


@_command("ingest")
def ingest(
    store: Path = STORE_ARG,
    paths: List[str] = typer.Argument(
        ..., metavar="PATH", help="Files (.txt, .md, .jsonl, .jsonl.gz), folders (searched recursively) or - for standard input.",
        show_default=False,
    ),
    source: Optional[str] = typer.Option(
        None, "--source", "-s", metavar="NAME", help="Source name for documents that have none of their own "
        "(text files, JSONL lines without a 'source' field).", show_default=False,
    ),
    chunk_tokens: Optional[int] = typer.Option(
        None, "--chunk-tokens", min=1, metavar="N", help="Tokens per chunk for a new store (default 64). "
        "An existing store keeps its own; a different value is an error.", show_default=False,
    ),
    batch: int = typer.Option(
        256, "--batch", min=1, metavar="N", help="Chunks embedded and committed together; each batch is durable "
        "before the next starts.",
    ),
    on_error: OnError = typer.Option(
        OnError.skip, "--on-error", help="What to do with a malformed input (bad JSON, missing id or "
        "text, empty text, invalid UTF-8): skip it and go on, or stop there (exit 1). "
        "Either way everything before it is kept.", case_sensitive=False,
    ),
    embedder: Optional[str] = typer.Option(
        None, "--embedder", metavar="SPEC", help="Embedder spec for a new store (default 'minilm'). An existing store "
        "keeps its own; a different one is an error.", show_default=False,
    ),
    limit: Optional[int] = typer.Option(
        None, "--limit", min=1, metavar="N", help="Read at most N documents in all (a quick slice of a large "
        "corpus); running again with a larger N adds the rest.", show_default=False,
    ),
) -> None:
    """Add documents to a store, creating it if needed.

    Reads .txt/.md files (one document each), .jsonl/.jsonl.gz files (one
    document per line: id, text, optional source, title, meta), folders
    (recursively) and - (standard input). Documents already in the store with the same id are replaced when their
    text, source or metadata changed and skipped when not, so an interrupted
    ingest is resumed by running the same command again.
    """
    progress_view: _ProgressView | None = None
    stop = on_error == OnError.stop

    def on_malformed(m: Malformed) -> None:
        msg = Text(str(m.origin), style="bold") + Text(": ") + Text(m.message)
        if progress_view is not None:
            progress_view.message(msg)
        else:
            _stderr().print(msg)
        if stop:
            raise _Stop()

    reader = Reader(paths, default_source=source, on_malformed=on_malformed)  # checks paths first
    state: dict[str, Any] = {"progress": None, "read": 0}
    t0 = time.perf_counter()
    progress_view = _ProgressView(reader.bytes_total)

    def committed_chunks() -> int:
        p = state["progress"]
        return p.chunks if p is not None else 0

    def docs_in():
        try:
            for doc in reader:
                if limit is not None and state["read"] >= limit:
                    break
                state["read"] += 1
                progress_view.update(docs=state["read"], chunks=committed_chunks(), bytes_done=reader.bytes_done)
                yield doc
        except _Stop:
            state["stopped"] = True

    def on_progress(p: IngestProgress) -> None:
        state["progress"] = p
        progress_view.update(docs=state["read"], chunks=p.chunks, bytes_done=reader.bytes_done, force=True)

    def on_invalid(_index: int, doc_id: str | None, error: Exception) -> None:
        # The reader checked the line's shape; the library found the document itself bad.
        origin = reader.origins.pop(doc_id, "?") if doc_id is not None else "?"
        reader.malformed += 1
        on_malformed(Malformed(origin, str(error)))

    stopped_on_error = False
    with ragstore.open(store, create=True, embedder=embedder, chunk_tokens=chunk_tokens) as st:
        try:
            with progress_view:
                try:
                    summary = st.add_many(
                        docs_in(), replace=True, batch_size=batch, on_progress=on_progress, on_invalid=on_invalid
                    )
                except _Stop:
                    stopped_on_error = True
                    p = state["progress"]
                    summary = IngestSummary(
                        documents=p.documents if p else 0, added=p.added if p else 0,
                        replaced=p.replaced if p else 0, unchanged=p.unchanged if p else 0,
                        chunks=p.chunks if p else 0, tokens=p.tokens if p else 0,
                        seconds=time.perf_counter() - t0, skipped=p.skipped if p else 0,
                    )
                progress_view.update(docs=state["read"], chunks=summary.chunks, bytes_done=reader.bytes_done, force=True)
        except KeyboardInterrupt:
            p = state["progress"]
            docs_done, chunks_done = (p.documents, p.chunks) if p is not None else (0, 0)
            _stderr().print(
                Text("interrupted: ", style="bold yellow")
                + Text(
                    f"at least {docs_done} documents ({chunks_done} chunks) were committed to "
                    f"{st.path} before the interrupt and are kept; run the same command again to resume "
                    "(documents already stored unchanged are skipped)."
                )
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
    stopped_on_error = stopped_on_error or state.get("stopped", False)
    typer.echo(str(summary))
    if stopped_on_error:
        _error(
            "stopped at the malformed input above (--on-error stop); the documents before it were "
            "committed. Fix the input and run the same command again."
        )
        raise typer.Exit(EXIT_USER)
    if reader.malformed:
        _warn(f"{reader.malformed} malformed input{'s' if reader.malformed != 1 else ''} skipped (listed above)")


# ---------------------------------------------------------------------- query
def _wrap(text: str, width: int | None, indent: str = "    ") -> str:
    lines = []
    for line in text.splitlines() or [""]:
        if width is None or not line.strip():
            lines.append(indent + line if line.strip() else "")
        else:
            lines.extend(textwrap.wrap(line, width=max(20, width - len(indent)), initial_indent=indent,
                                       subsequent_indent=indent, break_on_hyphens=False) or [""])
    return "\n".join(lines)


def _print_hits(console: Console, hits: list, width: int | None) -> None:
    if not hits:
        console.print(Text("no results", style="dim"))
        return
    for rank, h in enumerate(hits, 1):
        head = Text()
        head.append(f"{rank}. ", style="bold")
        head.append(f"{h.score:.4f}", style="cyan")
        head.append("  ")
        head.append(h.doc_id, style="bold")
        if h.source:
            head.append(f"  [{h.source}]", style="magenta")
        head.append(f"  chunk {h.position} (chars {h.start}-{h.end})", style="dim")
        console.print(head)
        console.print(Text(_wrap(h.text, width)))
        if h.continuation is not None:
            console.print(Text("  → continuation:", style="dim italic"))
            console.print(Text(_wrap(h.continuation, width), style="dim"))
        else:
            console.print(Text("  → (end of document)", style="dim italic"))
        console.print()


def _read_queries(file: str) -> list[str]:
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


@_command("query")
def query(
    store: Path = STORE_ARG,
    text: Optional[str] = typer.Argument(
        None, metavar="TEXT", help="The query text (leave out when using --file).", show_default=False,
    ),
    k: int = typer.Option(5, "-k", "--top-k", min=1, metavar="N", help="Number of hits per query."),
    sources: Optional[List[str]] = typer.Option(
        None, "--source", "-s", metavar="NAME", help="Search only this source (repeat for several).", show_default=False,
    ),
    exclude_docs: Optional[List[str]] = typer.Option(
        None, "--exclude-doc", metavar="DOC_ID", help="Never return chunks of this document (repeat for several).",
        show_default=False,
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of text."),
    file: Optional[str] = typer.Option(
        None, "--file", "-f", metavar="FILE", help="Run one query per non-blank line of this file (- for standard "
        "input), in one batch.", show_default=False,
    ),
    exact: bool = typer.Option(
        False, "--exact", help="Brute-force search over every stored vector (slow; exact ground truth).",
    ),
    no_rerank: bool = typer.Option(
        False, "--no-rerank", help="Skip re-scoring candidates with the exact vectors kept in LMDB "
        "(done by default when the index is quantized).",
    ),
) -> None:
    """Find the chunks nearest to a text.

    Each hit is a chunk with its score, document, source and its continuation
    (the next chunk of the same document). The store is opened read-only.
    """
    if (text is None) == (file is None):
        raise typer.BadParameter("give either a query TEXT or --file, not both or neither",
                                 param_hint="TEXT / --file")
    queries = [text] if text is not None else _read_queries(file)  # type: ignore[arg-type]
    kwargs: dict[str, Any] = dict(
        sources=sources or None, exclude_docs=exclude_docs or None, exact=exact,
        rerank=False if no_rerank else None,
    )
    with _open_existing(store, readonly=True) as st:
        if file is None:
            results = [st.query(queries[0], k, **kwargs)]
        else:
            results = st.query_many(queries, k, **kwargs)
    if as_json:
        if file is None:
            _print_json({"query": queries[0], "k": k, "hits": [h.to_dict() for h in results[0]]})
        else:
            _print_json({"k": k, "results": [{"query": q, "hits": [h.to_dict() for h in hs]}
                                             for q, hs in zip(queries, results)]})
        return
    console = _stdout()
    width = console.width if console.is_terminal else None
    for i, (q, hits) in enumerate(zip(queries, results), 1):
        if file is not None:
            console.print(Text(f"query {i}: ", style="bold underline") + Text(q, style="bold"))
            console.print()
        _print_hits(console, hits, width)


# ---------------------------------------------------------------------- delete
@_command("delete")
def delete(
    store: Path = STORE_ARG,
    doc_ids: List[str] = typer.Argument(..., metavar="DOC_ID", help="Ids of the documents to delete.", show_default=False),
    missing_ok: bool = typer.Option(
        False, "--missing-ok", help="Ignore ids that are not in the store (default: error, nothing deleted).",
    ),
) -> None:
    """Delete documents by id.

    All the documents are deleted in one transaction with their chunks and
    vectors; a missing id is an error and deletes nothing, unless --missing-ok.
    Disk space is reused by later writes; `ragstore compact` gives it back.
    """
    with _open_existing(store, readonly=False) as st:
        present = sum(1 for d in dict.fromkeys(doc_ids) if d in st)
        removed = st.delete_many(doc_ids, missing_ok=missing_ok)
    typer.echo(f"deleted {present} document{'s' if present != 1 else ''} ({removed} chunks)")


# ---------------------------------------------------------------------- stats / info / check / compact
@_command("stats")
def stats(
    store: Path = STORE_ARG,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Show counts and sizes of a store.

    Documents, chunks, tokens, chunks per source, bytes on disk, vectors in the
    index, deleted chunks not yet compacted and chunks not yet indexed.
    """
    with _open_existing(store, readonly=True) as st:
        s = st.stats()
    if as_json:
        _print_json(s.to_dict())
        return
    sources = ", ".join(f"{name or '(none)'}: {n}" for name, n in sorted(s.sources.items())) or "-"
    rows = [
        ("documents", f"{s.documents}"),
        ("chunks", f"{s.chunks}"),
        ("tokens", f"{s.tokens}"),
        ("chunks per source", sources),
        ("on disk", f"{_human_bytes(s.bytes_on_disk)} (LMDB {_human_bytes(s.lmdb_bytes)}, "
                    f"index {_human_bytes(s.index_bytes)})"),
        ("index vectors", f"{s.index_vectors}"),
        ("deleted, not compacted", f"{s.deleted_not_compacted}"),
        ("unindexed", f"{s.unindexed}"),
    ]
    _print_rows(rows)


def _print_rows(rows: list[tuple[str, str]]) -> None:
    w = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{w}}  {value}")


@_command("info")
def info(
    store: Path = STORE_ARG,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
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
        _print_json({"path": path, **d})
        return
    created = _dt.datetime.fromtimestamp(cfg.created_at).astimezone().isoformat(timespec="seconds")
    rows = [("path", path)] + [
        (k.replace("_", " "), created if k == "created_at" else str(v)) for k, v in d.items()
    ]
    _print_rows(rows)


@_command("check")
def check(
    store: Path = STORE_ARG,
    fix: bool = typer.Option(False, "--fix", help="Rebuild what is derived (the index, the counters) "
                             "when it disagrees with the records."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Verify a store's consistency.

    Checks the records against each other and the vector index against the
    records. Exits 1 when a problem remains (with --fix, derived state is
    rebuilt first; damaged records are reported, never dropped).
    """
    with _open_existing(store, readonly=not fix) as st:
        r = st.check(fix=fix)
    if as_json:
        _print_json({"ok": r.ok, "problems": r.problems, "fixed": r.fixed,
                     "documents": r.documents, "chunks": r.chunks})
    else:
        for p in r.problems:
            typer.echo(f"problem: {p}")
        if r.ok:
            what = "fixed" if r.fixed else "ok"
            typer.echo(f"{what}: {r.documents} documents, {r.chunks} chunks")
        else:
            hint = "" if fix else "; run with --fix to rebuild what is derived"
            typer.echo(f"NOT ok: {len(r.problems)} problem{'s' if len(r.problems) != 1 else ''}{hint}")
    if not r.ok:
        raise typer.Exit(EXIT_USER)


@_command("compact")
def compact(
    store: Path = STORE_ARG,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Reclaim the space of deleted documents.

    Rebuilds the index without deleted chunks and rewrites the LMDB file
    compactly (only when no other process has the store open).
    """
    with _open_existing(store, readonly=False) as st:
        r = st.compact()
    if as_json:
        _print_json({"bytes_before": r.bytes_before, "bytes_after": r.bytes_after,
                     "tombstones_removed": r.tombstones_removed, "lmdb_compacted": r.lmdb_compacted})
        return
    lmdb = "" if r.lmdb_compacted else " (LMDB file not rewritten: another process has the store open)"
    typer.echo(
        f"compacted: {_human_bytes(r.bytes_before)} -> {_human_bytes(r.bytes_after)}, "
        f"{r.tombstones_removed} deleted chunks removed{lmdb}"
    )


# ---------------------------------------------------------------------- entry point
def _crash_log(exc: BaseException) -> str:
    with tempfile.NamedTemporaryFile("w", prefix="ragstore-crash-", suffix=".log", delete=False,
                                     encoding="utf-8") as f:
        f.write(f"ragstore {getattr(ragstore, '__version__', '?')}, python {sys.version.split()[0]}\n")
        f.write(f"argv: {sys.argv!r}\n\n")
        f.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return f.name


# ``serve`` and ``mcp`` live in their own module: their packages are optional extras.
_register_server_commands(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; exits with the codes listed in the module docstring."""
    try:
        app(args=argv, prog_name="ragstore")
    except SystemExit:
        raise
    except RagstoreError as e:  # raised outside a command (callbacks); commands handle their own
        _error(str(e))
        sys.exit(EXIT_USER)
    except KeyboardInterrupt:
        _stderr().print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:
        try:
            where = _crash_log(e)
            tail = f"the traceback was written to {where}"
        except OSError:
            tail = "(could not write a log file)"
        sys.stderr.write(
            f"internal error: {type(e).__name__}: {e}\n"
            f"This is a bug in ragstore; please report it. {tail}\n"
        )
        sys.exit(EXIT_INTERNAL)
