"""The ``ragstore`` command line: a thin layer over the library, one command per method.

The commands live in :mod:`.ingest_cmd`, :mod:`.store_cmds`, :mod:`.data_cmds` and
:mod:`.serve_cmds`; what they share (exit codes, messages, the error guard,
options) in :mod:`.options`. This module assembles the app and is the entry point.

Exit codes: 0 success, 1 user error (bad input, missing store, ...), 2 usage
error, 3 internal error (traceback written to a log file), 130 interrupted.
"""

from __future__ import annotations

import sys
import tempfile
import traceback
import warnings

import typer

import ragstore
from ragstore.errors import RagstoreError

from .data_cmds import backup, chunks, export, get_doc, import_, list_docs, reembed, set_meta
from .ingest_cmd import ingest
from .options import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USER, error, guarded, stderr, warn
from .readers import InputError
from .serve_cmds import register as _register_server_commands
from .store_cmds import check, compact, delete, index_lexical, info, query, stats

__all__ = ["app", "main"]

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


# In this order in --help. InputError: an input path or query file that cannot be read.
for _name, _fn in (("ingest", ingest), ("query", query), ("delete", delete), ("stats", stats),
                   ("info", info), ("check", check), ("compact", compact), ("index-lexical", index_lexical),
                   ("list", list_docs), ("get", get_doc), ("chunks", chunks), ("set-meta", set_meta),
                   ("export", export), ("import", import_), ("backup", backup), ("reembed", reembed)):
    app.command(_name)(guarded(_fn, user_errors=(InputError,)))

# ``serve`` and ``mcp`` live in their own module: their packages are optional extras.
_register_server_commands(app)


def _crash_log(exc: BaseException) -> str:
    with tempfile.NamedTemporaryFile("w", prefix="ragstore-crash-", suffix=".log", delete=False,
                                     encoding="utf-8") as f:
        f.write(f"ragstore {getattr(ragstore, '__version__', '?')}, python {sys.version.split()[0]}\n")
        f.write(f"argv: {sys.argv!r}\n\n")
        f.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return f.name


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    # ragstore's warnings (a checkpoint that could not be saved, a damaged index rebuilt)
    # are messages for the user, said like the errors, without a source line
    if issubclass(category, UserWarning) and getattr(category, "__module__", "").startswith("ragstore"):
        warn(str(message))
    else:
        _python_show_warning(message, category, filename, lineno, file, line)  # type: ignore[arg-type]


_python_show_warning = warnings.showwarning


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; exits with the codes listed in the module docstring."""
    warnings.showwarning = _show_warning
    try:
        app(args=argv, prog_name="ragstore")
    except SystemExit:
        raise
    except RagstoreError as e:  # raised outside a command (callbacks); commands handle their own
        error(str(e))
        sys.exit(EXIT_USER)
    except KeyboardInterrupt:
        stderr().print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:
        # a bug: a short message for the user, the traceback in a file for the report
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
