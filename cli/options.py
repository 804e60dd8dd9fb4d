"""What every ragstore command shares: exit codes, messages, the error guard,
and the arguments and options that more than one command takes.

One definition each, sqlite-utils style: a command takes ``store: Path =
STORE_ARG`` or ``k: int = K_OPT`` instead of spelling the option out again, so
a name, a help text or a default is changed in one place. Typer copies these
objects when it builds a command, so sharing them between commands is safe.
The query options' defaults are :class:`ragstore.config.QueryOptions`'s and
the serving options' :class:`ragstore.serving.options.ServeOptions`'s; none
is repeated here.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from ragstore.config import QueryOptions
from ragstore.errors import RagstoreError
from ragstore.serving.options import ServeOptions

__all__ = [
    "EXIT_OK",
    "EXIT_USER",
    "EXIT_USAGE",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "stderr",
    "stdout",
    "error",
    "warn",
    "guarded",
    "STORE_ARG",
    "STORE_HELP",
    "EMBEDDER_HELP",
    "EMBEDDER_OPT",
    "JSON_OPT",
    "READ_ONLY_OPT",
    "LOCK_TIMEOUT_OPT",
    "K_OPT",
    "SOURCES_OPT",
    "EXCLUDE_DOCS_OPT",
    "RERANK_OPT",
    "EXACT_OPT",
    "EXPANSION_OPT",
    "OVERSAMPLE_OPT",
    "HOST_OPT",
    "PORT_OPT",
    "WORKERS_OPT",
    "TOKEN_OPT",
    "THREADS_OPT",
    "MAX_BODY_MB_OPT",
    "KEEP_ALIVE_OPT",
    "LOG_LEVEL_OPT",
    "ACCESS_LOG_OPT",
    "MODE_OPT",
    "FUSION_OPT",
    "FUSION_DEPTH_OPT",
]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_USER = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


# ---------------------------------------------------------------------- messages
def stderr() -> Console:
    # looked up at call time: CliRunner swaps sys.stderr
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def stdout() -> Console:
    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def error(message: str) -> None:
    stderr().print(Text("error: ", style="bold red") + Text(message))


def warn(message: str) -> None:
    stderr().print(Text("warning: ", style="yellow") + Text(message))


def guarded(fn: F, *, user_errors: tuple[type[BaseException], ...] = ()) -> F:
    """Library errors (and ``user_errors``) exit 1 with their message; Ctrl-C exits 130."""

    caught: tuple[type[BaseException], ...] = (RagstoreError, *user_errors)

    @functools.wraps(fn)
    def wrapper(*a: Any, **k: Any) -> Any:
        try:
            return fn(*a, **k)
        except caught as e:
            error(str(e))
            raise typer.Exit(EXIT_USER) from None
        except KeyboardInterrupt:
            stderr().print("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------------- every command
STORE_HELP = "Path of the store (a folder)."
STORE_ARG = typer.Argument(..., metavar="STORE", help=STORE_HELP, show_default=False)
JSON_OPT = typer.Option(False, "--json", help="Print JSON instead of text.")

# ---------------------------------------------------------------------- opening a store
EMBEDDER_HELP = (
    "Embedder to open the store with, for stores made with a custom one: a registered spec "
    "('minilm-int8', 'minilm', 'minilm-torch[:cuda]', 'sentence-transformers:NAME') or an import path "
    "'module:attr' naming an "
    "embedder object or a zero-argument callable returning one. Default: the store's own ('minilm-int8' for "
    "a new store); another one than the store's is an error. 'minilm-int8' (int8 weights on onnxruntime) "
    "embeds 2-2.5x faster than 'minilm' (the float32 numpy reference) on 2 cores with int8 units, with "
    "vectors within a cosine of ~0.997 of it and the same SQuAD retrieval quality within a point; "
    "'minilm-torch' runs the same weights on torch (a GPU when present; needs sentence-transformers). A "
    "store keeps the embedder it was made with."
)
EMBEDDER_OPT = typer.Option(None, "--embedder", metavar="SPEC", help=EMBEDDER_HELP, show_default=False)
READ_ONLY_OPT = typer.Option(False, "--read-only", help="Open the store read-only: writes are refused.")
LOCK_TIMEOUT_OPT = typer.Option(
    ServeOptions.lock_timeout, "--lock-timeout", min=0.0, metavar="SECONDS",
    help="Seconds a write waits for another process's writer lock.",
)

# ---------------------------------------------------------------------- query options
# One per field of QueryOptions; ``query_options()`` in store_cmds builds the object.
K_OPT = typer.Option(QueryOptions.k, "-k", "--top-k", min=1, metavar="N", help="Hits per query.")
SOURCES_OPT = typer.Option(
    QueryOptions.sources, "--source", "-s", metavar="NAME",
    help="Search only this source (repeat for several); an unknown source matches nothing.", show_default=False,
)
EXCLUDE_DOCS_OPT = typer.Option(
    QueryOptions.exclude_docs, "--exclude-doc", metavar="DOC_ID",
    help="Never return chunks of this document (repeat for several).", show_default=False,
)
RERANK_OPT = typer.Option(
    QueryOptions.rerank, "--rerank/--no-rerank",
    help="Re-score the index's candidates with the exact vectors kept in LMDB, or not. "
    "Default: on when the index is quantized (f16, i8), off for an f32 index.", show_default=False,
)
EXACT_OPT = typer.Option(
    QueryOptions.exact, "--exact", help="Brute-force search over every stored vector (slow; exact ground truth).",
)
EXPANSION_OPT = typer.Option(
    QueryOptions.expansion, "--expansion", min=1, metavar="N",
    help="HNSW search breadth (higher: better recall, slower). Default: the store's.", show_default=False,
)
OVERSAMPLE_OPT = typer.Option(
    QueryOptions.oversample, "--oversample", min=1, metavar="N",
    help="Candidates re-scored per hit. Default: 1 for an f16 index, 4 for i8.", show_default=False,
)
MIN_SCORE_OPT = typer.Option(
    QueryOptions.min_score, "--min-score", metavar="SCORE",
    help="Drop hits scoring below SCORE (so fewer than -k may come back). Default: keep all.", show_default=False,
)

# ---------------------------------------------------------------------- serving options
# One per field of ServeOptions that `ragstore serve` takes; serve_cmds builds the object.
HOST_OPT = typer.Option(ServeOptions.host, "--host", help="Address to bind (loopback by default).")
PORT_OPT = typer.Option(ServeOptions.port, "--port", min=0, max=65535, help="TCP port.")
WORKERS_OPT = typer.Option(
    ServeOptions.workers, "--workers", min=1,
    help="Worker processes. With more than one, each reads the store itself and writes go to one "
    "writer process over a private Unix socket.",
)
TOKEN_OPT = typer.Option(
    ServeOptions.token, "--token", envvar="RAGSTORE_TOKEN",
    help="Require 'Authorization: Bearer TOKEN' on every request but GET /health (or set $RAGSTORE_TOKEN).",
)
THREADS_OPT = typer.Option(
    ServeOptions.threads, "--threads", min=1, help="Reads served at once by each process (default: the number of CPUs)."
)
MAX_BODY_MB_OPT = typer.Option(
    ServeOptions.max_body_bytes / 1_000_000, "--max-body-mb", min=0.001,
    help="Largest request body, in MB (413 over it).",
)
KEEP_ALIVE_OPT = typer.Option(
    ServeOptions.keep_alive, "--keep-alive", min=1.0,
    help="Seconds an idle keep-alive connection stays open (longer than clients keep theirs).",
)
LOG_LEVEL_OPT = typer.Option(
    ServeOptions.log_level, "--log-level", help="uvicorn log level: critical, error, warning, info, debug."
)
ACCESS_LOG_OPT = typer.Option(ServeOptions.access_log, "--access-log/--no-access-log", help="Log every request.")
MODE_OPT = typer.Option(
    QueryOptions.mode, "--mode", metavar="MODE",
    help="dense (the vector index), lexical (BM25 over the lexical index) or hybrid (both, fused by "
    "reciprocal rank). See docs/hybrid.md.",
)
FUSION_OPT = typer.Option(QueryOptions.fusion, "--fusion", metavar="METHOD",
                          help="How --mode hybrid fuses its rankings: rrf (reciprocal-rank fusion).")
FUSION_DEPTH_OPT = typer.Option(
    QueryOptions.fusion_depth, "--fusion-depth", min=1, metavar="N",
    help="Hits taken from each ranking before --mode hybrid fuses them. Default: max(50, 4 * k).",
    show_default=False,
)
