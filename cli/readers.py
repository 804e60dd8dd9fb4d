"""Turn the paths given to ``ragstore ingest`` into documents.

Accepted inputs:

- ``.txt``, ``.md``, ``.html`` and ``.pdf`` files: one document each (the text
  extracted by :mod:`ragstore.files`, whose file metadata goes to ``meta``),
  id = the path relative to the directory argument it was found under
  (``/``-separated), or the file's name when the file itself was the argument.
  When :attr:`Reader.previous` holds a stored document's meta, a file it shows
  unchanged is not read (counted in :attr:`Reader.unchanged`);
- ``.jsonl`` and ``.jsonl.gz`` files: one document per line, an object with
  ``id`` and ``text`` and optional ``source``, ``title`` (stored as
  ``meta["title"]``) and ``meta`` (an object);
- directories: searched recursively for the kinds above (hidden files and
  folders are skipped), in sorted order;
- ``-``: standard input; JSON Lines when its first non-blank line starts with
  ``{``, otherwise one plain-text document with id ``stdin``.

The reader only parses: it reports what it alone can see (a path that cannot
be read, bad JSON, a line that is not an object or not UTF-8, a missing ``id``
or ``text`` field, a ``title`` that is not a string, an id seen earlier in the
same run) as :class:`Malformed`, with file and line number. Whether a
document's values are acceptable (empty text, an id too long, a bad source or
meta, lone surrogates...) is the engine's rule: ``Store.add_many(...,
on_invalid=reader.rejected)`` reports those, and :meth:`Reader.rejected` maps
the document's index back to the file and line it came from.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import zlib
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from ragstore.files import (
    FILE_TYPES,
    FileFormatError,
    MissingExtraError,
    Stored,
    file_doc,
    file_type,
    needs_extra,
)
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

TEXT_SUFFIXES = tuple(FILE_TYPES)  # read by ragstore.files
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
    return name.endswith(JSONL_SUFFIXES) or file_type(name) is not None


def _display(path: Path) -> str:
    return str(path)


def _decode_error_line(data: bytes, pos: int) -> int:
    return data.count(b"\n", 0, pos) + 1


class Reader:
    """Iterates the documents of a list of path arguments.

    ``on_malformed(Malformed)`` is called for each bad input; it may raise to
    stop reading. Duplicate ids within one run are malformed too (the first
    occurrence wins). The documents are numbered in the order they are yielded
    (0, 1, ...), the numbering ``Store.add_many`` uses: :meth:`origin` gives a
    document's file and line, and :meth:`rejected` is an ``on_invalid``
    callback reporting a document the store refused as malformed, at its
    origin. ``bytes_total`` / ``bytes_done`` measure progress through the
    input files (compressed bytes for ``.gz``); ``bytes_total`` is None when
    reading standard input.
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
        # doc id -> its stored source and meta, for files (set by the caller once the store is open)
        self.previous: dict[str, Stored] = {}
        self.unchanged = 0  # files skipped as unchanged since they were stored
        self.bytes_total: int | None = None
        if all(p is not None for p, _ in self.files):
            self.bytes_total = sum(p.stat().st_size for p, _ in self.files if p is not None)
        self._bytes_before = 0  # bytes of files finished
        self._current: Callable[[], int] = lambda: 0
        # The origin of every document yielded, by index: a file number and a line
        # (0: none) in two int arrays, 16 bytes a document rather than an object each.
        self._names: list[str] = []
        self._name_no: dict[str, int] = {}
        self._file_of = array("Q")
        self._line_of = array("Q")
        self._first: dict[str, int] = {}  # doc id -> index of its first occurrence
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
                        f"{arg}: unsupported file type; expected {', '.join(TEXT_SUFFIXES + JSONL_SUFFIXES)}"
                    )
                out.append((p, p.name))
            elif p.exists():
                raise InputError(f"{arg}: not a regular file or directory")
            else:
                raise InputError(f"{arg}: no such file or directory")
        try:  # a missing extra is said before anything is read
            for kind in sorted({file_type(p.name) or "" for p, _ in out if p is not None}):
                needs_extra(kind)
        except MissingExtraError as e:
            raise InputError(str(e)) from None
        return out

    def file_ids(self) -> list[str]:
        """The document ids of the files read by :mod:`ragstore.files` (for :attr:`previous`)."""
        return [doc_id for p, doc_id in self.files if p is not None and file_type(p.name) is not None]

    @property
    def bytes_done(self) -> int:
        return self._bytes_before + self._current()

    # ------------------------------------------------------------ origins
    def origin(self, index: int) -> Origin:
        """Where the ``index``-th document yielded came from."""
        line = self._line_of[index]
        return Origin(self._names[self._file_of[index]], line or None)

    def _record(self, origin: Origin) -> int:
        no = self._name_no.get(origin.file)
        if no is None:
            no = self._name_no[origin.file] = len(self._names)
            self._names.append(origin.file)
        self._file_of.append(no)
        self._line_of.append(origin.line or 0)
        return len(self._line_of) - 1

    def rejected(self, index: int, doc_id: str | None, error: Exception) -> None:
        """``on_invalid`` for ``Store.add_many``: the store refused document ``index``."""
        if doc_id is not None and self._first.get(doc_id) == index:
            # a refused document does not count as the first of its id
            del self._first[doc_id]
        self._bad(self.origin(index), str(error))

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
        # Values go to the store as they are (it judges them, see rejected()), except
        # that the JSONL format accepts integer ids and the --source default applies.
        if isinstance(doc_id, int) and not isinstance(doc_id, bool):
            doc_id = str(doc_id)
        if isinstance(doc_id, str):
            first = self._first.get(doc_id)
            if first is not None:
                self._bad(origin, f"duplicate id {doc_id!r} (first seen at {self.origin(first)}); skipped")
                return None
            self._first[doc_id] = len(self._line_of)
        self._record(origin)
        return Doc(id=doc_id, text=text, source=self.default_source if source is None else source, meta=meta)

    def _text_doc(self, origin_file: str, doc_id: str, data: bytes) -> Iterator[Doc]:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = _decode_error_line(data, e.start)
            self._bad(Origin(origin_file, line), f"not valid UTF-8 (byte {e.start})")
            return
        if text.startswith("\ufeff"):
            text = text[1:]
        doc = self._emit(Origin(origin_file), doc_id, text, None, None)
        if doc is not None:
            yield doc

    def _read_text_file(self, path: Path, doc_id: str) -> Iterator[Doc]:
        name = _display(path)
        try:
            doc = file_doc(path, doc_id, source=self.default_source, previous=self.previous.get(doc_id))
        except OSError as e:
            self._bad(Origin(name), f"cannot read: {e.strerror}")
            return
        except FileFormatError as e:
            self._bad(Origin(name, e.line), str(e))
            return
        if doc is None:
            self.unchanged += 1
            return
        emitted = self._emit(Origin(name), doc_id, doc.text, doc.source, doc.meta)
        if emitted is not None:
            yield emitted

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
                f = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb") if path.name.endswith(".gz") else raw)
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
            yield from self._text_doc(STDIN_NAME, STDIN_DOC_ID, data)
