"""What every ragstore command shares: exit codes, messages, the error guard,
and the arguments and options that more than one command takes (one
definition each, sqlite-utils style: ``@store_argument`` and friends)."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from ragstore.errors import RagstoreError

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
]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_USER = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


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

    @functools.wraps(fn)
    def wrapper(*a: Any, **k: Any) -> Any:
        try:
            return fn(*a, **k)
        except (RagstoreError, *user_errors) as e:
            error(str(e))
            raise typer.Exit(EXIT_USER) from None
        except KeyboardInterrupt:
            stderr().print("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


STORE_HELP = "Path of the store (a folder)."
STORE_ARG = typer.Argument(..., metavar="STORE", help=STORE_HELP, show_default=False)
EMBEDDER_HELP = (
    "Embedder to open the store with, for stores made with a custom one: a registered spec "
    "('minilm', 'sentence-transformers:NAME') or an import path 'module:attr' naming an embedder "
    "object or a zero-argument callable returning one. Default: the store's own."
)
