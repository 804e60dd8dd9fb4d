"""How the commands print: JSON, aligned key/value rows, sizes and hits."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Sequence
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from ragstore.serving.jsonenc import dumps
from ragstore.types import Hit

__all__ = ["print_json", "print_rows", "human_bytes", "print_hits", "plural"]


def print_json(obj: Any) -> None:
    """``--json`` output: the encoding the HTTP and MCP doors use, indented for people.

    Always valid JSON: a store written before metadata was checked may hold NaN
    or infinity, which strict JSON refuses (``json`` would print ``NaN``, which no
    parser reads); such values are printed as null.
    """
    sys.stdout.write(dumps(obj, indent=2) + "\n")


def print_rows(rows: Sequence[tuple[str, str]]) -> None:
    w = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{w}}  {value}")


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def _wrap(text: str, width: int | None, indent: str = "    ") -> str:
    lines: list[str] = []
    for line in text.splitlines() or [""]:
        if width is None or not line.strip():
            lines.append(indent + line if line.strip() else "")
        else:
            lines.extend(textwrap.wrap(line, width=max(20, width - len(indent)), initial_indent=indent,
                                       subsequent_indent=indent, break_on_hyphens=False) or [""])
    return "\n".join(lines)


def print_hits(console: Console, hits: Sequence[Hit], width: int | None) -> None:
    """Rank, score, document, source and place, then the text and its continuation."""
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
