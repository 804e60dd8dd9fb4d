"""Turn the paths given to ``ragstore ingest`` into documents.

Accepted inputs:

- ``.txt`` and ``.md`` files: one document each, id = the path relative to the
  directory argument it was found under (``/``-separated), or the file's name
  when the file itself was the argument;
- ``.jsonl`` and ``.jsonl.gz`` files: one document per line, an object with
  ``id`` and ``text`` and optional ``source``, ``title`` (stored as
  ``meta["title"]``) and ``meta`` (an object);
- directories: searched recursively for the four kinds above (hidden files and
  folders are skipped), in sorted order;
- ``-``: standard input; JSON Lines when its first non-blank line starts with
  ``{``, otherwise one plain-text document with id ``stdin``.

Every document is validated before it is handed to the store (id a non-empty
string, text not blank, valid UTF-8 and Unicode) so that a bad line never
reaches ``Store.add_many``; problems are reported as :class:`Malformed` with
file and line number instead.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from ragstore.types import Doc

__all__ = [
    "TEXT_SUFFIXES",
    "JSONL_SUFFIXES",
    "Malformed",
    "Origin",
    "InputError",
    "Reader",
    "is_supported",
]

TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
STDIN = "-"
STDIN_NAME = "<stdin>"
STDIN_DOC_ID = "stdin"


class InputError(Exception):
    """A path argument that cannot be read at all (missing, unsupported type)."""


@dataclass(frozen=True)
class Origin:
    """Where a document came from: a file and, for JSON Lines, a line number."""

    file: str
    line: int | None = None

    def __str__(self) -> str:
        return self.file if self.line is None else f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Malformed:
    """An input that was not turned into a document."""

    origin: Origin
    message: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.message}"


def is_supported(name: str) -> bool:
    return name.endswith(TEXT_SUFFIXES + JSONL_SUFFIXES)


def _display(path: Path) -> str:
    return str(path)


def _check_str(value: str) -> str | None:
    """None if ``value`` is encodable as UTF-8, else a message."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"unpaired surrogate at character {e.start}"
    return None


def _validate(doc_id: Any, text: Any, source: Any, meta: Any) -> str | None:
    """A message saying what is wrong with a document, or None."""
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        return f"'id' must be a string, got {type(doc_id).__name__}"
    doc_id = str(doc_id)
    if not doc_id.strip():
        return "'id' is empty"
    if (err := _check_str(doc_id)) is not None:
        return f"'id' is not valid Unicode ({err})"
    if not isinstance(text, str):
        return f"'text' must be a string, got {type(text).__name__}"
    if not text.strip():
        return "'text' is empty or only whitespace"
    if (err := _check_str(text)) is not None:
        return f"'text' is not valid Unicode ({err})"
    if source is not None:
        if not isinstance(source, str) or not source:
            return "'source' must be a non-empty string or null"
        if (err := _check_str(source)) is not None:
            return f"'source' is not valid Unicode ({err})"
    if meta is not None and not isinstance(meta, dict):
        return f"'meta' must be an object, got {type(meta).__name__}"
    return None


def _decode_error_line(data: bytes, pos: int) -> int:
    return data.count(b"\n", 0, pos) + 1


class Reader:
    """Iterates the documents of a list of path arguments.

    ``on_malformed(Malformed)`` is called for each bad input; it may raise to
    stop reading. Duplicate ids within one run are malformed too (the first
    occurrence wins). ``bytes_total`` / ``bytes_done`` measure progress through
    the input files (compressed bytes for ``.gz``); ``bytes_total`` is None
    when reading standard input.
    """

    def __init__(
        self,
        paths: list[str],
        *,
        default_source: str | None = None,
        on_malformed: Callable[[Malformed], None],
        stdin: IO[bytes] | None = None,
    ) -> None:
        self.default_source = default_source
        self.on_malformed = on_malformed
        self._stdin = stdin
        self.files: list[tuple[Path | None, str]] = self._expand(paths)
        self.bytes_total: int | None = None
        if all(p is not None for p, _ in self.files):
            self.bytes_total = sum(p.stat().st_size for p, _ in self.files if p is not None)
        self._bytes_before = 0  # bytes of files finished
        self._current: Callable[[], int] = lambda: 0
        self.origins: dict[str, Origin] = {}
        self.malformed = 0

    # ---------------------------------------------------------------- paths
    @staticmethod
    def _expand(paths: list[str]) -> list[tuple[Path | None, str]]:
        """(file path or None for stdin, default doc id for text files)."""
        out: list[tuple[Path | None, str]] = []
        if not paths:
            raise InputError("no input paths given")
        if paths.count(STDIN) > 1:
            raise InputError("'-' (standard input) can be given only once")
        for arg in paths:
            if arg == STDIN:
                out.append((None, STDIN_DOC_ID))
                continue
            p = Path(arg)
            if p.is_dir():
                found = []
                for root, dirs, files in os.walk(p):
                    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                    for name in sorted(files):
                        if name.startswith(".") or not is_supported(name):
                            continue
                        f = Path(root) / name
                        found.append((f, f.relative_to(p).as_posix()))
                out.extend(found)
            elif p.is_file():
                if not is_supported(p.name):
                    raise InputError(
                        f"{arg}: unsupported file type; expected .txt, .md, .jsonl or .jsonl.gz"
                    )
                out.append((p, p.name))
            elif p.exists():
                raise InputError(f"{arg}: not a regular file or directory")
            else:
                raise InputError(f"{arg}: no such file or directory")
        return out

    @property
    def bytes_done(self) -> int:
        return self._bytes_before + self._current()

    # ------------------------------------------------------------ documents
    def __iter__(self) -> Iterator[Doc]:
        for path, default_id in self.files:
            if path is None:
                yield from self._read_stdin()
            elif path.name.endswith(JSONL_SUFFIXES):
                yield from self._read_jsonl_file(path)
            else:
                yield from self._read_text_file(path, default_id)
            if path is not None:
                self._bytes_before += path.stat().st_size
            self._current = lambda: 0

    def _bad(self, origin: Origin, message: str) -> None:
        self.malformed += 1
        self.on_malformed(Malformed(origin, message))

    def _emit(self, origin: Origin, doc_id: Any, text: Any, source: Any, meta: Any) -> Doc | None:
        err = _validate(doc_id, text, source, meta)
        if err is not None:
            self._bad(origin, err)
            return None
        doc_id = str(doc_id)
        first = self.origins.get(doc_id)
        if first is not None:
            self._bad(origin, f"duplicate id {doc_id!r} (first seen at {first}); skipped")
            return None
        self.origins[doc_id] = origin
        return Doc(id=doc_id, text=text, source=source if source is not None else self.default_source,
                   meta=meta or None)

    def _text_doc(self, origin_file: str, doc_id: str, data: bytes) -> Iterator[Doc]:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = _decode_error_line(data, e.start)
            self._bad(Origin(origin_file, line), f"not valid UTF-8 (byte {e.start})")
            return
        if text.startswith("\ufeff"):
            text = text[1:]
        if not text.strip():
            self._bad(Origin(origin_file), "empty or only whitespace")
            return
        doc = self._emit(Origin(origin_file), doc_id, text, None, None)
        if doc is not None:
            yield doc

    def _read_text_file(self, path: Path, doc_id: str) -> Iterator[Doc]:
        try:
            data = path.read_bytes()
        except OSError as e:
            self._bad(Origin(_display(path)), f"cannot read: {e.strerror}")
            return
        self._current = lambda: len(data)
        yield from self._text_doc(_display(path), doc_id, data)

    def _read_jsonl_file(self, path: Path) -> Iterator[Doc]:
        name = _display(path)
        try:
            raw = open(path, "rb")
        except OSError as e:
            self._bad(Origin(name), f"cannot read: {e.strerror}")
            return
        size = path.stat().st_size
        try:
            with raw:
                self._current = raw.tell
                f: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if path.name.endswith(".gz") else raw
                yield from self._read_jsonl_lines(name, f)
        finally:
            self._current = lambda: size

    def _read_jsonl_lines(self, name: str, f: IO[bytes], first: bytes | None = None,
                          first_lineno: int = 1) -> Iterator[Doc]:
        lineno = first_lineno - 1

        def lines() -> Iterator[bytes]:
            if first is not None:
                yield first
            yield from f

        it = lines()
        while True:
            try:
                line = next(it)
            except StopIteration:
                return
            except (OSError, EOFError, zlib.error) as e:
                self._bad(Origin(name, lineno + 1), f"cannot read further ({e}); rest of file skipped")
                return
            lineno += 1
            doc = self._parse_line(Origin(name, lineno), line)
            if doc is not None:
                yield doc

    def _parse_line(self, origin: Origin, line: bytes) -> Doc | None:
        if not line.strip():
            return None  # blank lines are allowed
        try:
            s = line.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            self._bad(origin, f"not valid UTF-8 (byte {e.start} of the line)")
            return None
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as e:
            self._bad(origin, f"bad JSON: {e.msg} (column {e.colno})")
            return None
        if not isinstance(obj, dict):
            self._bad(origin, f"expected a JSON object, got {type(obj).__name__}")
            return None
        missing = [k for k in ("id", "text") if k not in obj]
        if missing:
            self._bad(origin, "missing " + " and ".join(repr(k) for k in missing))
            return None
        meta = obj.get("meta")
        title = obj.get("title")
        if title is not None:
            if not isinstance(title, str):
                self._bad(origin, f"'title' must be a string, got {type(title).__name__}")
                return None
            if meta is None or isinstance(meta, dict):
                meta = {**(meta or {}), "title": title}
        return self._emit(origin, obj["id"], obj["text"], obj.get("source"), meta)

    def _read_stdin(self) -> Iterator[Doc]:
        f = self._stdin if self._stdin is not None else sys.stdin.buffer
        lineno = 0
        first = b""
        for line in f:  # find the first non-blank line to sniff the format
            lineno += 1
            first += line
            if line.strip():
                break
        if first.lstrip().startswith(b"{"):
            # JSON Lines: re-parse what was read (blank lines skipped), then the rest
            head = first.splitlines(keepends=True)
            yield from self._read_jsonl_lines(STDIN_NAME, f, first=head[-1], first_lineno=lineno)
        else:
            data = first + f.read()
            if not data.strip():
                self._bad(Origin(STDIN_NAME), "standard input is empty")
                return
            yield from self._text_doc(STDIN_NAME, STDIN_DOC_ID, data)
